import { createUpstreamTable } from './config.js';
import type { Config } from './config-types.js';
import { buildApp, type App } from './http/app.js';
import type { Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createMirror, type Mirror } from './mirror/mirror.js';
import { createBlobStore, type BlobStore } from './store/blob-store.js';
import { createRecords } from './store/records.js';
import { createUpstream, type Upstream } from './upstream/client.js';

/** Everything one mirror is made of, built from one Config. */
export interface Runtime {
  readonly config: Config;
  readonly app: App;
  readonly mirror: Mirror;
  readonly metrics: Metrics;
  readonly store: BlobStore;
  readonly log: Logger;
  /** Stops taking requests, lets responses in flight finish, then closes upstreams. */
  close(): Promise<void>;
}

export interface RuntimeOptions {
  readonly log: Logger;
  /** Process metrics are off in tests that build several runtimes in one process. */
  readonly processMetrics?: boolean;
}

export async function createRuntime(config: Config, options: RuntimeOptions): Promise<Runtime> {
  const { log } = options;
  const metrics = createMetrics({ processMetrics: options.processMetrics ?? true });
  const store = createBlobStore(config.store.path);
  await store.init();
  const upstreams = new Map<string, Upstream>(
    Object.values(config.upstreams).map((u) => [u.name, createUpstream(u, { metrics, log })]),
  );
  const mirror = createMirror({ config, store, records: createRecords(store.layout), upstreams, metrics, log });
  const app = await buildApp({
    mirror,
    table: createUpstreamTable(config),
    metrics,
    log,
    readiness: () => ({ ready: true }),
    tls: config.listen.tls,
  });
  return {
    config,
    app,
    mirror,
    metrics,
    store,
    log,
    async close() {
      await app.close();
      await Promise.all([...upstreams.values()].map((u) => u.close()));
    },
  };
}
