import { execFile } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { Agent, request } from 'undici';
import { CLIENT_MANIFEST_ACCEPT } from '../support/http.js';

const run = promisify(execFile);

/** The manifest Accept list as Docker and containers/image send it, joined on one line (wrk sends one). */
export const MANIFEST_ACCEPT = CLIENT_MANIFEST_ACCEPT.join(', ');

interface ClientResult {
  readonly firstByteMs: number;
  readonly doneMs: number;
  readonly ok: boolean;
  readonly status: number;
  readonly bytes: number;
  readonly error?: string;
}

export interface FanOutResult {
  readonly firstByteMs: readonly number[];
  /** Until the last body was complete and its sha256 checked. */
  readonly wallMs: number;
  readonly failures: readonly ClientResult[];
}

/** `clients` GETs of one blob at once, split over `threads` worker threads, every body verified. */
export async function fanOut(url: string, digest: string, sizeBytes: number, clients: number, threads = 2): Promise<FanOutResult> {
  const shares = Array.from({ length: threads }, (_, i) => Math.floor(clients / threads) + (i < clients % threads ? 1 : 0));
  const workers = shares.map(
    (share) => new Worker(new URL('./fan-out-worker.mjs', import.meta.url), { workerData: { url, clients: share, digest, sizeBytes } }),
  );
  await Promise.all(workers.map((w) => new Promise((resolve, reject) => w.once('message', resolve).once('error', reject))));
  const startAt = performance.timeOrigin + performance.now();
  const done = workers.map((w) => new Promise<ClientResult[]>((resolve, reject) => w.once('message', resolve).once('error', reject)));
  for (const w of workers) w.postMessage({ startAt });
  const results = (await Promise.all(done)).flat();
  await Promise.all(workers.map((w) => w.terminate()));
  return {
    firstByteMs: results.map((r) => r.firstByteMs),
    wallMs: Math.max(...results.map((r) => r.doneMs)),
    failures: results.filter((r) => !r.ok),
  };
}

const agent = new Agent({ connections: 8 });

/** One GET or HEAD; the body is read and dropped. Throws unless 200. */
export async function fetchOk(url: string, method: 'GET' | 'HEAD' = 'GET', headers: Record<string, string> = {}): Promise<number> {
  const res = await request(url, { method, headers, dispatcher: agent });
  let bytes = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) bytes += chunk.length;
  if (res.statusCode !== 200) throw new Error(`${method} ${url}: ${res.statusCode}`);
  return bytes;
}

/** What a pulled image is made of, as the pulls below request it. */
export interface PullPaths {
  /** e.g. `bench/app` (or `stale.local/bench/app` to route by prefix). */
  readonly name: string;
  readonly tag: string;
  readonly manifestDigest: string;
  readonly blobs: readonly string[];
}

/**
 * One pull as containerd makes it once the blobs are on disk: `GET /v2/`, `HEAD` the
 * tag, `GET` the manifest by digest, then the config and layers.
 */
export async function pullOnce(baseUrl: string, image: PullPaths): Promise<void> {
  const accept = { accept: MANIFEST_ACCEPT };
  await fetchOk(`${baseUrl}/v2/`);
  await fetchOk(`${baseUrl}/v2/${image.name}/manifests/${image.tag}`, 'HEAD', accept);
  await fetchOk(`${baseUrl}/v2/${image.name}/manifests/${image.manifestDigest}`, 'GET', accept);
  for (const blob of image.blobs) await fetchOk(`${baseUrl}/v2/${image.name}/blobs/${blob}`);
}

/**
 * `skopeo copy docker://… dir:…` as test/support/skopeo.ts runs it (accept-all policy, no
 * registries.conf, plain HTTP to loopback), with its config written once under `dir`.
 */
export async function createSkopeo(dir: string): Promise<(host: string, image: string) => Promise<number>> {
  const conf = join(dir, 'skopeo');
  await mkdir(conf, { recursive: true });
  await writeFile(join(conf, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(join(conf, 'registries.conf'), '');
  await writeFile(join(conf, 'auth.json'), '{}');
  const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: join(conf, 'registries.conf'), REGISTRY_AUTH_FILE: join(conf, 'auth.json') };
  let pulls = 0;
  /** One pull (skopeo checks every digest); answers its wall time in ms. */
  return async (host, image) => {
    const dest = join(dir, `pull-${pulls++}`);
    const args = ['--policy', join(conf, 'policy.json'), 'copy', '--src-tls-verify=false', `docker://${host}/${image}`, `dir:${dest}`];
    const started = performance.now();
    await run('skopeo', args, { env, timeout: 120_000 }).catch((err: { stderr?: string }) => {
      throw new Error(`skopeo copy ${host}/${image} failed: ${err.stderr ?? (err as Error).message}`);
    });
    const ms = performance.now() - started;
    await rm(dest, { recursive: true, force: true });
    return ms;
  };
}
