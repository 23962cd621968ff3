/**
 * Whether the store can be written. A failed write (ENOSPC, EROFS, EIO…) marks it
 * unwritable for `retryAfterMs`: meanwhile misses are relayed from upstream without
 * being stored, /readyz says `degraded`, and the failure is logged once per window
 * (not once per request) and counted every time. After the window the next fill tries
 * the disk again; a write that succeeds clears the state.
 */
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

export interface StoreHealth {
  /** Why the store is not being written, or undefined when it is. */
  readonly degraded: string | undefined;
  /** False while a recent failure stands: do not spool, relay. */
  writable(): boolean;
  failed(err: unknown, what: string): void;
  succeeded(): void;
}

export interface StoreHealthOptions {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly retryAfterMs?: number;
  readonly now?: () => number;
}

const DEFAULT_RETRY_AFTER_MS = 30_000;

export function createStoreHealth(options: StoreHealthOptions): StoreHealth {
  const now = options.now ?? Date.now;
  const retryAfterMs = options.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS;
  let failure: { reason: string; atMs: number } | undefined;
  let loggedAtMs = Number.NEGATIVE_INFINITY;

  return {
    get degraded() {
      return failure && `the store cannot be written (${failure.reason}); serving from upstream without caching`;
    },
    writable: () => failure === undefined || now() - failure.atMs >= retryAfterMs,
    failed(err, what) {
      const code = (err as NodeJS.ErrnoException | undefined)?.code ?? 'error';
      failure = { reason: code, atMs: now() };
      options.metrics.cacheWriteFailures.inc();
      if (now() - loggedAtMs >= retryAfterMs) {
        loggedAtMs = now();
        options.log.error({ err, code, what }, 'store not writable; relaying without caching');
      }
    },
    succeeded() {
      if (failure) options.log.info({ reason: failure.reason }, 'store writable again');
      failure = undefined;
    },
  };
}
