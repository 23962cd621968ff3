import cluster from 'node:cluster';
import type { Config } from '../config-types.js';
import { createLogger } from '../log.js';
import { createRuntime } from '../runtime.js';
import { joinGroupMetrics } from './group-metrics.js';
import { runWorkers } from './workers.js';

/**
 * Runs the mirror until SIGTERM or SIGINT, then stops taking requests, lets responses
 * in flight finish, and resolves. Starting needs no network: upstreams are dialled on
 * the first miss, never at start-up.
 */
export async function runServe(config: Config, workers = 1): Promise<void> {
  const primaryLog = createLogger(config.log.level);
  if (workers > 1 && cluster.isPrimary) return runWorkers(primaryLog, workers);
  // Under --workers, every line says which worker wrote it.
  const log = cluster.worker ? primaryLog.child({ worker: cluster.worker.id }) : primaryLog;
  const group = cluster.isWorker ? joinGroupMetrics() : undefined;
  const runtime = await createRuntime(config, { log, ...(group ? { metricsExposition: group.exposition } : {}) });
  group?.share(runtime.metrics);
  const address = await runtime.app.listen({ host: config.listen.host, port: config.listen.port });
  log.info(
    { address, store: config.store.path, upstreams: Object.keys(config.upstreams), defaultUpstream: config.defaultUpstream },
    'mirror listening',
  );
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'shutting down');
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      runtime.close().then(resolve, (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        resolve();
      });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  log.info('stopped');
}
