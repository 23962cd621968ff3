/**
 * One upstream download of one blob, owned by the cache and not by the request that
 * started it. State machine:
 *
 *   fetching ──(body ends; size and sha256 match; fsync; rename into blobs/)──▶ committed
 *      │  │
 *      │  └──(a write fails: disk full, read-only)──▶ relaying ──(verified)──▶ relayed
 *      │                                                 │
 *      │  ▲
 *      │  └──(body cut: reset, stall, premature end; resume.ts asks for the rest)──┐
 *      │                                                   (same spool, same hash) ┘
 *      └──(cut and out of resumes, too many bytes, digest mismatch,
 *          no reader left while relaying)────────────────┴──────────────────▶ failed
 *                                   (temp file removed; every reader destroyed with the error)
 *
 * Bytes are spooled to a temp file while they are hashed; readers (first request, late
 * joiners, resumed ranges) tail that file at their own pace, so a slow client never
 * slows the fill and a client that leaves only destroys its own reader. The last byte
 * is held back from readers until the fill is verified, so a wrong or short body never
 * ends cleanly: a client takes a clean end for a complete body, and a bad one would
 * surface much later as a broken layer instead of as a failed pull.
 *
 * When the store cannot be written (ENOSPC, EROFS) the fill goes on without it: the
 * bytes already spooled are still read from the file, and each later chunk is handed
 * to the readers from memory, the next one only read from upstream once every reader
 * has taken it (backpressure from the slowest; one chunk held). Nothing is stored, new
 * requests are not joined to it, and it ends `relayed`. A fill begun with `spool: false`
 * (the store is known to be unwritable) relays from its first byte.
 *
 * The fill keeps one read handle, shared by its readers through positional reads. It is
 * closed when the fill has settled, has been released by its owner, and has no readers.
 */
import type { Readable } from 'node:stream';
import { open, type FileHandle } from 'node:fs/promises';
import { createDigester, type Digester } from '../oci/digest.js';
import { closeBody } from '../upstream/body.js';
import type { TempFile } from '../store/blobs.js';
import type { Store } from '../store/store.js';
import type { Continuation, Resumer } from './resume.js';
import { SourceBase, type FillOutcome, type SourceOptions } from './source.js';

const FIRST_READER_WAIT_MS = 10_000;

export type FillState = 'fetching' | 'relaying' | 'committed' | 'relayed' | 'failed';
export type { FillOutcome } from './source.js';

export class FillError extends Error {
  constructor(
    message: string,
    readonly reason: 'upstream' | 'size' | 'digest' | 'write',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'FillError';
  }
}

export interface FillOptions extends SourceOptions {
  readonly store: Store;
  /** False: the store is known to be unwritable, relay from the first byte. */
  readonly spool?: boolean;
  readonly onUpstreamBytes?: (bytes: number) => void;
  /** Continues a body cut mid-way; without it a cut fails the fill. */
  readonly resumer?: Resumer;
  /** Bytes fetched again and dropped, because a resume was answered with the whole body. */
  readonly onRefetchedBytes?: (bytes: number) => void;
  /** Writing the spool or committing failed; the fill relays instead. */
  readonly onWriteFailure?: (err: unknown) => void;
}

/** Bytes handed to readers from memory while relaying: `bytes` starts at `start`. */
interface Relay {
  readonly start: number;
  readonly bytes: Buffer;
}

export class Fill extends SourceBase {
  readonly remote = false;
  #state: FillState = 'fetching';
  #written = 0;
  #hash: Digester = createDigester();
  /** Where bytes go; undefined once relaying. */
  #spool: TempFile | undefined;
  /** Bytes durably in the spool file; the rest (relaying) come from `#relay`. */
  #spoolEnd = 0;
  #relay: Relay | undefined;
  #readHandle: FileHandle | undefined;
  /** The truncated spool of a fill that turned to relaying, removed once its readers are done. */
  #discardAfterReaders: TempFile | undefined;
  readonly #options: FillOptions;
  /** The spool file other processes may follow; undefined when relaying from the start. */
  readonly spoolPath: string | undefined;

  private constructor(options: FillOptions, readHandle: FileHandle | undefined, spoolPath?: string) {
    super(options);
    this.spoolPath = spoolPath;
    this.#options = options;
    this.#readHandle = readHandle;
    if (!readHandle) this.#state = 'relaying';
  }

  /** Creates the spool file (unless relaying) and starts copying `body`; returns at once. */
  static async begin(options: FillOptions, body: Readable): Promise<Fill> {
    if (options.spool === false) {
      const fill = new Fill(options, undefined);
      void fill.#pump(body);
      return fill;
    }
    const temp = await options.store.blobs.createTemp().catch((err: unknown) => {
      options.onWriteFailure?.(err);
      return undefined;
    });
    if (!temp) return Fill.begin({ ...options, spool: false }, body);
    let fill: Fill;
    try {
      fill = new Fill(options, await openRead(temp.path), temp.path);
    } catch (err) {
      closeBody(body);
      await options.store.blobs.discardTemp(temp);
      throw err;
    }
    fill.#spool = temp;
    void fill.#pump(body);
    return fill;
  }

  get state(): FillState {
    return this.#state;
  }

  get complete(): boolean {
    return this.#state === 'committed' || this.#state === 'relayed';
  }

  /** New requests may join: the spool holds every byte from the first, or nothing was relayed yet. */
  override get joinable(): boolean {
    return this.#state === 'fetching' || this.#state === 'committed' || (this.#state === 'relaying' && this.#written === 0);
  }

  get writtenBytes(): number {
    return this.#written;
  }

  /** A relay hands out bytes that no file keeps, and its readers take each chunk before the next. */
  protected get shareable(): boolean {
    return this.#state === 'fetching' || this.#state === 'committed';
  }

  async readAt(buffer: Buffer, position: number): Promise<number> {
    if (position < this.#spoolEnd && this.#readHandle) {
      const length = Math.min(buffer.length, this.#spoolEnd - position);
      const { bytesRead } = await this.#readHandle.read(buffer, 0, length, position);
      return bytesRead;
    }
    const relay = this.#relay;
    if (!relay || position < relay.start) return 0;
    return relay.bytes.copy(buffer, 0, position - relay.start);
  }

  async #pump(first: Readable): Promise<void> {
    let body = first;
    try {
      if (!this.#spool) await this.#waitForFirstReader();
      let skipBytes = 0;
      for (let cut = await this.#copy(body, 0); cut; cut = await this.#copy(body, skipBytes)) {
        closeBody(body);
        ({ body, skipBytes } = await this.#resume(cut));
      }
      const actual = this.#hash.digest();
      if (actual !== this.digest) {
        throw new FillError(`upstream sent ${actual} for ${this.digest}`, 'digest');
      }
      if (this.#spool && !(await this.#commit(this.#spool))) this.#spool = undefined;
      const outcome: FillOutcome = this.#spool ? 'committed' : 'relayed';
      this.#state = outcome;
      this.succeed(outcome);
    } catch (err) {
      closeBody(body);
      if (this.#spool) await this.#options.store.blobs.discardTemp(this.#spool).catch(() => undefined);
      this.#state = 'failed';
      this.fail(err instanceof FillError ? err : new FillError(errorMessage(err), 'upstream', { cause: err }));
    }
  }

  /**
   * Takes `body` (less its first `skipBytes`, already held) to its end; resolves with the
   * cut when it failed or ended short, undefined when the blob is whole.
   */
  async #copy(body: Readable, skipBytes: number): Promise<Error | undefined> {
    const chunks = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let skip = skipBytes;
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await chunks.next();
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
      if (next.done) break;
      this.#options.onUpstreamBytes?.(next.value.length);
      const dropped = Math.min(skip, next.value.length);
      skip -= dropped;
      if (dropped > 0) this.#options.onRefetchedBytes?.(dropped);
      if (dropped < next.value.length) await this.#take(next.value.subarray(dropped));
    }
    if (skip === 0 && (this.sizeBytes === undefined || this.#written === this.sizeBytes)) return undefined;
    return new FillError(`upstream body ended at ${this.#written} of ${this.sizeBytes ?? 'unknown'} bytes`, 'size');
  }

  async #take(chunk: Buffer): Promise<void> {
    this.#hash.update(chunk);
    if (this.#spool && !(await this.#spoolChunk(this.#spool, chunk))) this.#spool = await this.#startRelay(this.#spool);
    if (!this.#spool) this.#relayChunk(chunk);
    this.#written += chunk.length;
    if (this.sizeBytes !== undefined && this.#written > this.sizeBytes) {
      throw new FillError(`upstream sent more than its Content-Length ${this.sizeBytes}`, 'size');
    }
    this.progressed(!this.#spool);
    if (!this.#spool) await this.#waitForReaders();
  }

  /** Asks the upstream for the rest; throws the cut when the resumes are spent. */
  async #resume(cut: Error): Promise<Continuation> {
    const resumer = this.#options.resumer;
    if (!resumer) throw cut;
    // A reader that took bytes keeps them: the spool may only start over under readers that took none.
    const canRestart = [...this.readers].every((reader) => reader.position === 0);
    const next = await resumer.next(cut, this.#written, canRestart);
    if (next.restart) await this.#restart();
    return next;
  }

  /** Spool and hash from the first byte again; readers (all at 0) wait for the new bytes. */
  async #restart(): Promise<void> {
    this.#hash = createDigester();
    this.#written = 0;
    this.#spoolEnd = 0;
    this.#relay = undefined;
    this.startedOver();
    if (this.#spool) await this.#spool.handle.truncate(0);
  }

  /** Appends to the spool; false when the store refused the write. */
  async #spoolChunk(spool: TempFile, chunk: Buffer): Promise<boolean> {
    try {
      await writeAt(spool.handle, chunk, this.#written);
      this.#spoolEnd = this.#written + chunk.length;
      return true;
    } catch (err) {
      this.#options.onWriteFailure?.(err);
      return false;
    }
  }

  /** Stored, or false when the store refused it (the verified bytes are still served). */
  async #commit(spool: TempFile): Promise<boolean> {
    try {
      await this.#options.store.blobs.commitTemp(spool, this.digest);
      return true;
    } catch (err) {
      this.#options.onWriteFailure?.(err);
      await this.#options.store.blobs.discardTemp(spool).catch(() => undefined);
      return false;
    }
  }

  /** The spool stays readable up to `#spoolEnd`; the temp file is dropped at the end. */
  async #startRelay(spool: TempFile): Promise<undefined> {
    this.#state = 'relaying';
    await spool.handle.truncate(this.#spoolEnd).catch(() => undefined);
    this.#discardAfterReaders = spool;
    return undefined;
  }

  #relayChunk(chunk: Buffer): void {
    // Keep the previous last byte: it is held back from readers until the end.
    const previous = this.#relay;
    this.#relay =
      previous && previous.start + previous.bytes.length === this.#written && this.#written > this.#spoolEnd
        ? { start: this.#written - 1, bytes: Buffer.concat([previous.bytes.subarray(-1), chunk]) }
        : { start: this.#written, bytes: chunk };
  }

  /** A relay has nowhere to put bytes before its first reader; it gives up after a bound. */
  async #waitForFirstReader(): Promise<void> {
    const deadline = this.now() + FIRST_READER_WAIT_MS;
    while (this.readers.size === 0) {
      const left = deadline - this.now();
      if (left <= 0) throw new FillError('no client came to read a blob the store cannot take', 'write');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
      });
      await Promise.race([this.moved.next(), timeout]);
      clearTimeout(timer);
    }
  }

  /** Relaying: the next chunk is read only once every reader took this one. */
  async #waitForReaders(): Promise<void> {
    for (;;) {
      if (this.readers.size === 0) {
        throw new FillError('the store cannot take the blob and no client is left to relay it to', 'write');
      }
      const target = this.readableBytes();
      if ([...this.readers].every((r) => r.position >= target || r.destroyed)) return;
      await this.moved.next();
    }
  }

  protected override close(): void {
    // A read-only handle loses nothing when its close fails; the temp area's sweep removes a spool left behind.
    void this.#readHandle?.close().catch(() => undefined);
    const spool = this.#discardAfterReaders;
    this.#discardAfterReaders = undefined;
    if (spool) void this.#options.store.blobs.discardTemp(spool).catch(() => undefined);
  }
}

function openRead(path: string): Promise<FileHandle> {
  return open(path, 'r');
}

async function writeAt(handle: FileHandle, chunk: Buffer, position: number): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, position + offset);
    offset += bytesWritten;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
