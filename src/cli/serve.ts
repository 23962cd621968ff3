import cluster from 'node:cluster';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/types.js';
import { createLogger, type Logger } from '../log.js';
import { createRuntime, type Runtime, type RuntimeOptions } from '../runtime.js';
import { joinGroupMetrics } from './group-metrics.js';
import { EXIT_OK, listenFailure, storeFailure } from './startup-errors.js';
import { runWorkers } from './workers.js';

/**
 * Runs the mirror until SIGTERM or SIGINT, then stops taking requests, lets responses
 * in flight finish for at most `listen.drainTimeout` (runtime.ts), and resolves with the
 * exit code. Starting needs no network: upstreams are dialled on the first miss, never at
 * start-up. A known start-up failure (store, listen address) rejects with a StartupError.
 */
export async function runServe(config: Config, workers = 1): Promise<number> {
  const primaryLog = createLogger(config.log.level);
  if (workers > 1 && cluster.isPrimary) return runWorkers(primaryLog, workers);
  // Under --workers, every line says which worker wrote it.
  const log = cluster.worker ? primaryLog.child({ worker: cluster.worker.id }) : primaryLog;
  const group = cluster.isWorker ? joinGroupMetrics() : undefined;
  const runtime = await start(config, { log, ...(group ? { metricsExposition: () => group.exposition() } : {}) });
  group?.share(runtime.metrics);
  const address = await listen(runtime, config);
  log.info(
    { address, store: config.store.path, upstreams: Object.keys(config.upstreams), defaultUpstream: config.defaultUpstream },
    'mirror listening',
  );
  await untilSignal(log, runtime);
  log.info('stopped');
  return EXIT_OK;
}

async function start(config: Config, options: RuntimeOptions): Promise<Runtime> {
  try {
    return await createRuntime(config, options);
  } catch (err) {
    throw await storeFailure(err, config.store.path);
  }
}

/**
 * Listens, and returns the address as bound: `http://0.0.0.0:5000` means every
 * interface (no loopback address stands in for it); with port 0, the port chosen.
 */
async function listen(runtime: Runtime, config: Config): Promise<string> {
  const { host, port } = config.listen;
  try {
    await runtime.app.listen({ host, port });
  } catch (err) {
    await runtime.close();
    throw listenFailure(err, host, port);
  }
  const bound = runtime.app.server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return `${config.listen.tls ? 'https' : 'http'}://${shown}:${bound.port}`;
}

function untilSignal(log: Logger, runtime: Runtime): Promise<void> {
  return new Promise<void>((resolve) => {
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
}
