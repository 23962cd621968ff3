// @ts-check
/**
 * One bcrypt comparison at a time, off the main thread (see password-pool.ts).
 * Plain JavaScript so the same file runs beside the TypeScript sources (tests) and
 * beside the compiled code in dist/ (the build copies it there).
 */
import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

if (parentPort === null) throw new Error('password-worker.mjs runs only as a worker thread');
const port = parentPort;
port.on('message', (/** @type {{ id: number, password: string, hash: string }} */ job) => {
  port.postMessage({ id: job.id, ok: bcrypt.compareSync(job.password, job.hash) });
});
