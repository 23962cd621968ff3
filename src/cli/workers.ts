/**
 * `serve --workers N`: N processes (node:cluster) share the listening port and the store
 * directory; the store's locks make them fetch each blob once between them. A worker
 * that dies is replaced; SIGTERM is passed on and waited for. /metrics answers for the
 * whole group (group-metrics.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../log.js';
import { serveGroupMetrics } from './group-metrics.js';

/** A worker that died is started again after this long (never in a tight loop). */
const RESTART_DELAY_MS = 1_000;

/** Starts `count` workers and keeps them running until SIGTERM or SIGINT, which is passed on and waited for. */
export async function runWorkers(log: Logger, count: number): Promise<void> {
  serveGroupMetrics(log);
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
