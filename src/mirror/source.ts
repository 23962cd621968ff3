/**
 * What a blob request reads from while a download runs: this process's own fill
 * (fill.ts) or the spool of a fill another process writes (remote-fill.ts). Both are a
 * `Source`; what they share — settling once, waking readers, counting them, closing the
 * file when nobody needs it — is written once here, in `SourceBase`.
 */
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import { FillReader, type FillSource, type Spool } from './fill-reader.js';
import { createSignal } from './signal.js';

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
  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): Readable;
  /** The owner hands it to no new request; its file is closed once it settled and its readers left. */
  release(): void;
}

export interface SourceOptions {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly now?: () => number;
}

export abstract class SourceBase implements Source, Spool {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly startedAtMs: number;
  readonly done: Promise<FillOutcome>;
  abstract readonly remote: boolean;
  protected readonly now: () => number;
  protected readonly readers = new Set<FillReader>();
  /** Fires at every write, completion or failure. */
  readonly #progress = createSignal();
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

  nextProgress(): Promise<void> {
    return this.#progress.next();
  }

  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): Readable {
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

  /** Wakes the readers: new bytes are readable. */
  protected progressed(): void {
    this.#progress.fire();
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
    this.#progress.fire();
    this.#closeIfUnused();
  }

  #closeIfUnused(): void {
    if (this.#closed || !this.#settled || !this.#released || this.readers.size > 0) return;
    this.#closed = true;
    this.close();
  }
}
