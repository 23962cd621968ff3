/**
 * bcrypt comparisons on a small pool of worker threads. bcryptjs is JavaScript: each
 * comparison holds its thread for the whole cost (~95 ms at cost 10), so on the main
 * thread a burst of wrong passwords stalled every other request. Workers start on the
 * first comparison and are unref'd: an idle pool keeps no process alive.
 */
import { Worker } from 'node:worker_threads';

export interface PasswordPool {
  /** Whether `password` matches the bcrypt `hash`; one comparison on a worker thread. */
  compare(password: string, hash: string): Promise<boolean>;
  close(): Promise<void>;
}

interface Job {
  readonly id: number;
  readonly password: string;
  readonly hash: string;
  readonly settle: (ok: boolean | Error) => void;
}

const WORKER_FILE = new URL('./password-worker.mjs', import.meta.url);

export function createPasswordPool(size = 2): PasswordPool {
  const idle: Worker[] = [];
  const busy = new Map<Worker, Job>();
  const queue: Job[] = [];
  let started = 0;
  let nextId = 0;
  let closed = false;

  function spawn(): Worker {
    const worker = new Worker(WORKER_FILE);
    worker.unref();
    worker.on('message', (reply: { id: number; ok: boolean }) => {
      const job = busy.get(worker);
      busy.delete(worker);
      if (job?.id === reply.id) job.settle(reply.ok);
      release(worker);
    });
    worker.on('error', (err) => {
      // A worker that fails takes its one job with it; the next job gets a fresh worker.
      busy.get(worker)?.settle(err);
      busy.delete(worker);
      started -= 1;
      pump();
    });
    started += 1;
    return worker;
  }

  function release(worker: Worker): void {
    idle.push(worker);
    pump();
  }

  function pump(): void {
    while (queue.length > 0 && !closed) {
      const worker = idle.pop() ?? (started < size ? spawn() : undefined);
      if (worker === undefined) return;
      const job = queue.shift() as Job;
      busy.set(worker, job);
      worker.postMessage({ id: job.id, password: job.password, hash: job.hash });
    }
  }

  return {
    compare(password, hash) {
      if (closed) return Promise.reject(new Error('password pool closed'));
      return new Promise((resolve, reject) => {
        const settle = (ok: boolean | Error): void => (typeof ok === 'boolean' ? resolve(ok) : reject(ok));
        queue.push({ id: nextId++, password, hash, settle });
        pump();
      });
    },
    async close() {
      closed = true;
      for (const job of queue.splice(0)) job.settle(new Error('password pool closed'));
      for (const job of busy.values()) job.settle(new Error('password pool closed'));
      const workers = [...idle, ...busy.keys()];
      idle.length = 0;
      busy.clear();
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
