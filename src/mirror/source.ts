/**
 * What a blob request reads from while a download runs: this process's own fill
 * (fill.ts) or the spool of a fill another process writes (remote-fill.ts). Both are a
 * `Source`; what they share — settling once, waking readers, counting them, closing the
 * file when nobody needs it — is written once here, in `SourceBase`.
 */
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import { FillReader, type Chunk, type FillSource, type Spool, type Wake } from './fill-reader.js';
import { BLOCK_BYTES, SHARED_WINDOW_BYTES, SharedBlocks } from './shared-blocks.js';
import { createSignal } from './signal.js';

/**
 * How long a reader with some new bytes, but less than its block, waits for the rest:
 * a slow upstream still reaches its clients in small steps; a fast one fills blocks
 * long before this, and its readers wake once per block.
 */
const FLUSH_MS = 20;

/** A reader waiting for bytes: woken when `target` is readable, or by a flush once any byte past `position` is. */
interface Waiter {
  readonly position: number;
  readonly target: number;
  readonly wake: (why: Wake) => void;
}

/** How a fill that did not fail ended: stored, or only streamed through. */
export type FillOutcome = 'committed' | 'relayed';

export interface Source {
  readonly digest: Digest;
  /** From the upstream's Content-Length; undefined when it sent none. */
  readonly sizeBytes: number | undefined;
  /** True when another process does the download and this one follows its spool. */
  readonly remote: boolean;
  readonly startedAtMs: number;
  /** Settles when the download commits or relays (resolves) or fails (rejects). Always handled. */
  readonly done: Promise<FillOutcome>;
  /** Every byte is readable and was verified. */
  readonly complete: boolean;
  readonly error: Error | undefined;
  /** A new request may read from it: no byte it would need has been dropped. */
  readonly joinable: boolean;
  readonly writtenBytes: number;
  readonly readerCount: number;
  /** A stream of the whole blob or a window of it, following the download as it grows. */
  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): FillReader;
  /** The owner hands it to no new request; its file is closed once it settled and its readers left. */
  release(): void;
}

export interface SourceOptions {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly now?: () => number;
  /** How long a reader with fewer new bytes than its block waits for the rest (FLUSH_MS). */
  readonly flushMs?: number;
}

export abstract class SourceBase implements Source, Spool {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly startedAtMs: number;
  readonly done: Promise<FillOutcome>;
  abstract readonly remote: boolean;
  protected readonly now: () => number;
  protected readonly readers = new Set<FillReader>();
  readonly #flushMs: number;
  /** Readers waiting for bytes; woken by `progressed`, a flush, or the end. */
  readonly #waiters = new Set<Waiter>();
  #flushTimer: NodeJS.Timeout | undefined;
  readonly #shared = new SharedBlocks((buffer, position) => this.readAt(buffer, position));
  /** Fires when a reader opens, moves or leaves. */
  protected readonly moved = createSignal();
  #settle!: { resolve: (outcome: FillOutcome) => void; reject: (err: Error) => void };
  #error: Error | undefined;
  #settled = false;
  #released = false;
  #closed = false;

  protected constructor(options: SourceOptions) {
    this.digest = options.digest;
    this.sizeBytes = options.sizeBytes;
    this.now = options.now ?? Date.now;
    this.#flushMs = options.flushMs ?? FLUSH_MS;
    this.startedAtMs = this.now();
    this.done = new Promise<FillOutcome>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    // Handled here so that a failure nobody awaits is not an unhandled rejection; readers see it as `error`.
    this.done.catch(() => undefined);
  }

  abstract get complete(): boolean;
  abstract get writtenBytes(): number;
  abstract readAt(buffer: Buffer, position: number): Promise<number>;
  /** Readers may share blocks read from the spool: its bytes below `readableBytes()` are final. */
  protected abstract get shareable(): boolean;
  /** Lets go of the files; called once, when settled, released and without readers. */
  protected abstract close(): void;

  get joinable(): boolean {
    return true;
  }

  get error(): Error | undefined {
    return this.#error;
  }

  get readerCount(): number {
    return this.readers.size;
  }

  protected get settled(): boolean {
    return this.#settled;
  }

  readableBytes(): number {
    return this.complete ? this.writtenBytes : Math.max(0, this.writtenBytes - 1);
  }

  waitForBytes(position: number, target: number): Promise<Wake> {
    if (this.#settled) return Promise.resolve('end');
    if (this.readableBytes() >= target) return Promise.resolve('batch');
    return new Promise<Wake>((wake) => {
      this.#waiters.add({ position, target, wake });
      this.#armFlush();
    });
  }

  /**
   * Bytes for `reader` from its position up to at most `limit` (readable): a slice of a
   * shared block when the whole block is final and in memory, or when a reader close
   * behind will want it too; else read into the reader's own buffer.
   */
  async chunkAt(reader: FillReader, limit: number, own: () => Promise<Buffer>): Promise<Chunk> {
    const { position } = reader;
    const index = Math.floor(position / BLOCK_BYTES);
    const start = index * BLOCK_BYTES;
    const end = Math.min(start + BLOCK_BYTES, this.complete ? this.writtenBytes : Number.POSITIVE_INFINITY);
    if (this.shareable && limit >= end) {
      const length = end - start;
      const block =
        this.#shared.find(index, length) ?? (this.#wantedBehind(reader, start, end) ? this.#shared.get(index, length) : undefined);
      if (block) {
        const held = await block;
        return { bytes: held.bytes.subarray(position - start), block: held };
      }
    }
    const buffer = await own();
    const read = await this.readAt(buffer.subarray(0, Math.min(buffer.length, limit - position)), position);
    return { bytes: buffer.subarray(0, read) };
  }

  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): FillReader {
    if (this.#closed) throw new Error('fill already closed; serve from the store');
    const moved = (n: number): void => {
      onBytes(n);
      this.moved.fire();
    };
    const reader = new FillReader(this, range, source, moved, (r) => {
      this.readers.delete(r);
      this.moved.fire();
      this.#closeIfUnused();
    });
    this.readers.add(reader);
    this.moved.fire();
    return reader;
  }

  release(): void {
    this.#released = true;
    this.#closeIfUnused();
  }

  /**
   * New bytes are readable: wakes the readers whose block is now whole; `flush` wakes
   * every reader with any new byte (a relay waits for its readers to take each chunk).
   */
  protected progressed(flush = false): void {
    if (this.#waiters.size === 0) return;
    const readable = this.readableBytes();
    for (const waiter of this.#waiters) {
      if (readable >= waiter.target) this.#wake(waiter, 'batch');
      else if (flush && readable > waiter.position) this.#wake(waiter, 'flush');
    }
    this.#armFlush();
  }

  /** The spool starts over from its first byte: no block read before may be served again. */
  protected startedOver(): void {
    this.#shared.clear();
  }

  protected succeed(outcome: FillOutcome): void {
    this.#settled = true;
    this.#settle.resolve(outcome);
    this.#ended();
  }

  protected fail(err: Error): void {
    this.#error = err;
    this.#settled = true;
    this.#settle.reject(err);
    this.#ended();
  }

  #ended(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    for (const waiter of this.#waiters) this.#wake(waiter, 'end');
    this.#closeIfUnused();
  }

  #wake(waiter: Waiter, why: Wake): void {
    this.#waiters.delete(waiter);
    waiter.wake(why);
  }

  /** One timer per source, while some reader waits with new bytes short of its block. */
  #armFlush(): void {
    if (this.#flushTimer || this.#settled) return;
    if (!this.#someWaiterHasBytes()) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.progressed(true);
    }, this.#flushMs);
  }

  #someWaiterHasBytes(): boolean {
    const readable = this.readableBytes();
    for (const waiter of this.#waiters) if (readable > waiter.position) return true;
    return false;
  }

  /** Another reader will soon want block [start, end): it has not passed it, and is no further back than blocks are kept. */
  #wantedBehind(reader: FillReader, start: number, end: number): boolean {
    for (const other of this.readers) {
      if (other !== reader && other.position < end && other.position >= start - SHARED_WINDOW_BYTES) return true;
    }
    return false;
  }

  #closeIfUnused(): void {
    if (this.#closed || !this.#settled || !this.#released || this.readers.size > 0) return;
    this.#closed = true;
    this.close();
  }
}
