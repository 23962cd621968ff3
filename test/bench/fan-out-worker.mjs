// @ts-check
/**
 * One thread of the cold fan-out client (a worker thread: hashing 50 × 100 MiB is more
 * than one core, and the clients must not be what the servers wait on). It starts its
 * share of the requests at once, hashes every body as it streams, and reports per client
 * the time to the first body byte, the time to the verified end, and whether the bytes
 * were the blob's. It says 'ready' once loaded and starts on the parent's `{ startAt }`;
 * times are ms since then, on the clock threads share (`performance.timeOrigin + now()`).
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { Agent, request } from 'undici';

/** @type {{ url: string, clients: number, digest: string, sizeBytes: number }} */
const { url, clients, digest, sizeBytes } = workerData;
const agent = new Agent({ connections: clients, bodyTimeout: 120_000, headersTimeout: 120_000 });
let startAt = 0;
const now = () => performance.timeOrigin + performance.now() - startAt;

async function one() {
  try {
    const res = await request(url, { dispatcher: agent });
    const hash = createHash('sha256');
    let firstByteMs = -1;
    let bytes = 0;
    for await (const chunk of res.body) {
      if (firstByteMs < 0) firstByteMs = now();
      hash.update(chunk);
      bytes += chunk.length;
    }
    const ok = res.statusCode === 200 && bytes === sizeBytes && `sha256:${hash.digest('hex')}` === digest;
    return { firstByteMs, doneMs: now(), ok, status: res.statusCode, bytes };
  } catch (err) {
    return { firstByteMs: -1, doneMs: now(), ok: false, status: 0, bytes: 0, error: String(err) };
  }
}

startAt = await new Promise((resolve) => {
  parentPort?.once('message', (/** @type {{ startAt: number }} */ go) => resolve(go.startAt));
  parentPort?.postMessage('ready');
});
const results = await Promise.all(Array.from({ length: clients }, one));
await agent.close();
parentPort?.postMessage(results);
