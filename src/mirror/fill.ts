/**
 * One upstream download of one blob, owned by the cache and not by the request that
 * started it. State machine:
 *
 *   fetching ──(body ends; size and sha256 match; fsync; rename into blobs/)──▶ committed
 *      │  │
 *      │  └──(a write fails: disk full, read-only)──▶ relaying ──(verified)──▶ relayed
 *      │                                                 │
 *      └──(upstream error or stall, too many/few bytes, digest mismatch,
 *          no reader left while relaying)────────────────┴──────────────────▶ failed
 *                                   (temp file removed; every reader destroyed with the error)
 *
 * Bytes are spooled to a temp file while they are hashed; readers (first request, late
 * joiners, resumed ranges) tail that file at their own pace, so a slow client never
 * slows the fill and a client that leaves only destroys its own reader. The last byte
 * is held back from readers until the fill is verified: a wrong or short body can
 * never end cleanly (LESSONS §14).
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
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { open, type FileHandle } from 'node:fs/promises';
import type { Digest } from '../oci/digest.js';
import { closeBody } from './context.js';
import { createSignal } from './signal.js';
import type { TempFile } from '../store/blobs.js';
import type { Store } from '../store/store.js';
import { FillReader, type FillSource, type Spool } from './fill-reader.js';
import type { ByteRange } from '../oci/range.js';

const FIRST_READER_WAIT_MS = 10_000;

export type FillState = 'fetching' | 'relaying' | 'committed' | 'relayed' | 'failed';
/** How a fill that did not fail ended: stored, or only streamed through. */
export type FillOutcome = 'committed' | 'relayed';

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

export interface FillOptions {
  readonly digest: Digest;
  /** From the upstream's Content-Length; undefined when it sent none. */
  readonly sizeBytes: number | undefined;
  readonly store: Store;
  /** False: the store is known to be unwritable, relay from the first byte. */
  readonly spool?: boolean;
  readonly onUpstreamBytes?: (bytes: number) => void;
  /** Writing the spool or committing failed; the fill relays instead. */
  readonly onWriteFailure?: (err: unknown) => void;
}

/** Bytes handed to readers from memory while relaying: `bytes` starts at `start`. */
interface Relay {
  readonly start: number;
  readonly bytes: Buffer;
}

export class Fill implements Spool {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly startedAtMs = Date.now();
  /** Settles when the fill commits or relays (resolves) or fails (rejects). Always handled. */
  readonly done: Promise<FillOutcome>;
  #state: FillState = 'fetching';
  #written = 0;
  /** Bytes durably in the spool file; the rest (relaying) come from `#relay`. */
  #spoolEnd = 0;
  #relay: Relay | undefined;
  #error: Error | undefined;
  #readers = new Set<FillReader>();
  #released = false;
  #readHandle: FileHandle | undefined;
  readonly #progress = createSignal();
  /** Fires when a reader moves or leaves (relaying waits for the slowest). */
  readonly #moved = createSignal();
  #settle!: { resolve: (outcome: FillOutcome) => void; reject: (err: Error) => void };
  readonly #options: FillOptions;
  /** The spool file other processes may follow; undefined when relaying from the start. */
  readonly spoolPath: string | undefined;

  private constructor(options: FillOptions, readHandle: FileHandle | undefined, spoolPath?: string) {
    this.spoolPath = spoolPath;
    this.digest = options.digest;
    this.sizeBytes = options.sizeBytes;
    this.#options = options;
    this.#readHandle = readHandle;
    if (!readHandle) this.#state = 'relaying';
    this.done = new Promise<FillOutcome>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.done.catch(() => undefined);
  }

  /** Creates the spool file (unless relaying) and starts copying `body`; returns at once. */
  static async begin(options: FillOptions, body: Readable): Promise<Fill> {
    if (options.spool === false) {
      const fill = new Fill(options, undefined);
      void fill.#pump(body, undefined);
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
    void fill.#pump(body, temp);
    return fill;
  }

  get state(): FillState {
    return this.#state;
  }

  get complete(): boolean {
    return this.#state === 'committed' || this.#state === 'relayed';
  }

  /** New requests may join: the spool holds every byte from the first, or nothing was relayed yet. */
  get joinable(): boolean {
    return this.#state === 'fetching' || this.#state === 'committed' || (this.#state === 'relaying' && this.#written === 0);
  }

  get writtenBytes(): number {
    return this.#written;
  }

  get readerCount(): number {
    return this.#readers.size;
  }

  get error(): Error | undefined {
    return this.#error;
  }

  readableBytes(): number {
    return this.complete ? this.#written : Math.max(0, this.#written - 1);
  }

  nextProgress(): Promise<void> {
    return this.#progress.next();
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

  /** A stream of the whole blob or a window of it, following the spool as it grows. */
  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): Readable {
    if (this.#released && this.#readers.size === 0 && this.#state !== 'fetching') {
      throw new Error('fill already closed; serve from the store');
    }
    const moved = (n: number): void => {
      onBytes(n);
      this.#notifyMoved();
    };
    const reader = new FillReader(this, range, source, moved, (r) => this.#dropReader(r));
    this.#readers.add(reader);
    this.#notifyMoved();
    return reader;
  }

  /** The owner stops handing this fill to new requests (it has settled). */
  release(): void {
    this.#released = true;
    this.#closeIfUnused();
  }

  async #pump(body: Readable, temp: TempFile | undefined): Promise<void> {
    const hash = createHash('sha256');
    let spool = temp;
    try {
      if (!spool) await this.#waitForFirstReader();
      for await (const chunk of body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        if (spool && !(await this.#spoolChunk(spool, chunk))) spool = await this.#startRelay(spool);
        if (!spool) this.#relayChunk(chunk);
        this.#written += chunk.length;
        this.#options.onUpstreamBytes?.(chunk.length);
        if (this.sizeBytes !== undefined && this.#written > this.sizeBytes) {
          throw new FillError(`upstream sent more than its Content-Length ${this.sizeBytes}`, 'size');
        }
        this.#notify();
        if (!spool) await this.#waitForReaders();
      }
      if (this.sizeBytes !== undefined && this.#written !== this.sizeBytes) {
        throw new FillError(`upstream body ended at ${this.#written} of ${this.sizeBytes} bytes`, 'size');
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== this.digest) {
        throw new FillError(`upstream sent ${actual} for ${this.digest}`, 'digest');
      }
      if (spool && !(await this.#commit(spool))) spool = undefined;
      this.#state = spool ? 'committed' : 'relayed';
      this.#settle.resolve(this.#state === 'committed' ? 'committed' : 'relayed');
    } catch (err) {
      closeBody(body);
      if (spool) await this.#options.store.blobs.discardTemp(spool).catch(() => undefined);
      this.#error = err instanceof FillError ? err : new FillError(errorMessage(err), 'upstream', { cause: err });
      this.#state = 'failed';
      this.#settle.reject(this.#error);
    }
    this.#notify();
    this.#closeIfUnused();
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

  #discardAfterReaders: TempFile | undefined;

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
    const deadline = Date.now() + FIRST_READER_WAIT_MS;
    while (this.#readers.size === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new FillError('no client came to read a blob the store cannot take', 'write');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
      });
      await Promise.race([this.#moved.next(), timeout]);
      clearTimeout(timer);
    }
  }

  /** Relaying: the next chunk is read only once every reader took this one. */
  async #waitForReaders(): Promise<void> {
    for (;;) {
      if (this.#readers.size === 0) {
        throw new FillError('the store cannot take the blob and no client is left to relay it to', 'write');
      }
      const target = this.readableBytes();
      if ([...this.#readers].every((r) => r.position >= target || r.destroyed)) return;
      await this.#moved.next();
    }
  }

  #notify(): void {
    this.#progress.fire();
  }

  #notifyMoved(): void {
    this.#moved.fire();
  }

  #dropReader(reader: FillReader): void {
    this.#readers.delete(reader);
    this.#notifyMoved();
    this.#closeIfUnused();
  }

  #closeIfUnused(): void {
    if (this.#released && !this.#active && this.#readers.size === 0) {
      void this.#readHandle?.close().catch(() => undefined);
      const spool = this.#discardAfterReaders;
      this.#discardAfterReaders = undefined;
      if (spool) void this.#options.store.blobs.discardTemp(spool).catch(() => undefined);
    }
  }

  get #active(): boolean {
    return this.#state === 'fetching' || this.#state === 'relaying';
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
