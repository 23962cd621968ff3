import { Readable } from 'node:stream';
import { RegistryError } from '../oci/errors.js';
import type { ByteRange } from '../oci/range.js';
import { BLOCK_BYTES, type Block } from './shared-blocks.js';
import { createSignal } from './signal.js';

/** Why a wait for bytes ended: the block is readable, a flush of fewer bytes, or the source settled. */
export type Wake = 'batch' | 'flush' | 'end';

/** Bytes for a reader: a slice of a block readers share (held for it), or of the reader's own buffer. */
export interface Chunk {
  readonly bytes: Buffer;
  readonly block?: Block;
}

/** What a reader tails: a fill in this process, or one another process is writing. */
export interface Spool {
  /** Every byte is readable and was verified (committed, or relayed and verified). */
  readonly complete: boolean;
  /** Set once the transfer failed; readers are destroyed with it. */
  readonly error: Error | undefined;
  readonly writtenBytes: number;
  /** Bytes a reader may deliver now: all once complete, else all but the last. */
  readableBytes(): number;
  /** Resolves once `target` bytes are readable, the spool settled, or a flush finds a byte past `position`. */
  waitForBytes(position: number, target: number): Promise<Wake>;
  /**
   * Bytes from the reader's position up to at most `limit` (readable); may be fewer, empty
   * when none is there. `own` gives the reader's buffer, asked for only to read into it.
   */
  chunkAt(reader: FillReader, limit: number, own: () => Promise<Buffer>): Promise<Chunk>;
}

/** Whether the reader's bytes count as fetched for it (`upstream`) or saved (`cache`). */
export type FillSource = 'upstream' | 'cache';

/**
 * Tails a fill's spool from `range.start` to `range.end` (or the end of the blob), a
 * block at a time: after its first bytes, which go out as soon as there are any, it
 * waits until the block it is in is readable to its end (or the spool settled, or a
 * flush), then delivers it, as a slice of a block its neighbours
 * share (shared-blocks.ts) or read into a buffer of its own. Ends only once the spool
 * is complete; is destroyed with the fill's error if it fails.
 *
 * Nothing is read ahead (high-water mark 0): the next chunk is read when the consumer
 * asks, so a slow client holds one block however far behind it is. Its own buffer is
 * reused once the consumer hands it back (`recycle`, from the socket's write callback),
 * as StoreReader does, and a shared block is released then: a new buffer per chunk per
 * reader made garbage collection the largest cost of a cold fan-out.
 */
export class FillReader extends Readable {
  readonly source: FillSource;
  #fill: Spool;
  #position: number;
  #end: number | undefined;
  #reading = false;
  /** Some bytes went out: from now on the reader waits for whole blocks. */
  #delivered = false;
  #onBytes: (n: number) => void;
  #onClose: (reader: FillReader) => void;
  /** The reader's own buffer, when it is not out with the consumer. */
  #spare: Buffer | undefined;
  /** Chunks out with the consumer, each to the own buffer or the shared block it is a view of. */
  readonly #lent = new WeakMap<Buffer, Buffer | Block>();
  /** The own buffer last given to a read: what an own chunk is a view of. */
  #readInto: Buffer | undefined;
  #outstanding = 0;
  /** The consumer hands chunks back: a read into the own buffer waits for it. */
  #recycling = false;
  /** Fires when a chunk comes back, or the reader is destroyed. */
  readonly #returned = createSignal();

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

  /** Gives back a chunk this reader pushed, once nothing else holds it. */
  recycle(chunk: Buffer): void {
    const buffer = this.#lent.get(chunk);
    if (!buffer) return;
    this.#lent.delete(chunk);
    this.#recycling = true;
    if (!Buffer.isBuffer(buffer)) {
      buffer.release();
      return;
    }
    this.#outstanding -= 1;
    this.#recycling = true;
    this.#spare = buffer;
    this.#returned.fire();
  }

  /** The own buffer; while it is out with a consumer that hands chunks back, once it is back. */
  async #own(): Promise<Buffer> {
    while (!this.#spare && this.#recycling && this.#outstanding > 0 && !this.destroyed) await this.#returned.next();
    const buffer = this.#spare ?? Buffer.allocUnsafeSlow(BLOCK_BYTES);
    this.#spare = undefined;
    this.#readInto = buffer;
    return buffer;
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
    this.#returned.fire();
    callback(err);
  }

  /** A chunk of the own buffer goes out; an empty one keeps the buffer here. */
  #lend(chunk: Buffer): void {
    const buffer = this.#readInto;
    this.#readInto = undefined;
    if (!buffer) return;
    if (chunk.length === 0) {
      this.#spare = buffer;
      return;
    }
    this.#lent.set(chunk, buffer);
    this.#outstanding += 1;
  }

  async #readMore(): Promise<void> {
    this.#reading = true;
    try {
      let flushed = false;
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
        if (this.#position >= stop) {
          // The range is delivered; it ends cleanly only once the whole blob is verified.
          await fill.waitForBytes(Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY);
          continue;
        }
        const limit = Math.min(fill.readableBytes(), stop);
        // A batch: the rest of this block, or what is left to deliver; the first byte at once
        // (the client's time to first byte is the whole wait for a small blob).
        const blockEnd = (Math.floor(this.#position / BLOCK_BYTES) + 1) * BLOCK_BYTES;
        const target = Math.min(this.#delivered ? blockEnd : this.#position + 1, stop);
        if (this.#position < limit && (limit >= target || flushed || fill.complete)) {
          flushed = false;
          const { bytes: chunk, block } = await fill.chunkAt(this, limit, () => this.#own());
          if (this.destroyed) {
            block?.release();
            return;
          }
          if (block) this.#lent.set(chunk, block);
          else this.#lend(chunk);
          if (chunk.length === 0) {
            // Readable, yet not there to read (a relay between chunks): wait for the next byte.
            flushed = (await fill.waitForBytes(limit, limit + 1)) === 'flush';
            continue;
          }
          this.#position += chunk.length;
          this.#delivered = true;
          this.#onBytes(chunk.length);
          if (!this.push(chunk)) return;
        } else {
          flushed = (await fill.waitForBytes(this.#position, target)) === 'flush';
        }
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.#reading = false;
    }
  }
}
