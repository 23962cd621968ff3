import { createUpstreamTable } from './oci/upstream-table.js';
import type { Config } from './config/types.js';
import { buildApp, type App } from './http/app.js';
import type { Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createMirror, type Mirror } from './mirror/mirror.js';
import { createStore, type Store } from './store/store.js';
import { createRecords, type Records } from './store/records.js';
import { createCacheIndex, type CacheIndex } from './store/cache-index.js';
import { createStoreLocks } from './store/lock.js';
import { createMaintenance, type Maintenance } from './mirror/maintenance.js';
import { pinnedDigests } from './mirror/pins.js';
import { createStoreHealth } from './mirror/store-health.js';
import { createUpstream, type Upstream } from './upstream/client.js';

/** Everything one mirror is made of, built from one Config. */
export interface Runtime {
  readonly config: Config;
  readonly app: App;
  readonly mirror: Mirror;
  readonly metrics: Metrics;
  readonly store: Store;
  readonly index: CacheIndex;
  readonly records: Records;
  readonly maintenance: Maintenance;
  readonly log: Logger;
  /**
   * Stops taking requests and lets responses and fills in flight finish, for at most
   * `listen.drainTimeout`; then destroys the connections left, abandons the fills left
   * (their temp files are removed with the temp area) and closes the store.
   */
  close(): Promise<void>;
}

export interface RuntimeOptions {
  readonly log: Logger;
  /** Process metrics are off in tests that build several runtimes in one process. */
  readonly processMetrics?: boolean;
  /** How /metrics is answered when not from this runtime's registry (a worker of `serve --workers`). */
  readonly metricsExposition?: () => Promise<string>;
}

export async function createRuntime(config: Config, options: RuntimeOptions): Promise<Runtime> {
  const { log } = options;
  const metrics = createMetrics({
    processMetrics: options.processMetrics ?? true,
    upstreams: Object.values(config.upstreams).map((u) => u.name),
    storeMaxBytes: config.store.maxSizeBytes,
    ...(options.metricsExposition ? { exposition: options.metricsExposition } : {}),
  });
  const { store, records, health, index } = await openCache(config, log, metrics);
  const maintenance = createMaintenance({ config, store, index, records, log, metrics });
  const upstreams = new Map<string, Upstream>(Object.values(config.upstreams).map((u) => [u.name, createUpstream(u, { metrics, log })]));
  const mirror = createMirror({ config, store, records, upstreams, metrics, log, index, health, maintain: () => maintenance.run() });
  const closeUpstreams = (): Promise<unknown> => Promise.all([...upstreams.values()].map((u) => u.close()));
  let app: App;
  try {
    app = await buildApp({
      mirror,
      table: createUpstreamTable(config),
      metrics,
      log,
      readiness: () => ({ ready: true, ...(health.degraded ? { degraded: health.degraded } : {}) }),
      clientAuth: config.clientAuth,
      upstreamsWithCredentials: Object.values(config.upstreams)
        .filter((u) => u.credentials)
        .map((u) => u.name),
      tls: config.listen.tls,
      limits: config.listen,
      headersTimeoutMs: config.listen.headersTimeoutMs,
      front: config.front,
    });
  } catch (err) {
    // A start that fails (a bad htpasswd or TLS file) leaves no lock or temp area behind.
    await closeUpstreams();
    await store.close();
    throw err;
  }
  maintenance.start();
  return {
    config,
    app,
    mirror,
    metrics,
    store,
    index,
    records,
    maintenance,
    log,
    async close() {
      const deadline = createDeadline(config.listen.drainTimeoutMs);
      try {
        const closing = app.close();
        if (!(await deadline.meets(closing))) {
          log.warn({ drainTimeoutMs: config.listen.drainTimeoutMs }, 'drain time is over; ending transfers in flight');
          // Destroyed, not ended: a client must see a broken transfer, never a clean short body.
          app.server.closeAllConnections();
          await closing;
        }
        if (!(await deadline.meets(mirror.drain()))) log.warn({ fills: mirror.fillsInFlight }, 'abandoning fills in flight');
        await maintenance.close();
        // Past the deadline, upstream connections still in use are left to the exit.
        await deadline.meets(closeUpstreams());
      } finally {
        deadline.clear();
      }
      // Removes this process's temp area: an abandoned fill leaves nothing, and never reaches blobs/.
      await store.close();
    },
  };
}

/** The store, its records and its index, loaded; the store is closed again if loading fails. */
async function openCache(config: Config, log: Logger, metrics: Metrics) {
  const locks = createStoreLocks(config.store.path, {
    onLost: (name, err) => log.warn({ lock: name, err }, 'store lock lost to another process'),
  });
  const store = createStore(config.store.path, locks);
  await store.init();
  const records = createRecords(store);
  const health = createStoreHealth({ log, metrics });
  const index = createCacheIndex({
    store,
    maxSizeBytes: config.store.maxSizeBytes,
    idleTtlMs: config.store.idleTtlMs,
    protectedDigests: () => pinnedDigests({ config, records, store }),
    onEvicted: (reason, count) => metrics.evictions.inc({ reason }, count),
    onChange: (totals) => {
      metrics.storeBytes.set(totals.sizeBytes);
      metrics.storeEntries.set(totals.entries);
    },
  });
  try {
    const startedMs = Date.now();
    const loadedFrom = await index.load();
    log.info(
      { from: loadedFrom, entries: index.entries, sizeBytes: index.sizeBytes, durationMs: Date.now() - startedMs },
      'store index loaded',
    );
  } catch (err) {
    await store.close();
    throw err;
  }
  return { store, records, health, index };
}

interface Deadline {
  /** Whether `work` settled before the deadline (it is not cancelled when it did not). */
  meets(work: Promise<unknown>): Promise<boolean>;
  clear(): void;
}

function createDeadline(ms: number): Deadline {
  let timer: NodeJS.Timeout | undefined;
  const over = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return {
    meets: (work) => Promise.race([work.then(() => true), over]),
    clear: () => clearTimeout(timer),
  };
}
