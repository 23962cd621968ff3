// @ts-check
/**
 * Start-up of the store index with many cached blobs (issue: "under 2 s with 100 000").
 * A benchmark, never a timed test: each figure is set beside a reference run on the same
 * tree, in the same rounds, and read as a ratio.
 *
 * The parent builds a store of N small blobs (real sha256 names), then each round runs,
 * every one in a fresh Node process (start-up is what is measured, with its own peak RSS):
 *   reference (async)  readdir each shard + stat its files, all of a shard at once
 *   reference (sync)   readdirSync + statSync: the syscalls alone, no thread pool
 *   ours: snapshot     createStore + init + createCacheIndex + load() from index.json
 *   ours: scan         the same with no index.json: load() scans blobs/
 * Runs on the compiled code: `npm run bench:startup` builds first.
 *
 *   node test/bench/startup.mjs [--blobs 100000] [--rounds 5] [--dir <store>] [--keep] [--cpu-prof]
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const self = fileURLToPath(import.meta.url);
const dist = new URL('../../dist/', import.meta.url);
const run = promisify(execFile);
const DAY = 86_400_000;

/** @typedef {'reference-async' | 'reference-sync' | 'snapshot' | 'scan'} Scenario */
/** @typedef {{ ms: number, maxRssBytes: number, entries: number, bytes: number }} Measured */

const SCENARIOS = /** @type {const} */ ({
  'reference-async': 'reference: readdir + stat (async)',
  'reference-sync': 'reference: readdirSync + statSync',
  snapshot: 'ours: load() from index.json',
  scan: 'ours: load() scanning blobs/',
});
/** Ratios are against this one: the plain async walk a Node program would write. */
const REFERENCE = 'reference-async';

const { values } = parseArgs({
  options: {
    blobs: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '5' },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    measure: { type: 'string' },
  },
});

if (values.measure !== undefined) {
  const dir = values.dir;
  if (dir === undefined) throw new Error('--measure needs --dir');
  process.stdout.write(JSON.stringify(await measure(/** @type {Scenario} */ (values.measure), dir)));
} else {
  await main();
}

/** One scenario in this (fresh) process. */
async function measure(/** @type {Scenario} */ scenario, /** @type {string} */ dir) {
  const blobsDir = join(dir, 'blobs', 'sha256');
  if (scenario === 'reference-async' || scenario === 'reference-sync') {
    const started = performance.now();
    const found = scenario === 'reference-async' ? await walkAsync(blobsDir) : walkSync(blobsDir);
    const ms = performance.now() - started;
    let bytes = 0;
    for (const size of found.values()) bytes += size;
    return { ms, maxRssBytes: process.resourceUsage().maxRSS * 1024, entries: found.size, bytes };
  }
  const { createStore } = await import(new URL('store/store.js', dist).href);
  const { createCacheIndex } = await import(new URL('store/cache-index.js', dist).href);
  const started = performance.now();
  const store = createStore(dir);
  await store.init();
  const index = createCacheIndex({ store, maxSizeBytes: Number.MAX_SAFE_INTEGER, idleTtlMs: 30 * DAY });
  const from = await index.load();
  const ms = performance.now() - started;
  if (from !== scenario) throw new Error(`load() answered ${from}, expected ${scenario}`);
  const measured = { ms, maxRssBytes: process.resourceUsage().maxRSS * 1024, entries: index.entries, bytes: index.sizeBytes };
  await store.close();
  return measured;
}

/** @returns {Promise<Map<string, number>>} */
async function walkAsync(/** @type {string} */ blobsDir) {
  const found = new Map();
  for (const shard of await readdir(blobsDir)) {
    const shardDir = join(blobsDir, shard);
    const names = await readdir(shardDir);
    const infos = await Promise.all(names.map((name) => stat(join(shardDir, name))));
    infos.forEach((info, i) => found.set(names[i], info.size));
  }
  return found;
}

/** @returns {Map<string, number>} */
function walkSync(/** @type {string} */ blobsDir) {
  const found = new Map();
  for (const shard of readdirSync(blobsDir)) {
    const shardDir = join(blobsDir, shard);
    for (const name of readdirSync(shardDir)) found.set(name, statSync(join(shardDir, name)).size);
  }
  return found;
}

async function main() {
  const blobs = Number(values.blobs);
  const rounds = Number(values.rounds);
  const dir = values.dir ?? (await mkdtemp(join(tmpdir(), 'oci-mirror-bench-')));
  try {
    const created = await populate(dir, blobs);
    const snapshotBytes = await writeSnapshot(dir);
    console.log(
      `${blobs} blobs (${(created.bytes / 2 ** 20).toFixed(1)} MiB) written in ${(created.ms / 1000).toFixed(1)} s; ` +
        `index.json ${(snapshotBytes / 2 ** 20).toFixed(1)} MiB; ${cpus().length} CPUs, Node ${process.version}; page cache warm`,
    );
    /** @type {Record<Scenario, Measured[]>} */
    const results = { 'reference-async': [], 'reference-sync': [], snapshot: [], scan: [] };
    const profileDir = values['cpu-prof'] ? await mkdtemp(join(tmpdir(), 'oci-mirror-bench-profiles-')) : undefined;
    for (let round = 0; round < rounds; round++) {
      // Side by side: every scenario once per round, so drift on the machine hits all alike.
      for (const scenario of /** @type {Scenario[]} */ (Object.keys(SCENARIOS))) {
        const snapshotPath = join(dir, 'index.json');
        if (scenario === 'scan') await rename(snapshotPath, `${snapshotPath}.aside`);
        try {
          const measured = await child(scenario, dir, profileDir);
          if (measured.entries !== blobs || measured.bytes !== created.bytes) {
            throw new Error(`${scenario} found ${measured.entries} blobs of ${measured.bytes} bytes`);
          }
          results[scenario].push(measured);
        } finally {
          if (scenario === 'scan') await rename(`${snapshotPath}.aside`, snapshotPath);
        }
      }
    }
    printTable(results, rounds);
    if (profileDir) console.log(`CPU profiles in ${profileDir}`);
  } finally {
    if (!values.keep && values.dir === undefined) await rm(dir, { recursive: true, force: true });
    else console.log(`store kept in ${dir}`);
  }
}

/** Writes `count` small blobs under blobs/sha256/xx/<hex> (content named by its sha256). */
async function populate(/** @type {string} */ dir, /** @type {number} */ count) {
  const started = performance.now();
  const blobsDir = join(dir, 'blobs', 'sha256');
  for (let i = 0; i < 256; i++) mkdirSync(join(blobsDir, i.toString(16).padStart(2, '0')), { recursive: true });
  let next = 0;
  let bytes = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      // 64 B – 4 KiB: a manifest or a config more than a layer; size does not matter to a scan.
      const body = Buffer.alloc(64 + ((i * 2654435761) % 4033), `blob ${i}\n`);
      const hex = createHash('sha256').update(body).digest('hex');
      bytes += body.length;
      await writeFile(join(blobsDir, hex.slice(0, 2), hex), body);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  await mkdir(join(dir, 'tmp'), { recursive: true });
  return { ms: performance.now() - started, bytes };
}

/** index.json as the running mirror leaves it: a full scan, then a maintenance pass. */
async function writeSnapshot(/** @type {string} */ dir) {
  const { createStore } = await import(new URL('store/store.js', dist).href);
  const { createCacheIndex } = await import(new URL('store/cache-index.js', dist).href);
  const store = createStore(dir);
  await store.init();
  const index = createCacheIndex({ store, maxSizeBytes: Number.MAX_SAFE_INTEGER, idleTtlMs: 30 * DAY });
  await index.load();
  const report = await index.maintain();
  if (report.removed !== 0) throw new Error('the snapshot pass evicted');
  await store.close();
  return (await stat(join(dir, 'index.json'))).size;
}

/** @returns {Promise<Measured>} */
async function child(/** @type {Scenario} */ scenario, /** @type {string} */ dir, /** @type {string | undefined} */ profileDir) {
  const flags = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${scenario}-${Date.now()}.cpuprofile`] : [];
  const { stdout } = await run(process.execPath, [...flags, self, '--measure', scenario, '--dir', dir], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout);
}

function printTable(/** @type {Record<Scenario, Measured[]>} */ results, /** @type {number} */ rounds) {
  const median = (/** @type {number[]} */ xs) => {
    const sorted = [...xs].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2
      ? /** @type {number} */ (sorted[mid])
      : /** @type {number} */ (sorted[mid - 1] + /** @type {number} */ (sorted[mid])) / 2;
  };
  const reference = median(results[REFERENCE].map((m) => m.ms));
  const rows = /** @type {Scenario[]} */ (Object.keys(SCENARIOS)).map((scenario) => {
    const ms = results[scenario].map((m) => m.ms);
    return {
      scenario: SCENARIOS[scenario],
      'median ms': Math.round(median(ms)),
      'min ms': Math.round(Math.min(...ms)),
      'max ms': Math.round(Math.max(...ms)),
      'ratio to reference': Number((median(ms) / reference).toFixed(2)),
      'peak RSS MiB': Math.round(Math.max(...results[scenario].map((m) => m.maxRssBytes)) / 2 ** 20),
    };
  });
  console.log(`\nmedian of ${rounds} rounds; ratio = median / median of "${SCENARIOS[REFERENCE]}"`);
  console.table(rows);
}
