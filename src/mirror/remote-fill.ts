/**
 * A fill another process is writing (it holds the `fill-<hex>` lock), followed through
 * its spool file: this process's readers tail the file as it grows, so N processes
 * sharing a store make one upstream fetch per digest.
 *
 *   following ──(the blob is in blobs/ and is the inode we read)──▶ complete
 *       │
 *       └──(spool stops growing and its record or lock is gone, or it stalls)──▶ failed
 *
 * The writer verifies before it renames the spool into blobs/, so the file we read is
 * verified once blobs/ holds that very inode; until then the last byte is held back,
 * as for a local fill. There is no cross-process notification, so progress is polled.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import { lockNames } from '../store/layout.js';
import type { Store } from '../store/store.js';
import { FillReader, type FillSource, type Spool } from './fill-reader.js';
import { createSignal } from './signal.js';

const POLL_MS = 25;
/** While the spool does not grow, ask whether its writer is still there this often. */
const LIVENESS_EVERY_MS = 1_000;

export interface RemoteFillOptions {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly store: Store;
  /** Fail when the spool has not grown for this long (the writer's own body timeout, and some). */
  readonly stallMs: number;
}

export class RemoteFill implements Spool {
  readonly digest: Digest;
  readonly sizeBytes: number | undefined;
  readonly startedAtMs = Date.now();
  /** Resolves once the writer committed the blob we read. */
  readonly done: Promise<'committed'>;
  #handle: FileHandle;
  #written = 0;
  #complete = false;
  #error: Error | undefined;
  #readers = new Set<FillReader>();
  readonly #progress = createSignal();
  #settled = false;
  #lastGrowthMs = Date.now();
  #lastLivenessMs = Date.now();
  #settle!: { resolve: (outcome: 'committed') => void; reject: (err: Error) => void };
  readonly #options: RemoteFillOptions;

  private constructor(options: RemoteFillOptions, handle: FileHandle) {
    this.digest = options.digest;
    this.sizeBytes = options.sizeBytes;
    this.#options = options;
    this.#handle = handle;
    this.done = new Promise<'committed'>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.done.catch(() => undefined);
  }

  /** Opens the spool; undefined when it is already gone (committed or failed meanwhile). */
  static async follow(options: RemoteFillOptions, spoolPath: string): Promise<RemoteFill | undefined> {
    const handle = await open(spoolPath, 'r').catch(() => undefined);
    if (!handle) return undefined;
    const fill = new RemoteFill(options, handle);
    void fill.#poll();
    return fill;
  }

  get complete(): boolean {
    return this.#complete;
  }

  get error(): Error | undefined {
    return this.#error;
  }

  get writtenBytes(): number {
    return this.#written;
  }

  get readerCount(): number {
    return this.#readers.size;
  }

  readableBytes(): number {
    return this.#complete ? this.#written : Math.max(0, this.#written - 1);
  }

  nextProgress(): Promise<void> {
    return this.#progress.next();
  }

  async readAt(buffer: Buffer, position: number): Promise<number> {
    const { bytesRead } = await this.#handle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  openReader(range: ByteRange | undefined, source: FillSource, onBytes: (n: number) => void): Readable {
    if (this.#settled && this.#readers.size === 0) throw new Error('remote fill already closed; serve from the store');
    const reader = new FillReader(this, range, source, onBytes, (r) => {
      this.#readers.delete(r);
      this.#closeIfUnused();
    });
    this.#readers.add(reader);
    return reader;
  }

  async #poll(): Promise<void> {
    try {
      while (!this.#complete) {
        const info = await this.#handle.stat();
        const now = Date.now();
        if (info.size > this.#written) {
          this.#written = info.size;
          this.#lastGrowthMs = now;
          this.#notify();
        } else if (await this.#isCommitted(info.ino, info.size)) {
          this.#complete = true;
        } else if (now - this.#lastLivenessMs >= LIVENESS_EVERY_MS) {
          this.#lastLivenessMs = now;
          await this.#checkWriter(now);
        }
        if (!this.#complete) await sleep(POLL_MS);
      }
      this.#settle.resolve('committed');
    } catch (err) {
      this.#error = err instanceof Error ? err : new Error(String(err));
      this.#settle.reject(this.#error);
    }
    this.#settled = true;
    this.#notify();
    this.#closeIfUnused();
  }

  async #isCommitted(inode: number, sizeBytes: number): Promise<boolean> {
    if (this.sizeBytes !== undefined && sizeBytes !== this.sizeBytes) return false;
    const stored = await this.#options.store.blobs.identify(this.digest);
    return stored !== undefined && stored.inode === inode && stored.sizeBytes === sizeBytes;
  }

  async #checkWriter(now: number): Promise<void> {
    const { store, digest } = this.#options;
    const record = await store.fills.find(digest);
    const locked = await store.locks.isLocked(lockNames.fill(digest));
    if (!record || !locked) {
      // A last look: the writer may have committed between our two checks.
      const info = await this.#handle.stat();
      if (info.size === this.#written && (await this.#isCommitted(info.ino, info.size))) return;
      throw new Error('the process fetching this blob stopped before it was complete');
    }
    if (now - this.#lastGrowthMs > this.#options.stallMs) {
      throw new Error(`the blob being fetched by another process made no progress for ${this.#options.stallMs} ms`);
    }
  }

  #notify(): void {
    this.#progress.fire();
  }

  #closeIfUnused(): void {
    if (this.#settled && this.#readers.size === 0) void this.#handle.close().catch(() => undefined);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
