import type { Config, UpstreamConfig } from '../config/types.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { CacheIndex } from '../store/cache-index.js';
import type { StoreHealth } from './store-health.js';
import type { Records } from '../store/records.js';
import type { Upstream } from '../upstream/client.js';
import { closeBody } from '../upstream/body.js';

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

export { closeBody, contentLength, readCapped } from '../upstream/body.js';

/**
 * Confirms, for an upstream with credentials, that `repository` may see `digest`: the
 * store is shared by every repository, and a private blob fetched for one must not be
 * served to another that the upstream would refuse.
 */
export async function ensureLinked(deps: MirrorDeps, route: Route, digest: Digest, kind: 'manifests' | 'blobs'): Promise<void> {
  const { upstream } = upstreamFor(deps, route);
  if (!upstream.hasCredentials || deps.config.offline) return;
  if (await deps.records.hasLink(route.upstream, route.repository, digest)) return;
  const response = await upstream.request({
    method: 'HEAD',
    repository: route.repository,
    path: `${kind}/${digest}`,
    notFound: kind === 'blobs' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN',
  });
  closeBody(response.body);
  await rememberLink(deps, route, digest);
}

/** Records that the upstream confirmed `digest` for the repository; a full disk only costs the record. */
export async function rememberLink(deps: MirrorDeps, route: Route, digest: Digest): Promise<void> {
  await deps.records.putLink(route.upstream, route.repository, digest).catch((err: unknown) => deps.health.failed(err, 'link'));
}
