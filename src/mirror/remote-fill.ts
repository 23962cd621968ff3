/**
 * A fill another process is writing (it holds the `fill-<hex>` lock), followed through
 * its spool file: this process's readers tail the file as it grows, so N processes
 * sharing a store make one upstream fetch per digest.
 *
 *   following ──(the blob is in blobs/ and is the inode we read)──▶ complete
 *       │
 *       └──(spool stops growing and its record or lock is gone, or it stalls;
 *           or it starts over under a reader that took bytes)──────────────▶ failed
 *
 * While the writer resumes a cut upstream body the spool only pauses. When the writer
 * restarts it (resume.ts: the upstream would not continue from the offset) the file
 * shrinks: readers that took no byte wait for the new bytes, a reader that took some
 * cannot be served a consistent body and fails.
 *
 * The writer verifies before it renames the spool into blobs/, so the file we read is
 * verified once blobs/ holds that very inode; until then the last byte is held back,
 * as for a local fill. There is no cross-process notification, so progress is polled.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import { SourceBase, type SourceOptions } from './source.js';

const POLL_MS = 25;
/** While the spool does not grow, ask whether its writer is still there this often. */
const LIVENESS_EVERY_MS = 1_000;

export interface RemoteFillOptions extends SourceOptions {
  readonly store: { readonly blobs: Pick<Store['blobs'], 'identify'> };
  /** Fail when the spool has not grown for this long (the writer's own body timeout, and some). */
  readonly stallMs: number;
  /** Whether the writing process still holds the fill lock and its record. */
  readonly writerAlive: () => Promise<boolean>;
}

export class RemoteFill extends SourceBase {
  readonly remote = true;
  #handle: FileHandle;
  #written = 0;
  #complete = false;
  #lastGrowthMs: number;
  #lastLivenessMs: number;
  readonly #options: RemoteFillOptions;

  private constructor(options: RemoteFillOptions, handle: FileHandle) {
    super(options);
    this.#options = options;
    this.#handle = handle;
    this.#lastGrowthMs = this.startedAtMs;
    this.#lastLivenessMs = this.startedAtMs;
  }

  /** Opens the spool; undefined when it is already gone (committed or failed meanwhile). */
  static async follow(options: RemoteFillOptions, spoolPath: string): Promise<RemoteFill | undefined> {
    const handle = await open(spoolPath, 'r').catch(ifGone);
    if (!handle) return undefined;
    const fill = new RemoteFill(options, handle);
    void fill.#poll();
    return fill;
  }

  get complete(): boolean {
    return this.#complete;
  }

  get writtenBytes(): number {
    return this.#written;
  }

  protected get shareable(): boolean {
    return true;
  }

  async readAt(buffer: Buffer, position: number): Promise<number> {
    const { bytesRead } = await this.#handle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  async #poll(): Promise<void> {
    try {
      while (!this.#complete) {
        const info = await this.#handle.stat();
        const now = this.now();
        if (info.size < this.#written) {
          this.#startedOver(info.size);
        } else if (info.size > this.#written) {
          this.#written = info.size;
          this.#lastGrowthMs = now;
          this.progressed();
        } else if (await this.#isCommitted(info.ino, info.size)) {
          this.#complete = true;
        } else if (now - this.#lastLivenessMs >= LIVENESS_EVERY_MS) {
          this.#lastLivenessMs = now;
          await this.#checkWriter(now);
        }
        if (!this.#complete) await sleep(POLL_MS);
      }
      this.succeed('committed');
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #startedOver(sizeBytes: number): void {
    if ([...this.readers].some((reader) => reader.position > 0)) {
      throw new Error('the process fetching this blob started it over after bytes were served');
    }
    this.#written = sizeBytes;
    this.startedOver();
  }

  async #isCommitted(inode: number, sizeBytes: number): Promise<boolean> {
    if (this.sizeBytes !== undefined && sizeBytes !== this.sizeBytes) return false;
    const stored = await this.#options.store.blobs.identify(this.digest);
    return stored !== undefined && stored.inode === inode && stored.sizeBytes === sizeBytes;
  }

  async #checkWriter(now: number): Promise<void> {
    if (!(await this.#options.writerAlive())) {
      // A last look: the writer may have committed between our two checks.
      const info = await this.#handle.stat();
      if (info.size === this.#written && (await this.#isCommitted(info.ino, info.size))) return;
      throw new Error('the process fetching this blob stopped before it was complete');
    }
    if (now - this.#lastGrowthMs > this.#options.stallMs) {
      throw new Error(`the blob being fetched by another process made no progress for ${this.#options.stallMs} ms`);
    }
  }

  protected override close(): void {
    // A read-only handle loses nothing when its close fails.
    void this.#handle.close().catch(() => undefined);
  }
}

/** The spool was committed (renamed away) or discarded before we opened it. */
function ifGone(err: unknown): undefined {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  throw err;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
