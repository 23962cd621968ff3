/**
 * One /metrics for `serve --workers N`. Workers share the listen socket, so any worker
 * may get a scrape: it asks the primary over the cluster IPC channel; the primary asks
 * every listening worker (the asker included) for a snapshot of its registry, merges
 * them by each metric's aggregator and answers the asker, which sends the group's
 * totals. Only workers that listen are asked: one still starting has nothing to count
 * and could not answer yet. A worker that dies takes its counts with it (a counter
 * reset, which rate() and increase() tolerate).
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../log.js';
import { aggregateSnapshots, GroupMetricsUnavailable, snapshotMetrics, type Metrics, type MetricsSnapshot } from '../metrics.js';

/** How long the primary waits for every worker's snapshot. */
const COLLECT_TIMEOUT_MS = 5_000;
/** How long a worker waits for the primary's answer (a little longer than the collection). */
const ASK_TIMEOUT_MS = 6_000;

type Message =
  | { readonly type: 'oci-mirror:metrics-ask'; readonly id: number }
  | { readonly type: 'oci-mirror:metrics-answer'; readonly id: number; readonly text?: string; readonly error?: string }
  | { readonly type: 'oci-mirror:metrics-collect'; readonly id: number }
  | { readonly type: 'oci-mirror:metrics-snapshot'; readonly id: number; readonly snapshot: MetricsSnapshot };

interface Collection {
  add(worker: Worker, snapshot: MetricsSnapshot): void;
  drop(worker: Worker): void;
}

/** In the primary: answers the workers' requests for the group's exposition. */
export function serveGroupMetrics(log: Logger): void {
  const listening = new Set<Worker>();
  const collections = new Map<number, Collection>();
  let nextId = 0;
  cluster.on('listening', (worker) => listening.add(worker));
  cluster.on('exit', (worker) => {
    listening.delete(worker);
    for (const collection of collections.values()) collection.drop(worker);
  });
  const collect = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      const waiting = new Set([...listening].filter((w) => w.isConnected()));
      const snapshots: MetricsSnapshot[] = [];
      const timer = setTimeout(() => {
        collections.delete(id);
        reject(new Error(`${waiting.size} worker(s) sent no metrics within ${COLLECT_TIMEOUT_MS} ms`));
      }, COLLECT_TIMEOUT_MS);
      const finishIfDone = (): void => {
        if (waiting.size > 0) return;
        clearTimeout(timer);
        collections.delete(id);
        aggregateSnapshots(snapshots).then(resolve, reject);
      };
      collections.set(id, {
        add(worker, snapshot) {
          if (waiting.delete(worker)) snapshots.push(snapshot);
          finishIfDone();
        },
        drop(worker) {
          waiting.delete(worker);
          finishIfDone();
        },
      });
      for (const worker of waiting) send(worker, { type: 'oci-mirror:metrics-collect', id }, () => collections.get(id)?.drop(worker));
      finishIfDone();
    });
  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!isMessage(message)) return;
    if (message.type === 'oci-mirror:metrics-snapshot') collections.get(message.id)?.add(worker, message.snapshot);
    if (message.type !== 'oci-mirror:metrics-ask') return;
    const { id } = message;
    collect().then(
      (text) => send(worker, { type: 'oci-mirror:metrics-answer', id, text }),
      (err: unknown) => {
        log.warn({ err }, 'worker metrics not collected');
        send(worker, { type: 'oci-mirror:metrics-answer', id, error: (err as Error).message });
      },
    );
  });
}

/** A worker's part: `exposition` for its runtime, and `share` once its metrics exist (before it listens). */
export interface WorkerGroupMetrics {
  exposition(): Promise<string>;
  share(metrics: Metrics): void;
}

/** In a worker: asks the primary for the group's exposition, and answers its requests for snapshots. */
export function joinGroupMetrics(): WorkerGroupMetrics {
  let nextId = 0;
  const pending = new Map<number, (answer: { text?: string; error?: string }) => void>();
  process.on('message', (message: unknown) => {
    if (isMessage(message) && message.type === 'oci-mirror:metrics-answer') pending.get(message.id)?.(message);
  });
  return {
    exposition: () =>
      new Promise<string>((resolve, reject) => {
        const id = nextId++;
        const settle = (answer: { text?: string; error?: string }): void => {
          clearTimeout(timer);
          pending.delete(id);
          if (answer.text !== undefined) resolve(answer.text);
          else reject(new GroupMetricsUnavailable(`the primary did not collect the workers' metrics: ${answer.error ?? 'unknown error'}`));
        };
        const timer = setTimeout(() => settle({ error: `no answer within ${ASK_TIMEOUT_MS} ms` }), ASK_TIMEOUT_MS);
        pending.set(id, settle);
        send(process, { type: 'oci-mirror:metrics-ask', id }, () => settle({ error: 'the IPC channel is closed' }));
      }),
    share(metrics) {
      process.on('message', (message: unknown) => {
        if (!isMessage(message) || message.type !== 'oci-mirror:metrics-collect') return;
        const { id } = message;
        // getMetricsAsJSON runs the gauges' collect functions, which do not fail.
        void snapshotMetrics(metrics).then((snapshot) => send(process, { type: 'oci-mirror:metrics-snapshot', id, snapshot }));
      });
    },
  };
}

interface Channel {
  send?: (message: Message, handle: undefined, options: undefined, callback: (err: Error | null) => void) => boolean;
}

/** Sends over IPC; `onFailure` when the channel is closed (the peer is exiting). */
function send(to: Worker | NodeJS.Process, message: Message, onFailure: () => void = () => undefined): void {
  const channel = to as Channel;
  if (!channel.send) return onFailure();
  channel.send(message, undefined, undefined, (err) => {
    if (err) onFailure();
  });
}

function isMessage(message: unknown): message is Message {
  const type = (message as { type?: unknown } | null)?.type;
  return typeof type === 'string' && type.startsWith('oci-mirror:metrics-');
}
