import type { Config, UpstreamConfig } from '../config/types.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { CacheIndex } from '../store/cache-index.js';
import type { StoreHealth } from './store-health.js';
import type { Records } from '../store/records.js';
import type { Upstream } from '../upstream/client.js';

/** What the mirror's parts share: the store, the upstreams, and how to observe. */
export interface MirrorDeps {
  readonly config: Config;
  readonly store: Store;
  readonly records: Records;
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly index: CacheIndex;
  readonly health: StoreHealth;
  /** Starts a maintenance pass (eviction) unless one is running. */
  readonly maintain: () => Promise<unknown>;
  readonly now?: () => number;
}

export function upstreamFor(deps: MirrorDeps, route: Route): { upstream: Upstream; config: UpstreamConfig } {
  const upstream = deps.upstreams.get(route.upstream);
  const config = deps.config.upstreams[route.upstream];
  if (!upstream || !config) {
    throw new RegistryError('NAME_UNKNOWN', `registry ${route.upstream} is not mirrored here`, { statusCode: 404 });
  }
  return { upstream, config };
}

/**
 * Whether a known tag may be served stale after `err`: anything but a 404 from the
 * upstream means it failed us (DNS, refused, timeout, 5xx, 429, 401/403). A 404 is an
 * answer. Wider than upstream/failure.ts's `isUpstreamFailure`, which is only what the
 * client itself classified.
 */
export function mayServeStale(err: unknown): boolean {
  return !(err instanceof RegistryError) || err.statusCode !== 404;
}

/** Counted, so operators see what to warm next. */
export function offlineMiss(deps: Pick<MirrorDeps, 'metrics'>, code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', what: string): RegistryError {
  deps.metrics.offlineMisses.inc({ kind: code === 'BLOB_UNKNOWN' ? 'blob' : 'manifest' });
  return new RegistryError(code, `${what} is not in the cache and the mirror is offline (it was not warmed or imported)`);
}
