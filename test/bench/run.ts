import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createSkopeo } from './clients.js';
import { machineBusy } from './proc.js';
import { format, medianTable, runScenario, verdicts, type ScenarioResult } from './report.js';
import { resultsMarkdown, type RunFacts } from './results-file.js';
import { startFront, startSharded } from './fronts.js';
import { allScenarios, primeWarm, type BenchContext } from './scenarios.js';
import { seedUpstream } from './seed.js';
import { startDistributionProxy, startMirror, startNginx, startUpstream, type Server, type SystemName } from './systems.js';
import { writeWrkScript } from './wrk.js';

/**
 * `npm run bench`: oci-mirror beside Distribution in proxy mode and nginx, on loopback,
 * every scenario of issues 6, 13 and 15 in rotating rounds; writes test/bench/RESULTS.md
 * after a full run. Run through vitest (TypeScript without a loader), never part of `npm test`.
 *
 *   BENCH_ROUNDS (5, at least 5 for RESULTS.md)  BENCH_SECONDS (3, per wrk run)
 *   BENCH_ONLY=id,id (some scenarios; prints only)  BENCH_KEEP=1 (keep the work dir)
 *   BENCH_SYSTEMS=ours,distribution (some systems; prints only)
 *   BENCH_CPU_PROF=dir (ours under --cpu-prof)      BENCH_OUT=file (instead of RESULTS.md)
 *   BENCH_MIRROR=path/to/main.js (another build of ours, to try a change; prints only)
 *   BENCH_SLOW_READERS (1000, per system)  BENCH_SLOW_SECONDS (10): the slow-readers scenario
 */
const env = process.env;
const ROUNDS = Number(env['BENCH_ROUNDS'] ?? 5);
const SECONDS = Number(env['BENCH_SECONDS'] ?? 3);
const ONLY = env['BENCH_ONLY']?.split(',').filter((s) => s !== '');
/** Only these systems in each scenario (an A/B of ours against one reference); prints only, like BENCH_ONLY. */
const SYSTEMS = env['BENCH_SYSTEMS']?.split(',').filter((s) => s !== '');
const SLOW_READERS = Number(env['BENCH_SLOW_READERS'] ?? 1000);
const SLOW_SECONDS = Number(env['BENCH_SLOW_SECONDS'] ?? 10);
const RESULTS = env['BENCH_OUT'] ?? fileURLToPath(new URL('./RESULTS.md', import.meta.url));
const BUDGET_MS = 30 * 60_000;

const log = (line: string): void => void process.stdout.write(`${line}\n`);

describe('oci-mirror beside Distribution and nginx', () => {
  it('runs every scenario and writes the results', { timeout: BUDGET_MS }, async () => {
    const startedAt = new Date();
    const all = allScenarios({ slowReaders: SLOW_READERS, slowSeconds: SLOW_SECONDS });
    const scenarios = all
      .filter((s) => !ONLY || ONLY.includes(s.id))
      .map((s) => (SYSTEMS ? { ...s, systems: s.systems.filter((system) => SYSTEMS.includes(system)) } : s))
      .filter((s) => s.systems.length > 0);
    expect(scenarios.length, `BENCH_ONLY names no scenario of ${all.map((s) => s.id).join(', ')}`).toBeGreaterThan(0);
    const loadBefore = loadavg();
    const busyBefore = await machineBusy(2000);
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-bench-'));
    const servers: Server[] = [];
    try {
      log(`bench: work dir ${dir}; ${Math.round(busyBefore * 100)} % of the CPUs busy with other work`);
      const upstream = await startUpstream(dir);
      servers.push(upstream);
      const seeded = await seedUpstream(upstream.url, ROUNDS);
      log(`bench: upstream seeded (${Math.round((Date.now() - startedAt.getTime()) / 1000)} s)`);

      const storeDir = join(dir, 'ours-store');
      const cpuProfDir = env['BENCH_CPU_PROF'];
      if (cpuProfDir) await mkdir(cpuProfDir, { recursive: true });
      const main = env['BENCH_MIRROR'];
      const ours = await startMirror(dir, upstream.url, {
        name: 'ours',
        storeDir,
        ...(cpuProfDir ? { cpuProfDir } : {}),
        ...(main ? { main } : {}),
      });
      servers.push(ours);
      const distribution = await startDistributionProxy(dir, upstream.url);
      servers.push(distribution);
      const partial = { ours, distribution } as Record<SystemName, Server>;
      const base = { upstream, seeded, seconds: SECONDS, wrkScript: await writeWrkScript(dir), skopeo: await createSkopeo(dir) };
      // ours fills the store first: nginx and the second instance serve its files.
      await primeWarm({ ...base, servers: partial }, ['ours', 'distribution']);
      const w2 = await startMirror(dir, upstream.url, { name: 'ours-w2', storeDir, workers: 2, ...(main ? { main } : {}) });
      servers.push(w2);
      const nginx = await startNginx(dir, storeDir);
      servers.push(nginx);
      const front = await startFront(dir, upstream.url, storeDir, main);
      servers.push(front);
      const sharded = await startSharded(dir, upstream.url, main);
      servers.push(sharded);
      const ctx: BenchContext = {
        ...base,
        servers: { ours, 'ours-w2': w2, 'ours-front': front, 'ours-sharded': sharded, distribution, nginx },
      };
      await primeWarm(ctx, ['ours-w2', 'ours-front', 'ours-sharded', 'nginx']);

      const results: ScenarioResult[] = [];
      for (const scenario of scenarios) {
        log(`bench: ${scenario.title}`);
        results.push(await runScenario(scenario, ctx, ROUNDS, log));
      }
      const facts: RunFacts = {
        startedAt,
        totalSeconds: (Date.now() - startedAt.getTime()) / 1000,
        rounds: ROUNDS,
        wrkSeconds: SECONDS,
        busyBefore,
        busyAfter: await machineBusy(2000),
        loadBefore,
        loadAfter: loadavg(),
      };
      log(`\n${medianTable(results)}\n`);
      for (const v of verdicts(results)) {
        const figures = `ours ${format(v.ours, v.digits)}, goal ${format(v.goal, v.digits)}`;
        log(`${v.met ? 'met   ' : 'MISSED'} (issue ${v.issues.join(', ')}) ${v.scenario}: ${v.metric} ${v.target}: ${figures}`);
      }
      if (!ONLY && !SYSTEMS && !main && ROUNDS >= 5) {
        await writeFile(RESULTS, await resultsMarkdown(results, facts));
        log(`bench: wrote ${RESULTS} (${Math.round(facts.totalSeconds)} s)`);
      }
    } finally {
      for (const server of servers.reverse()) await server.stop().catch(() => undefined);
      if (env['BENCH_KEEP']) log(`bench: kept ${dir}`);
      else await rm(dir, { recursive: true, force: true });
    }
  });
});
