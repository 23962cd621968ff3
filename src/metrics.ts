import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { VERSION } from './version.js';

/**
 * Every metric of one mirror, on a private registry so two mirrors in one process do
 * not share counters. Labels are bounded: kinds, outcomes, upstream keys from config,
 * status classes; never a repository, tag or digest.
 *
 * Every series whose label values are known in advance exists from start-up with value
 * 0, so `increase()` sees the first event of a process (a series born at 1 has no
 * earlier sample to increase from).
 *
 * Under `serve --workers N` the numbers are the process group's: each metric carries
 * the `aggregator` that merges the workers' values (counters and histograms sum; the
 * shared store's gauges take the max, since every worker reports the same store).
 * Default process metrics keep their standard names (`process_*`, `nodejs_*`).
 */
export const REQUEST_KINDS = ['manifest', 'blob', 'tags', 'referrers'] as const;
export const OUTCOMES = ['hit', 'miss', 'coalesced', 'revalidated', 'stale', 'error'] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];
export type Outcome = (typeof OUTCOMES)[number];
export type ByteSource = 'cache' | 'upstream';
/**
 * Why a blob was fetched without being stored: bigger than its share of the budget, more
 * than free disk plus what eviction may remove, the store failing, or a request that could
 * not share a relay already under way.
 */
export type RelayReason = 'too_large' | 'disk_full' | 'store_unwritable' | 'unshared';
export const AUTH_FAILURE_REASONS = ['unknown_user', 'bad_password', 'throttled', 'malformed'] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

export interface Metrics {
  readonly registry: Registry;
  readonly requests: Counter<'kind' | 'outcome'>;
  readonly requestDuration: Histogram<'kind' | 'outcome' | 'status_class'>;
  readonly bytesServed: Counter<'source'>;
  readonly bandwidthSaved: Counter;
  readonly upstreamBytes: Counter<'upstream'>;
  readonly upstreamResumes: Counter<'upstream' | 'outcome'>;
  readonly upstreamRefetchedBytes: Counter<'upstream'>;
  readonly upstreamRequests: Histogram<'upstream' | 'method' | 'status_class'>;
  readonly upstreamRateLimitRemaining: Gauge<'upstream'>;
  readonly upstreamDown: Gauge<'upstream'>;
  readonly upstreamEndpointDown: Gauge<'upstream' | 'url'>;
  readonly upstreamThrottled: Gauge<'upstream'>;
  readonly upstreamThrottledRefusals: Counter<'upstream'>;
  readonly fillsInFlight: Gauge;
  readonly fillWaiters: Gauge;
  readonly fills: Counter<'result'>;
  readonly relays: Counter<'reason'>;
  readonly refused: Counter<'limit'>;
  readonly verifyFailures: Counter<'kind'>;
  readonly staleServed: Counter<'upstream'>;
  readonly storeBytes: Gauge;
  readonly storeEntries: Gauge;
  readonly storeMaxBytes: Gauge;
  readonly storeImages: Gauge;
  readonly storePinnedBytes: Gauge;
  readonly cacheWriteFailures: Counter;
  readonly evictions: Counter<'reason'>;
  readonly offlineMisses: Counter<'kind'>;
  readonly authFailures: Counter<'reason'>;
  readonly contentType: string;
  /** Where `oci_mirror_ready` and `oci_mirror_degraded` read their state at each scrape. */
  watchReadiness(read: () => ReadinessState): void;
  /** The text a scrape of /metrics gets: this registry's, or the process group's in a worker. */
  exposition(): Promise<string>;
}

export interface ReadinessState {
  readonly ready: boolean;
  readonly degraded: boolean;
}

export interface MetricsOptions {
  /** `process_*` and `nodejs_*`; off in tests that build several runtimes in one process. */
  readonly processMetrics?: boolean;
  /** Configured upstream keys, whose series start at 0. */
  readonly upstreams?: readonly string[];
  /** `store.maxSize`, exported as `oci_mirror_store_max_bytes`. */
  readonly storeMaxBytes?: number;
  /** Replaces the local exposition (a worker of `serve --workers` asks the primary). */
  readonly exposition?: () => Promise<string>;
}

const CLIENT_BUCKETS = [0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 120, 600];
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectProcessMetrics(registry);
  const registers = [registry];
  let readState = (): ReadinessState => ({ ready: false, degraded: false });
  const metrics: Metrics = {
    registry,
    ...requestMetrics(registers),
    ...upstreamMetrics(registers),
    ...fillMetrics(registers),
    ...storeMetrics(registers),
    watchReadiness(read) {
      readState = read;
    },
    contentType: registry.contentType,
    exposition: options.exposition ?? (() => registry.metrics()),
  };
  registerStateMetrics(registers, () => readState());
  startAtZero(metrics, options.upstreams ?? []);
  metrics.storeMaxBytes.set(options.storeMaxBytes ?? 0);
  return metrics;
}

type Registers = Registry[];

/**
 * prom-client's default metrics under their standard names, less three gauges named
 * `*_total` (promtool: "non-counter metrics should not have _total suffix"), each the
 * sum of a labelled gauge that stays: `nodejs_active_handles{type}` and its kin.
 */
function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}

function requestMetrics(registers: Registers) {
  return {
    requests: new Counter({
      name: 'oci_mirror_requests_total',
      help: 'Registry API requests by kind and cache outcome.',
      labelNames: ['kind', 'outcome'],
      registers,
    }),
    requestDuration: new Histogram({
      name: 'oci_mirror_request_duration_seconds',
      help: 'Registry API request time as clients see it, to the last byte of the response, by kind, outcome and status class.',
      labelNames: ['kind', 'outcome', 'status_class'],
      buckets: CLIENT_BUCKETS,
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
    offlineMisses: new Counter({
      name: 'oci_mirror_offline_misses_total',
      help: 'Requests an offline mirror could not answer from its store (what to warm or import next), by kind.',
      labelNames: ['kind'],
      registers,
    }),
    authFailures: new Counter({
      name: 'oci_mirror_auth_failures_total',
      help: 'Registry API requests refused for their credentials (clientAuth), by reason: unknown_user, bad_password, throttled, malformed.',
      labelNames: ['reason'],
      registers,
    }),
  };
}

function upstreamMetrics(registers: Registers) {
  return {
    upstreamBytes: new Counter({
      name: 'oci_mirror_upstream_fetched_bytes_total',
      help: 'Body bytes fetched from each upstream.',
      labelNames: ['upstream'],
      registers,
    }),
    upstreamResumes: new Counter({
      name: 'oci_mirror_upstream_resumes_total',
      help: 'Attempts to continue a blob download (or manifest) cut mid-body, by outcome: resumed, refetched, restarted, failed.',
      labelNames: ['upstream', 'outcome'],
      registers,
    }),
    upstreamRefetchedBytes: new Counter({
      name: 'oci_mirror_upstream_refetched_bytes_total',
      help: 'Body bytes fetched again and discarded because an upstream answered a resume with the whole body.',
      labelNames: ['upstream'],
      registers,
    }),
    upstreamRequests: new Histogram({
      name: 'oci_mirror_upstream_request_duration_seconds',
      help: 'Upstream request time to response headers, by upstream, method and status class.',
      labelNames: ['upstream', 'method', 'status_class'],
      buckets: UPSTREAM_BUCKETS,
      registers,
    }),
    upstreamRateLimitRemaining: new Gauge({
      name: 'oci_mirror_upstream_ratelimit_remaining',
      help: 'The ratelimit-remaining header of the last upstream response that carried it (Docker Hub pull quota).',
      labelNames: ['upstream'],
      aggregator: 'min',
      registers,
    }),
    upstreamDown: new Gauge({
      name: 'oci_mirror_upstream_down',
      help: '1 while an upstream is considered down after a failure (requests fail fast, tags are served stale).',
      labelNames: ['upstream'],
      aggregator: 'max',
      registers,
    }),
    upstreamEndpointDown: new Gauge({
      name: 'oci_mirror_upstream_endpoint_down',
      help: '1 while one endpoint (url or one of urls) of an upstream is considered down; the upstream is down when all are.',
      labelNames: ['upstream', 'url'],
      aggregator: 'max',
      registers,
    }),
    upstreamThrottled: new Gauge({
      name: 'oci_mirror_upstream_throttled',
      help: '1 while an upstream is left alone after a 429 (cached content is served, misses answer 429).',
      labelNames: ['upstream'],
      aggregator: 'max',
      registers,
    }),
    upstreamThrottledRefusals: new Counter({
      name: 'oci_mirror_upstream_throttled_refusals_total',
      help: 'Requests answered 429 by the mirror without asking the upstream, because it is rate limited.',
      labelNames: ['upstream'],
      registers,
    }),
    staleServed: new Counter({
      name: 'oci_mirror_stale_served_total',
      help: 'Tags and tag lists served from cache past their freshness because the upstream failed.',
      labelNames: ['upstream'],
      registers,
    }),
  };
}

function fillMetrics(registers: Registers) {
  return {
    fillsInFlight: new Gauge({
      name: 'oci_mirror_fills_in_flight',
      help: 'Blob downloads from upstream in progress.',
      aggregator: 'sum',
      registers,
    }),
    fillWaiters: new Gauge({
      name: 'oci_mirror_fill_waiters',
      help: 'Client responses currently streaming from an in-progress fill.',
      aggregator: 'sum',
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
  };
}

function storeMetrics(registers: Registers) {
  return {
    storeBytes: new Gauge({ name: 'oci_mirror_store_bytes', help: 'Bytes of content in the store.', aggregator: 'max', registers }),
    storeEntries: new Gauge({ name: 'oci_mirror_store_entries', help: 'Blobs and manifests in the store.', aggregator: 'max', registers }),
    storeMaxBytes: new Gauge({
      name: 'oci_mirror_store_max_bytes',
      help: 'The store budget (store.maxSize): least recently served content is evicted above it.',
      aggregator: 'max',
      registers,
    }),
    storeImages: new Gauge({
      name: 'oci_mirror_store_images',
      help: 'Images in the store (manifests no other stored manifest references), after the last maintenance pass.',
      aggregator: 'max',
      registers,
    }),
    storePinnedBytes: new Gauge({
      name: 'oci_mirror_store_pinned_bytes',
      help: 'Stored bytes of pinned images (never evicted), after the last maintenance pass.',
      aggregator: 'max',
      registers,
    }),
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
  };
}

/** Gauges read at each scrape, never set by the code they describe. */
function registerStateMetrics(registers: Registers, state: () => ReadinessState): void {
  const buildInfo = new Gauge({
    name: 'oci_mirror_build_info',
    help: 'Always 1; the labels name the oci-mirror version and the Node.js version running it.',
    labelNames: ['version', 'node'],
    aggregator: 'max',
    registers,
  });
  buildInfo.set({ version: VERSION, node: process.version }, 1);
  new Gauge({
    name: 'oci_mirror_ready',
    help: '1 while the mirror answers requests (under --workers: every worker does), else 0.',
    aggregator: 'min',
    registers,
    collect() {
      this.set(state().ready ? 1 : 0);
    },
  });
  new Gauge({
    name: 'oci_mirror_degraded',
    help: '1 while serving with a fault (the store cannot be written: misses are relayed, not cached), else 0.',
    aggregator: 'max',
    registers,
    collect() {
      this.set(state().degraded ? 1 : 0);
    },
  });
}

/** Creates every series whose labels are known at start-up, at 0. */
function startAtZero(m: Metrics, upstreams: readonly string[]): void {
  for (const kind of REQUEST_KINDS) {
    for (const outcome of OUTCOMES) {
      m.requests.inc({ kind, outcome }, 0);
      for (const status of outcome === 'error' ? ['4xx', '5xx'] : ['2xx']) m.requestDuration.zero({ kind, outcome, status_class: status });
    }
  }
  for (const source of ['cache', 'upstream'] satisfies ByteSource[]) m.bytesServed.inc({ source }, 0);
  for (const kind of ['blob', 'manifest']) {
    m.offlineMisses.inc({ kind }, 0);
    m.verifyFailures.inc({ kind }, 0);
  }
  for (const result of ['committed', 'relayed', 'aborted']) m.fills.inc({ result }, 0);
  for (const reason of ['size', 'ttl', 'damaged']) m.evictions.inc({ reason }, 0);
  for (const reason of AUTH_FAILURE_REASONS) m.authFailures.inc({ reason }, 0);
  for (const upstream of upstreams) {
    m.upstreamBytes.inc({ upstream }, 0);
    m.staleServed.inc({ upstream }, 0);
    m.upstreamDown.set({ upstream }, 0);
    for (const method of ['GET', 'HEAD']) {
      for (const status of ['2xx', '5xx', 'error']) m.upstreamRequests.zero({ upstream, method, status_class: status });
    }
  }
}

/** A worker's /metrics could not get the group's totals from the primary in time. */
export class GroupMetricsUnavailable extends Error {
  override readonly name = 'GroupMetricsUnavailable';
}

export function statusClass(status: number): string {
  return status > 0 ? `${Math.floor(status / 100)}xx` : 'error';
}

/** One worker's metric values, as sent to the primary of `serve --workers` (plain JSON over IPC). */
export type MetricsSnapshot = readonly object[];

/** This registry's values, to be merged with the other workers'. */
export function snapshotMetrics(metrics: Metrics): Promise<MetricsSnapshot> {
  return metrics.registry.getMetricsAsJSON();
}

/**
 * The process group's exposition: the workers' snapshots merged by each metric's
 * `aggregator` (prom-client's cluster aggregation; summation when none is set).
 */
export function aggregateSnapshots(snapshots: readonly MetricsSnapshot[]): Promise<string> {
  return AggregatorRegistry.aggregate(snapshots.map((s) => [...s])).metrics();
}
