/**
 * `serve --workers N`: N processes (node:cluster) share the listening port and the store
 * directory; the store's locks make them fetch each blob once between them. A worker
 * that dies is replaced; SIGTERM is passed on and waited for. /metrics answers for the
 * whole group (group-metrics.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../log.js';
import { serveGroupMetrics } from './group-metrics.js';
import { EXIT_ENVIRONMENT, EXIT_OK } from './startup-errors.js';

/** A worker that died is started again after this long (never in a tight loop). */
const RESTART_DELAY_MS = 1_000;

/**
 * Starts `count` workers and keeps them running until SIGTERM or SIGINT, which is passed
 * on and waited for. A worker the environment refused to start (it printed why and
 * exited with EXIT_ENVIRONMENT before listening) stops the group with that code: a
 * port in use or a read-only store is not cured by starting again.
 */
export async function runWorkers(log: Logger, count: number): Promise<number> {
  serveGroupMetrics(log);
  let stopping = false;
  let exitCode = EXIT_OK;
  const live = new Set<Worker>();
  let resolveStopped: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  const stop = (reason: string): void => {
    if (stopping) return;
    stopping = true;
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    log.info({ reason, workers: live.size }, 'stopping workers');
    if (live.size === 0) resolveStopped();
    for (const worker of live) {
      worker.on('exit', () => {
        if (live.size === 0) resolveStopped();
      });
      worker.process.kill('SIGTERM');
    }
  };
  const start = (): void => {
    const worker = cluster.fork();
    let listened = false;
    live.add(worker);
    worker.on('listening', () => (listened = true));
    worker.on('exit', (code, signal) => {
      live.delete(worker);
      if (stopping) return;
      if (!listened && code === EXIT_ENVIRONMENT) {
        exitCode = EXIT_ENVIRONMENT;
        return stop('a worker could not start');
      }
      log.error({ worker: worker.id, code, signal }, 'worker died; starting another');
      setTimeout(() => {
        if (!stopping) start();
      }, RESTART_DELAY_MS);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < count; i++) start();
  log.info({ workers: count }, 'workers started');
  await stopped;
  log.info('stopped');
  return exitCode;
}
