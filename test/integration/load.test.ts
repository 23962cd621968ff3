import { createCipheriv, createHash } from 'node:crypto';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, gatedBlob, servedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { CLIENT_MANIFEST_ACCEPT } from '../support/http.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror.js';
import { freePort } from '../support/ports.js';
import { expectNoTempFiles } from '../support/store.js';

/**
 * Load and soak: CONNECTIONS clients, each on its own keep-alive connection, pull a mix
 * of hits and misses from the mirror (a child process, as users run it) for SECONDS,
 * verifying every body against its digest. Then: zero errors, zero corrupt bodies, one
 * upstream fetch per missed digest, RSS flat after warm-up, every descriptor the load
 * opened closed again; and SIGTERM lets responses in flight finish.
 *
 * LOAD_SECONDS (default 20, at most 60) and LOAD_CONNECTIONS (default 500) tune it.
 */
const SECONDS = Math.min(60, Math.max(3, Number(process.env.LOAD_SECONDS ?? 20)));
const CONNECTIONS = Math.min(2000, Math.max(1, Number(process.env.LOAD_CONNECTIONS ?? 500)));
const REPO = 'load/app';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MIB = 1 << 20;

/** A deterministic pseudo-random sequence (mulberry32), so a failing mix can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function keystream(label: string, sizeBytes: number): Buffer {
  const key = createHash('sha256').update(label).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(sizeBytes));
}

/** Cold blob `i`: 4–64 KiB, every 50th 1–2 MiB (a fill many clients join). Regenerated on demand. */
function coldBlob(i: number): Buffer {
  const sizeBytes = i % 50 === 49 ? MIB + (i % 8) * 128 * 1024 : 4096 + ((i * 7919) % 61_440);
  return keystream(`cold-${i}`, sizeBytes);
}

interface Stats {
  requests: number;
  errors: number;
  corrupt: number;
  bytes: number;
  readonly byKind: Record<string, number>;
  readonly samples: string[];
}

interface Fetched {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly sha256: string;
  readonly bytes: number;
}

async function fetchOn(
  client: Client,
  path: string,
  method: 'GET' | 'HEAD' = 'GET',
  headers: Record<string, string | string[]> = {},
): Promise<Fetched> {
  const response = await client.request({ path, method, headers });
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { status: response.statusCode, headers: response.headers, sha256: `sha256:${hash.digest('hex')}`, bytes };
}

async function fdsOf(pid: number): Promise<{ fds: number; sockets: number }> {
  const entries = await readdir(`/proc/${pid}/fd`);
  const targets = await Promise.all(entries.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
  return { fds: entries.length, sockets: targets.filter((t) => t.startsWith('socket:')).length };
}

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/**
 * Polls until the process holds at most `fds` descriptors, bounded: sockets close when
 * the peer's FIN arrives, and /proc sends no event. Returns the last count.
 */
async function settleFds(
  pid: number,
  limit: { fds: number; sockets: number },
  timeoutMs: number,
): Promise<{ fds: number; sockets: number }> {
  const deadline = Date.now() + timeoutMs;
  let now = await fdsOf(pid);
  while ((now.fds > limit.fds || now.sockets > limit.sockets) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    now = await fdsOf(pid);
  }
  return now;
}

describe('load and soak', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorProcess;
  const hot: { digest: string; body: Buffer }[] = [];
  let manifest: Buffer;
  let manifestDigest: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    for (let i = 0; i < 16; i++) {
      const body = keystream(`hot-${i}`, i === 15 ? 4 * MIB : 4 * 1024 + i * 24 * 1024);
      const digest = digestOf(body);
      hot.push({ digest, body });
      upstream.setBlob(digest, servedBlob(body));
    }
    manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: hot[0]!.digest, size: hot[0]!.body.length },
        layers: hot
          .slice(1)
          .map((h) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: h.digest, size: h.body.length })),
      }),
    );
    manifestDigest = digestOf(manifest);
    const manifestHeaders = { 'content-type': OCI_MANIFEST, 'docker-content-digest': manifestDigest };
    upstream.setPath(`${REPO}/manifests/v1`, servedBlob(manifest, manifestHeaders));
    upstream.setPath(`${REPO}/manifests/${manifestDigest}`, servedBlob(manifest, manifestHeaders));
    mirror = await startMirrorProcess({ upstreams: { 'fake.test': { url: upstream.url } } }, await freePort());
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
  });

  it(`serves ${CONNECTIONS} concurrent connections of hits and misses for ${SECONDS} s: no error, no corrupt body, no leak`, async () => {
    // Warm-up: every hot blob and the manifest are in the store before the load starts.
    const warm = new Client(mirror.url);
    for (const { digest } of hot) expect((await fetchOn(warm, `/v2/${REPO}/blobs/${digest}`)).sha256).toBe(digest);
    expect((await fetchOn(warm, `/v2/${REPO}/manifests/v1`, 'GET', { accept: CLIENT_MANIFEST_ACCEPT })).sha256).toBe(manifestDigest);
    await warm.close();
    const fdsBefore = await settleFds(mirror.pid, { fds: 0, sockets: 0 }, 0);
    const rssBefore = await rssOf(mirror.pid);

    const stats: Stats = { requests: 0, errors: 0, corrupt: 0, bytes: 0, byKind: {}, samples: [] };
    const coldDigests = new Map<number, string>();
    const recentCold: number[] = [];
    let nextCold = 0;
    const coldDigest = (i: number): string => {
      let digest = coldDigests.get(i);
      if (digest === undefined) {
        digest = digestOf(coldBlob(i));
        coldDigests.set(i, digest);
        upstream.setBlob(digest, (req, res) => servedBlob(coldBlob(i))(req, res));
      }
      return digest;
    };

    const check = (kind: string, ok: boolean, detail: () => string): void => {
      stats.requests++;
      stats.byKind[kind] = (stats.byKind[kind] ?? 0) + 1;
      if (!ok) {
        stats.corrupt++;
        if (stats.samples.length < 10) stats.samples.push(`${kind}: ${detail()}`);
      }
    };

    async function one(client: Client, rng: () => number): Promise<void> {
      const roll = rng();
      const h = hot[Math.floor(rng() * hot.length)]!;
      if (roll < 0.55) {
        const res = await fetchOn(client, `/v2/${REPO}/blobs/${h.digest}`);
        stats.bytes += res.bytes;
        return check(
          'hit',
          res.status === 200 && res.sha256 === h.digest && res.bytes === h.body.length,
          () => `${res.status} ${res.sha256}`,
        );
      }
      if (roll < 0.65) {
        const start = Math.floor(rng() * h.body.length);
        const end = Math.min(h.body.length - 1, start + Math.floor(rng() * 256 * 1024));
        const res = await fetchOn(client, `/v2/${REPO}/blobs/${h.digest}`, 'GET', { range: `bytes=${start}-${end}` });
        stats.bytes += res.bytes;
        return check(
          'range',
          res.status === 206 && res.sha256 === digestOf(h.body.subarray(start, end + 1)),
          () => `${res.status} ${start}-${end}`,
        );
      }
      if (roll < 0.67) {
        const res = await fetchOn(client, `/v2/${REPO}/blobs/${h.digest}`, 'HEAD');
        return check(
          'head',
          res.status === 200 &&
            res.headers['content-length'] === String(h.body.length) &&
            res.headers['docker-content-digest'] === h.digest,
          () => String(res.status),
        );
      }
      if (roll < 0.8) {
        const res = await fetchOn(client, `/v2/${REPO}/manifests/${rng() < 0.5 ? 'v1' : manifestDigest}`, 'GET', {
          accept: CLIENT_MANIFEST_ACCEPT,
        });
        return check('manifest', res.status === 200 && res.sha256 === manifestDigest, () => `${res.status} ${res.sha256}`);
      }
      // Misses: a digest never asked for, or one asked for lately (a fill to join, or a fresh hit).
      const fresh = roll < 0.9 || recentCold.length === 0;
      const i = fresh ? nextCold++ : recentCold[Math.floor(rng() * recentCold.length)]!;
      if (fresh) {
        recentCold.push(i);
        if (recentCold.length > 64) recentCold.shift();
      }
      const digest = coldDigest(i);
      const res = await fetchOn(client, `/v2/${REPO}/blobs/${digest}`);
      stats.bytes += res.bytes;
      return check(fresh ? 'miss' : 'recent', res.status === 200 && res.sha256 === digest, () => `${res.status} ${res.sha256}`);
    }

    const cpuOf = async (pid: number): Promise<number> => {
      const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
      return (Number(fields[11]) + Number(fields[12])) / 100;
    };
    const cpuBefore = await cpuOf(mirror.pid);
    const ownCpuBefore = process.cpuUsage();
    const startedMs = performance.now();
    const deadline = startedMs + SECONDS * 1000;
    // Many machines, as a mirror sees them: 50 connections per loopback address, under
    // the default listen.maxRequestsPerClient (64) that a single address would exceed.
    const clients = Array.from(
      { length: CONNECTIONS },
      (_, id) => new Client(mirror.url, { pipelining: 1, localAddress: `127.0.1.${1 + Math.floor(id / 50)}` }),
    );
    const rss: { atS: number; bytes: number }[] = [];
    const sampler = setInterval(() => {
      void rssOf(mirror.pid).then(
        (bytes) => rss.push({ atS: (performance.now() - startedMs) / 1000, bytes }),
        () => undefined,
      );
    }, 1000);
    // undici closes its connection after every HEAD (undici#258), so the mirror sees some
    // churn; concurrency is measured as requests in flight.
    let peakSockets = 0;
    let inFlight = 0;
    let peakInFlight = 0;
    const connectionProbe = setInterval(() => {
      void fdsOf(mirror.pid).then(
        (f) => (peakSockets = Math.max(peakSockets, f.sockets)),
        () => undefined,
      );
    }, 2000);
    try {
      await Promise.all(
        clients.map(async (client, id) => {
          const rng = random(id + 1);
          while (performance.now() < deadline) {
            try {
              peakInFlight = Math.max(peakInFlight, ++inFlight);
              await one(client, rng);
            } catch (err) {
              stats.requests++;
              stats.errors++;
              if (stats.samples.length < 10) stats.samples.push(`error: ${String(err)}`);
            } finally {
              inFlight--;
            }
          }
        }),
      );
    } finally {
      clearInterval(sampler);
      clearInterval(connectionProbe);
    }
    const elapsedS = (performance.now() - startedMs) / 1000;
    const rssEnd = await rssOf(mirror.pid);
    await Promise.all(clients.map((c) => c.close()));
    const fdsAfter = await settleFds(mirror.pid, fdsBefore, 15_000);

    // Flat after warm-up: the last third of the run against the samples of its first third.
    const warmedUp = rss.filter((s) => s.atS >= SECONDS / 3 && s.atS < (SECONDS * 2) / 3).map((s) => s.bytes);
    const late = rss.filter((s) => s.atS >= (SECONDS * 2) / 3).map((s) => s.bytes);
    const rssWarm = Math.max(...warmedUp, 0);
    const rssLate = Math.max(...late, rssEnd);
    const upstreamGets = new Map<string, number>();
    for (const hit of upstream.hits) if (hit.method === 'GET') upstreamGets.set(hit.path, (upstreamGets.get(hit.path) ?? 0) + 1);
    const refetched = [...coldDigests.values()].filter((d) => (upstreamGets.get(`/v2/${REPO}/blobs/${d}`) ?? 0) !== 1);
    const report = {
      connections: CONNECTIONS,
      seconds: Math.round(elapsedS * 10) / 10,
      requests: stats.requests,
      requestsPerSecond: Math.round(stats.requests / elapsedS),
      errors: stats.errors,
      corrupt: stats.corrupt,
      byKind: stats.byKind,
      servedMiB: Math.round(stats.bytes / MIB),
      coldDigests: coldDigests.size,
      peakInFlight,
      peakSockets,
      rssMiB: { before: rssBefore / MIB, warm: rssWarm / MIB, late: rssLate / MIB, end: rssEnd / MIB },
      fds: { before: fdsBefore, after: fdsAfter },
      samples: stats.samples,
      cpuSeconds: {
        mirror: (await cpuOf(mirror.pid)) - cpuBefore,
        tests: (process.cpuUsage(ownCpuBefore).user + process.cpuUsage(ownCpuBefore).system) / 1e6,
      },
    };
    console.log(`load: ${JSON.stringify(report)}`);

    expect(stats.samples).toEqual([]);
    expect(stats.errors).toBe(0);
    expect(stats.corrupt).toBe(0);
    expect(stats.requests).toBeGreaterThan(CONNECTIONS * 2);
    expect(peakInFlight).toBe(CONNECTIONS);
    expect(stats.byKind['miss'] ?? 0).toBeGreaterThan(50);
    expect(refetched).toEqual([]);
    expect(warmedUp.length).toBeGreaterThan(0);
    expect(rssLate).toBeLessThan(rssWarm * 1.25 + 32 * MIB);
    expect(fdsAfter.fds).toBeLessThanOrEqual(fdsBefore.fds);
    expect(fdsAfter.sockets).toBeLessThanOrEqual(fdsBefore.sockets);
    await expectNoTempFiles(mirror.storeDir, 10_000);
  });

  it('on SIGTERM stops taking connections, finishes the responses in flight, commits the fill, and exits 0', async () => {
    const big = keystream('shutdown-big', 8 * MIB);
    const bigDigest = digestOf(big);
    const gated = gatedBlob(big, MIB);
    upstream.setBlob(bigDigest, gated.handler);
    const largestHot = hot[hot.length - 1]!;
    const clients = Array.from({ length: 12 }, () => new Client(mirror.url));
    // 8 clients on a fill the upstream holds half-way; 4 on a cache hit they do not read yet.
    const inFlight = await Promise.all(
      clients.map((client, i) =>
        client.request({ path: `/v2/${REPO}/blobs/${i < 8 ? bigDigest : largestHot.digest}`, method: 'GET' }).then((response) => ({
          response,
          expected: i < 8 ? bigDigest : largestHot.digest,
        })),
      ),
    );
    await gated.started;
    for (const { response } of inFlight) expect(response.statusCode).toBe(200);

    process.kill(mirror.pid, 'SIGTERM');
    await mirror.waitForOutput('"shutting down"');
    // New work is refused: no connection, a connection closed unanswered, or a 503.
    const late = new Client(mirror.url);
    const refused = await late.request({ path: `/v2/${REPO}/blobs/${largestHot.digest}`, method: 'GET' }).then(
      async (r) => {
        await r.body.dump();
        return r.statusCode;
      },
      (err: unknown) => (err as NodeJS.ErrnoException).code,
    );
    expect(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 503]).toContain(refused);
    await late.destroy();

    gated.finish();
    const bodies = await Promise.all(
      inFlight.map(async ({ response, expected }) => {
        const hash = createHash('sha256');
        for await (const chunk of response.body as AsyncIterable<Buffer>) hash.update(chunk);
        return { actual: `sha256:${hash.digest('hex')}`, expected };
      }),
    );
    for (const { actual, expected } of bodies) expect(actual).toBe(expected);
    await Promise.all(clients.map((c) => c.close()));

    const code = await Promise.race([mirror.exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 15_000))]);
    expect(code).toBe(0);
    expect(mirror.output()).toContain('"stopped"');
    const hex = bigDigest.slice('sha256:'.length);
    expect((await stat(join(mirror.storeDir, 'blobs', 'sha256', hex.slice(0, 2), hex))).size).toBe(big.length);
  });
});
