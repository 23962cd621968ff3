/**
 * One upstream download of one blob, owned by the cache and not by the request that
 * started it. State machine:
 *
 *   fetching ──(body ends; size and sha256 match; fsync; rename into blobs/)──▶ committed
 *      │
 *      └──(upstream error or stall, too many/few bytes, digest mismatch, write error)──▶ failed
 *                                   (temp file removed; every reader destroyed with the error)
 *
 * Bytes are spooled to a temp file while they are hashed; readers (first request, late
 * joiners, resumed ranges) tail that file at their own pace, so a slow client never
 * slows the fill and a client that leaves only destroys its own reader. The last byte
 * is held back from readers until the fill is committed: a wrong or short body can
 * never end cleanly (LESSONS §14).
 *
 * The fill keeps one read handle, shared by its readers through positional reads. It is
 * closed when the fill has settled, has been released by its owner, and has no readers.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { open, type FileHandle } from 'node:fs/promises';
import type { Digest } from '../oci/digest.js';
import { closeBody } from './context.js';
import type { BlobStore, TempFile } from '../store/blob-store.js';
import { FillReader, type FillSource } from './fill-reader.js';
import type { ByteRange } from '../oci/range.js';

export type FillState = 'fetching' | 'committed' | 'failed';

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
  readonly store: BlobStore;
  readonly onUpstreamBytes?: (bytes: number) => void;
}

export class Fill {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly startedAtMs = Date.now();
  /** Settles when the fill commits (resolves) or fails (rejects). Always handled. */
  readonly done: Promise<void>;
  #state: FillState = 'fetching';
  #written = 0;
  #error: Error | undefined;
  #readers = new Set<FillReader>();
  #released = false;
  #readHandle: FileHandle;
  #progress: { promise: Promise<void>; resolve: () => void };
  #settle!: { resolve: () => void; reject: (err: Error) => void };
  readonly #options: FillOptions;

  private constructor(options: FillOptions, readHandle: FileHandle) {
    this.digest = options.digest;
    this.sizeBytes = options.sizeBytes;
    this.#options = options;
    this.#readHandle = readHandle;
    this.#progress = deferred();
    this.done = new Promise<void>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.done.catch(() => undefined);
  }

  /** Creates the spool file and starts copying `body` into it; returns at once. */
  static async begin(options: FillOptions, body: Readable): Promise<Fill> {
    const temp = await options.store.createTempFile().catch((err: unknown) => {
      closeBody(body);
      throw err;
    });
    let fill: Fill;
    try {
      fill = new Fill(options, await openRead(temp.path));
    } catch (err) {
      closeBody(body);
      await options.store.discardTemp(temp);
      throw err;
    }
    void fill.#pump(body, temp);
    return fill;
  }

  get state(): FillState {
    return this.#state;
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

  /** Bytes a reader may deliver now: all once committed, else all but the last. */
  readableBytes(): number {
    return this.#state === 'committed' ? this.#written : Math.max(0, this.#written - 1);
  }

  /** Resolves at the next write, commit or failure. */
  nextProgress(): Promise<void> {
    return this.#progress.promise;
  }

  async readAt(buffer: Buffer, position: number): Promise<number> {
    const { bytesRead } = await this.#readHandle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  /** A stream of the whole blob or a window of it, following the spool as it grows. */
  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): Readable {
    if (this.#released && this.#readers.size === 0 && this.#state !== 'fetching') {
      throw new Error('fill already closed; serve from the store');
    }
    const reader = new FillReader(this, range, source, onBytes, (r) => this.#dropReader(r));
    this.#readers.add(reader);
    return reader;
  }

  /** The owner stops handing this fill to new requests (it has settled). */
  release(): void {
    this.#released = true;
    this.#closeIfUnused();
  }

  async #pump(body: Readable, temp: TempFile): Promise<void> {
    const hash = createHash('sha256');
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        await writeAt(temp.handle, chunk, this.#written);
        this.#written += chunk.length;
        this.#options.onUpstreamBytes?.(chunk.length);
        if (this.sizeBytes !== undefined && this.#written > this.sizeBytes) {
          throw new FillError(`upstream sent more than its Content-Length ${this.sizeBytes}`, 'size');
        }
        this.#notify();
      }
      if (this.sizeBytes !== undefined && this.#written !== this.sizeBytes) {
        throw new FillError(`upstream body ended at ${this.#written} of ${this.sizeBytes} bytes`, 'size');
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== this.digest) {
        throw new FillError(`upstream sent ${actual} for ${this.digest}`, 'digest');
      }
      await this.#options.store.commitTemp(temp, this.digest).catch((err: unknown) => {
        throw new FillError('could not store the blob', 'write', { cause: err });
      });
      this.#state = 'committed';
      this.#settle.resolve();
    } catch (err) {
      closeBody(body);
      await this.#options.store.discardTemp(temp).catch(() => undefined);
      this.#error = err instanceof FillError ? err : new FillError(errorMessage(err), 'upstream', { cause: err });
      this.#state = 'failed';
      this.#settle.reject(this.#error);
    }
    this.#notify();
    this.#closeIfUnused();
  }

  #notify(): void {
    const current = this.#progress;
    this.#progress = deferred();
    current.resolve();
  }

  #dropReader(reader: FillReader): void {
    this.#readers.delete(reader);
    this.#closeIfUnused();
  }

  #closeIfUnused(): void {
    if (this.#released && this.#state !== 'fetching' && this.#readers.size === 0) {
      void this.#readHandle.close().catch(() => undefined);
    }
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

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
