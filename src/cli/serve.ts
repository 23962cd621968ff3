import cluster, { type Worker } from 'node:cluster';
import type { Config } from '../config/types.js';
import { createLogger, type Logger } from '../log.js';
import { createRuntime } from '../runtime.js';

/** A worker that died is started again after this long (never in a tight loop). */
const RESTART_DELAY_MS = 1_000;

/**
 * Runs the mirror until SIGTERM or SIGINT, then stops taking requests, lets responses
 * in flight finish for at most `listen.drainTimeout` (runtime.ts), and resolves. Starting needs no network: upstreams are dialled on
 * the first miss, never at start-up.
 */
export async function runServe(config: Config, workers = 1): Promise<void> {
  const log = createLogger(config.log.level);
  if (workers > 1 && cluster.isPrimary) return runWorkers(log, workers);
  const runtime = await createRuntime(config, { log });
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

/**
 * `--workers N`: N processes (node:cluster) share the listening port and the store
 * directory; the store's locks make them fetch each blob once between them. A worker
 * that dies is replaced; SIGTERM is passed on and waited for.
 */
async function runWorkers(log: Logger, count: number): Promise<void> {
  let stopping = false;
  const live = new Set<Worker>();
  const start = (): void => {
    const worker = cluster.fork();
    live.add(worker);
    worker.on('exit', (code, signal) => {
      live.delete(worker);
      if (stopping) return;
      log.error({ worker: worker.id, code, signal }, 'worker died; starting another');
      setTimeout(() => {
        if (!stopping) start();
      }, RESTART_DELAY_MS);
    });
  };
  for (let i = 0; i < count; i++) start();
  log.info({ workers: count }, 'workers started');
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      stopping = true;
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      log.info({ signal, workers: live.size }, 'stopping workers');
      if (live.size === 0) resolve();
      for (const worker of live) {
        worker.on('exit', () => {
          if (live.size === 0) resolve();
        });
        worker.process.kill('SIGTERM');
      }
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  log.info('stopped');
}
