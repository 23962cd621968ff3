import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every metric of one mirror, on a private registry so two mirrors in one process do
 * not share counters. Labels are bounded: kinds, outcomes, upstream keys from config,
 * status classes; never a repository, tag or digest.
 */
export type RequestKind = 'manifest' | 'blob' | 'tags' | 'referrers';
export type Outcome = 'hit' | 'miss' | 'coalesced' | 'revalidated' | 'stale' | 'error';
export type ByteSource = 'cache' | 'upstream';
/**
 * Why a blob was fetched without being stored: bigger than its share of the budget, more
 * than free disk plus what eviction may remove, the store failing, or a request that could
 * not share a relay already under way.
 */
export type RelayReason = 'too_large' | 'disk_full' | 'store_unwritable' | 'unshared';

export interface Metrics {
  readonly registry: Registry;
  readonly requests: Counter<'kind' | 'outcome'>;
  readonly bytesServed: Counter<'source'>;
  readonly bandwidthSaved: Counter;
  readonly upstreamBytes: Counter<'upstream'>;
  readonly upstreamRequests: Histogram<'upstream' | 'method' | 'status_class'>;
  readonly upstreamRateLimitRemaining: Gauge<'upstream'>;
  readonly upstreamDown: Gauge<'upstream'>;
  readonly fillsInFlight: Gauge;
  readonly fillWaiters: Gauge;
  readonly fills: Counter<'result'>;
  readonly relays: Counter<'reason'>;
  readonly refused: Counter<'limit'>;
  readonly verifyFailures: Counter<'kind'>;
  readonly staleServed: Counter<'upstream'>;
  readonly storeBytes: Gauge;
  readonly storeEntries: Gauge;
  readonly cacheWriteFailures: Counter;
  readonly evictions: Counter<'reason'>;
  readonly offlineMisses: Counter<'kind'>;
}

export function createMetrics(options: { readonly processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'oci_mirror_' });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({
      name: 'oci_mirror_requests_total',
      help: 'Registry API requests by kind and cache outcome.',
      labelNames: ['kind', 'outcome'],
      registers,
    }),
    bytesServed: new Counter({
      name: 'oci_mirror_served_bytes_total',
      help: 'Body bytes sent to clients, by where they came from.',
      labelNames: ['source'],
      registers,
    }),
    bandwidthSaved: new Counter({
      name: 'oci_mirror_bandwidth_saved_bytes_total',
      help: 'Body bytes served to clients that were not fetched from an upstream for that request.',
      registers,
    }),
    upstreamBytes: new Counter({
      name: 'oci_mirror_upstream_fetched_bytes_total',
      help: 'Body bytes fetched from each upstream.',
      labelNames: ['upstream'],
      registers,
    }),
    upstreamRequests: new Histogram({
      name: 'oci_mirror_upstream_request_duration_seconds',
      help: 'Upstream request time to response headers, by upstream, method and status class.',
      labelNames: ['upstream', 'method', 'status_class'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    upstreamRateLimitRemaining: new Gauge({
      name: 'oci_mirror_upstream_ratelimit_remaining',
      help: 'The ratelimit-remaining header of the last upstream response that carried it (Docker Hub pull quota).',
      labelNames: ['upstream'],
      registers,
    }),
    upstreamDown: new Gauge({
      name: 'oci_mirror_upstream_down',
      help: '1 while an upstream is considered down after a failure (requests fail fast, tags are served stale).',
      labelNames: ['upstream'],
      registers,
    }),
    fillsInFlight: new Gauge({
      name: 'oci_mirror_fills_in_flight',
      help: 'Blob downloads from upstream in progress.',
      registers,
    }),
    fillWaiters: new Gauge({
      name: 'oci_mirror_fill_waiters',
      help: 'Client responses currently streaming from an in-progress fill.',
      registers,
    }),
    fills: new Counter({
      name: 'oci_mirror_fills_total',
      help: 'Finished blob fills by result: committed, relayed (served but not stored: the store could not be written), aborted.',
      labelNames: ['result'],
      registers,
    }),
    relays: new Counter({
      name: 'oci_mirror_relays_total',
      help: 'Blob downloads served without being stored, by reason: too_large (over half the store budget), disk_full (more than free disk plus what may be evicted), store_unwritable, unshared (a request that could not join a relay in progress).',
      labelNames: ['reason'],
      registers,
    }),
    refused: new Counter({
      name: 'oci_mirror_refused_total',
      help: 'Clients turned away by a limit: connections (over listen.maxConnections, closed on accept), requests_per_client (429, over listen.maxRequestsPerClient).',
      labelNames: ['limit'],
      registers,
    }),
    verifyFailures: new Counter({
      name: 'oci_mirror_verify_failures_total',
      help: 'Upstream content whose digest or size did not match, by kind.',
      labelNames: ['kind'],
      registers,
    }),
    staleServed: new Counter({
      name: 'oci_mirror_stale_served_total',
      help: 'Tags served from cache past their freshness because the upstream failed.',
      labelNames: ['upstream'],
      registers,
    }),
    storeBytes: new Gauge({ name: 'oci_mirror_store_bytes', help: 'Bytes of content in the store.', registers }),
    storeEntries: new Gauge({ name: 'oci_mirror_store_entries', help: 'Blobs and manifests in the store.', registers }),
    cacheWriteFailures: new Counter({
      name: 'oci_mirror_cache_write_failures_total',
      help: 'Content that was served but could not be written to the store.',
      registers,
    }),
    evictions: new Counter({
      name: 'oci_mirror_evictions_total',
      help: 'Store entries removed, by reason (size, ttl, damaged).',
      labelNames: ['reason'],
      registers,
    }),
    offlineMisses: new Counter({
      name: 'oci_mirror_offline_misses_total',
      help: 'Requests an offline mirror could not answer from its store (what to warm or import next), by kind.',
      labelNames: ['kind'],
      registers,
    }),
  };
}

export function statusClass(status: number): string {
  return status > 0 ? `${Math.floor(status / 100)}xx` : 'error';
}
