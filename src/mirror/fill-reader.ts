import { Readable } from 'node:stream';
import { RegistryError } from '../oci/errors.js';
import type { ByteRange } from '../oci/range.js';

/** What a reader tails: a fill in this process, or one another process is writing. */
export interface Spool {
  /** Every byte is readable and was verified (committed, or relayed and verified). */
  readonly complete: boolean;
  /** Set once the transfer failed; readers are destroyed with it. */
  readonly error: Error | undefined;
  readonly writtenBytes: number;
  /** Bytes a reader may deliver now: all once complete, else all but the last. */
  readableBytes(): number;
  /** Resolves at the next write, completion or failure. */
  nextProgress(): Promise<void>;
  /** Reads from `position`; may return fewer bytes than asked, 0 when none is there yet. */
  readAt(buffer: Buffer, position: number): Promise<number>;
}

/** Whether the reader's bytes count as fetched for it (`upstream`) or saved (`cache`). */
export type FillSource = 'upstream' | 'cache';

/** The most one reader holds: a client that stops reading keeps its last chunk queued on its socket. */
const CHUNK_BYTES = 256 * 1024;

/**
 * Tails a fill's spool file from `range.start` to `range.end` (or the end of the blob):
 * delivers what is readable, then waits for the fill's next progress. Ends only once
 * the spool is complete; is destroyed with the fill's error if it fails. Nothing is
 * read ahead (high-water mark 0): the next chunk is read when the consumer asks, once
 * the socket took the last, so a slow client costs one chunk however far behind it is.
 */
export class FillReader extends Readable {
  readonly source: FillSource;
  #fill: Spool;
  #position: number;
  #end: number | undefined;
  #reading = false;
  #onBytes: (n: number) => void;
  #onClose: (reader: FillReader) => void;

  constructor(
    fill: Spool,
    range: ByteRange | undefined,
    source: FillSource,
    onBytes: (n: number) => void,
    onClose: (reader: FillReader) => void,
  ) {
    super({ highWaterMark: 0 });
    this.#fill = fill;
    this.source = source;
    this.#position = range?.start ?? 0;
    this.#end = range ? range.end + 1 : undefined;
    this.#onBytes = onBytes;
    this.#onClose = onClose;
  }

  /** The next byte this reader will read from the spool. */
  get position(): number {
    return this.#position;
  }

  override _read(): void {
    if (!this.#reading) void this.#readMore();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#onClose(this);
    callback(err);
  }

  async #readMore(): Promise<void> {
    this.#reading = true;
    try {
      while (!this.destroyed) {
        const fill = this.#fill;
        if (fill.error) {
          this.destroy(
            new RegistryError('UNAVAILABLE', `upstream transfer failed: ${fill.error?.message ?? 'unknown'}`, {
              statusCode: 502,
              cause: fill.error,
            }),
          );
          return;
        }
        const stop = this.#end ?? (fill.complete ? fill.writtenBytes : Number.POSITIVE_INFINITY);
        if (this.#position >= stop && fill.complete) {
          this.push(null);
          return;
        }
        const limit = Math.min(fill.readableBytes(), stop);
        if (this.#position < limit) {
          const buffer = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, limit - this.#position));
          const read = await fill.readAt(buffer, this.#position);
          if (this.destroyed) return;
          if (read === 0) {
            await fill.nextProgress();
            continue;
          }
          this.#position += read;
          this.#onBytes(read);
          if (!this.push(read === buffer.length ? buffer : buffer.subarray(0, read))) return;
        } else {
          await fill.nextProgress();
        }
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.#reading = false;
    }
  }
}
