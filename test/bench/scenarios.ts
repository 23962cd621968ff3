import { FRESH_UPSTREAM, STALE_UPSTREAM, accessMark, accessSince, type Server, type SystemName, type Upstream } from './systems.js';
import { MANIFEST_ACCEPT, fanOut, fetchOk, pullOnce, type PullPaths } from './clients.js';
import { cpuSeconds, peakRssBytes, resetPeakRss } from './proc.js';
import { BLOB_BYTES, type Seeded } from './seed.js';
import { runWrk, type WrkResult } from './wrk.js';
import { fetchHashed } from '../support/http.js';
import type { Metric, Scenario, Target } from './report.js';

/** What every scenario may use. */
export interface BenchContext {
  readonly servers: Readonly<Record<SystemName, Server>>;
  readonly upstream: Upstream;
  readonly seeded: Seeded;
  readonly wrkScript: string;
  /** Length of each wrk run. */
  readonly seconds: number;
  readonly skopeo: (host: string, image: string) => Promise<number>;
}

const MBPS: Metric = { key: 'mbps', label: 'MB/s', better: 'higher', digits: 0 };
const CPU_PER_GB: Metric = { key: 'cpuPerGb', label: 'server CPU-s/GB', better: 'lower', digits: 3 };
const RPS: Metric = { key: 'rps', label: 'req/s', better: 'higher', digits: 0 };
const P99: Metric = { key: 'p99Ms', label: 'p99 ms', better: 'lower', digits: 1 };
const ALL: readonly SystemName[] = ['ours', 'ours-w2', 'distribution', 'nginx'];

/** ours ≥ `times` × Distribution's median. */
function atLeast(metric: string, times: number, text: string): Target {
  return { metric, text, op: '>=', goal: (m) => times * (m['distribution'] ?? Number.NaN) };
}
function atMost(metric: string, limit: number, text = `≤ ${limit}`): Target {
  return { metric, text, op: '<=', goal: () => limit };
}

/** Server CPU over a wrk run, per GB it served. */
async function wrkWithCpu(ctx: BenchContext, system: SystemName, run: () => Promise<WrkResult>) {
  const pids = await ctx.servers[system].pids();
  const before = await cpuSeconds(pids);
  const result = await run();
  const cpu = (await cpuSeconds(pids)) - before;
  if (result.statusErrors > 0 || result.socketErrors > 0) {
    throw new Error(`${system}: wrk saw ${result.statusErrors} bad statuses and ${result.socketErrors} socket errors`);
  }
  return { result, cpu };
}

function warmBlob(connections: number): Scenario<BenchContext> {
  return {
    id: `warm-blob-${connections}`,
    title: `Warm blob, ${connections} client${connections > 1 ? 's' : ''} (100 MiB)`,
    systems: [...ALL, 'ours-front'],
    metrics: [MBPS, CPU_PER_GB],
    targets: [
      atLeast('mbps', 1, '≥ Distribution'),
      atMost('cpuPerGb', 0.25),
      // Issue 15: the front sends hits with sendfile; nginx's and the mirror's CPU together.
      { system: 'ours-front', metric: 'cpuPerGb', text: '≤ 1.5× nginx', op: '<=', goal: (m) => 1.5 * (m['nginx'] ?? Number.NaN) },
    ],
    async measure(ctx, system) {
      const { repository, digest } = ctx.seeded.warmBlob;
      const url = `${ctx.servers[system].url}/v2/${repository}/blobs/${digest}`;
      const threads = Math.min(connections, 2);
      const { result, cpu } = await wrkWithCpu(ctx, system, () =>
        runWrk(ctx.wrkScript, { url, connections, threads, seconds: ctx.seconds }),
      );
      return { mbps: result.bytes / result.seconds / 1e6, cpuPerGb: cpu / (result.bytes / 1e9) };
    },
  };
}

function manifest(by: 'digest' | 'tag'): Scenario<BenchContext> {
  const times = by === 'digest' ? 2.5 : 8;
  return {
    id: `manifest-${by}`,
    title: `Warm manifest by ${by === 'digest' ? 'digest' : 'fresh tag'}, 64 connections`,
    // nginx only knows files by digest.
    systems: by === 'digest' ? ALL : ALL.filter((s) => s !== 'nginx'),
    metrics: [RPS, P99, { key: 'cpuPerKReq', label: 'server CPU-s/1k req', better: 'lower', digits: 3 }],
    targets: [atLeast('rps', times, `≥ ${times}× Distribution`)],
    async measure(ctx, system) {
      const { name, tag, manifestDigest } = ctx.seeded.app;
      const url = `${ctx.servers[system].url}/v2/${name}/manifests/${by === 'digest' ? manifestDigest : tag}`;
      const options = { url, connections: 64, threads: 1, seconds: ctx.seconds, headers: { accept: MANIFEST_ACCEPT } };
      const { result, cpu } = await wrkWithCpu(ctx, system, () => runWrk(ctx.wrkScript, options));
      return { rps: result.requests / result.seconds, p99Ms: result.p99Ms, cpuPerKReq: cpu / (result.requests / 1000) };
    },
  };
}

function nearestRank(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;
}

const coldFanOut: Scenario<BenchContext> = {
  id: 'cold-fan-out',
  title: 'Cold miss fan-out: 50 clients, one uncached 100 MiB blob',
  // ours-sharded: three replicas with their own stores behind deploy/nginx/sharded.conf.
  systems: ['ours', 'ours-sharded', 'distribution'],
  metrics: [
    { key: 'upstreamX', label: 'upstream bytes (× blob)', better: 'lower', digits: 2 },
    { key: 'upstreamGets', label: 'upstream GETs of the blob', better: 'lower', digits: 0 },
    { key: 'mbps', label: 'MB/s to the 50 clients', better: 'higher', digits: 0 },
    { key: 'ttfbP50Ms', label: 'TTFB p50 ms', better: 'lower', digits: 0 },
    { key: 'ttfbP99Ms', label: 'TTFB p99 ms', better: 'lower', digits: 0 },
    { key: 'wallS', label: 'wall s (all 50 verified)', better: 'lower', digits: 2 },
    { key: 'peakRssMiB', label: 'peak RSS MiB', better: 'lower', digits: 0 },
  ],
  targets: [
    { metric: 'upstreamX', text: '= 1.0', op: '=', goal: () => 1 },
    { system: 'ours-sharded', metric: 'upstreamGets', text: '= 1', op: '=', goal: () => 1 },
    atMost('ttfbP99Ms', 150),
    { metric: 'wallS', text: '≤ 0.5× Distribution', op: '<=', goal: (m) => 0.5 * (m['distribution'] ?? Number.NaN) },
    atMost('peakRssMiB', 150),
  ],
  async measure(ctx, system, round) {
    const blob = ctx.seeded.coldBlobs[round];
    if (!blob) throw new Error(`no cold blob for round ${round}`);
    const server = ctx.servers[system];
    const pids = await server.pids();
    await resetPeakRss(pids);
    const mark = await accessMark(ctx.upstream);
    const url = `${server.url}/v2/${blob.repository}/blobs/${blob.digest}`;
    const result = await fanOut(url, blob.digest, BLOB_BYTES, 50);
    if (result.failures.length > 0)
      throw new Error(`${system}: ${result.failures.length} clients got wrong bytes: ${JSON.stringify(result.failures[0])}`);
    const peak = await peakRssBytes(pids);
    const fetched = (await accessSince(ctx.upstream, mark)).filter((e) => e.method === 'GET' && e.path.endsWith(blob.digest));
    return {
      upstreamX: fetched.reduce((sum, e) => sum + e.bytes, 0) / BLOB_BYTES,
      upstreamGets: fetched.length,
      mbps: (50 * BLOB_BYTES) / (result.wallMs / 1000) / 1e6,
      ttfbP50Ms: nearestRank(result.firstByteMs, 0.5),
      ttfbP99Ms: nearestRank(result.firstByteMs, 0.99),
      wallS: result.wallMs / 1000,
      peakRssMiB: peak / 1024 / 1024,
    };
  },
};

const imagePull: Scenario<BenchContext> = {
  id: 'skopeo-pull',
  title: 'Full image pull with skopeo (3 layers, 120 MiB)',
  systems: ['ours', 'distribution'],
  metrics: [
    { key: 'coldS', label: 'cold wall s', better: 'lower', digits: 2 },
    { key: 'warmS', label: 'warm wall s', better: 'lower', digits: 2 },
  ],
  targets: [],
  async measure(ctx, system, round) {
    const image = ctx.seeded.pullImages[round];
    if (!image) throw new Error(`no image for round ${round}`);
    const { host } = ctx.servers[system];
    const coldMs = await ctx.skopeo(host, image);
    const warmMs = await ctx.skopeo(host, image);
    return { coldS: coldMs / 1000, warmS: warmMs / 1000 };
  },
};

const PULLS = 100;

/** Upstream requests for 100 pulls of one tag; `stale` routes ours through `freshFor: 0s`. */
function tagPulls(window: 'fresh' | 'stale'): Scenario<BenchContext> {
  const image = (ctx: BenchContext, system: SystemName): PullPaths =>
    window === 'stale' && system === 'ours' ? { ...ctx.seeded.app, name: `${STALE_UPSTREAM}/${ctx.seeded.app.name}` } : ctx.seeded.app;
  return {
    id: `tag-pulls-${window}`,
    title:
      window === 'fresh'
        ? `${PULLS} pulls of one tag within the freshness window (ours: ${FRESH_UPSTREAM}, freshFor 1h)`
        : `${PULLS} pulls of one tag after the freshness window (ours: ${STALE_UPSTREAM}, freshFor 0s)`,
    systems: ['ours', 'distribution'],
    metrics: [
      { key: 'upstreamRequests', label: `upstream requests / ${PULLS} pulls`, better: 'lower', digits: 0 },
      { key: 'upstreamGets', label: `of which GET`, better: 'lower', digits: 0 },
    ],
    targets: window === 'fresh' ? [{ metric: 'upstreamRequests', text: '= 0', op: '=', goal: () => 0 }] : [],
    async prepare(ctx, system) {
      await pullOnce(ctx.servers[system].url, image(ctx, system));
    },
    async measure(ctx, system) {
      const mark = await accessMark(ctx.upstream);
      for (let i = 0; i < PULLS; i++) await pullOnce(ctx.servers[system].url, image(ctx, system));
      const entries = await accessSince(ctx.upstream, mark);
      return { upstreamRequests: entries.length, upstreamGets: entries.filter((e) => e.method === 'GET').length };
    },
  };
}

/** Every scenario, in the order they run. */
export const SCENARIOS: readonly Scenario<BenchContext>[] = [
  warmBlob(1),
  warmBlob(16),
  manifest('digest'),
  manifest('tag'),
  coldFanOut,
  imagePull,
  tagPulls('fresh'),
  tagPulls('stale'),
];

/** Makes every system hold the warm blob and the small image before anything is timed. */
export async function primeWarm(ctx: BenchContext, systems: readonly SystemName[]): Promise<void> {
  const { repository, digest } = ctx.seeded.warmBlob;
  const { name, tag, manifestDigest, blobs } = ctx.seeded.app;
  for (const system of systems) {
    const { url } = ctx.servers[system];
    // Twice: Distribution serves the first GET while it stores the blob. wrk checks no
    // bytes, so each system's bytes are checked here once.
    for (let i = 0; i < 2; i++) {
      const got = await fetchHashed(`${url}/v2/${repository}/blobs/${digest}`);
      if (got.status !== 200 || got.sha256 !== digest) throw new Error(`${system} served ${got.status} ${got.sha256} for ${digest}`);
    }
    if (system === 'nginx') continue;
    await fetchOk(`${url}/v2/${name}/manifests/${tag}`, 'GET', { accept: MANIFEST_ACCEPT });
    await fetchOk(`${url}/v2/${name}/manifests/${manifestDigest}`, 'GET', { accept: MANIFEST_ACCEPT });
    for (const blob of blobs) await fetchOk(`${url}/v2/${name}/blobs/${blob}`);
  }
}
