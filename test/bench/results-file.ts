import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { cpus, release, totalmem } from 'node:os';
import { promisify } from 'node:util';
import { format, medianTable, roundsTable, verdicts, type ScenarioResult, type Verdict } from './report.js';

const run = promisify(execFile);

/** Facts about the run that a reader needs to trust or compare the figures. */
export interface RunFacts {
  readonly startedAt: Date;
  readonly totalSeconds: number;
  readonly rounds: number;
  readonly wrkSeconds: number;
  /** Share of the machine's CPUs busy just before the bench started (other work). */
  readonly busyBefore: number;
  readonly busyAfter: number;
  readonly loadBefore: readonly number[];
  readonly loadAfter: readonly number[];
}

async function version(command: string, args: readonly string[]): Promise<string> {
  const out = await run(command, args).then(
    ({ stdout, stderr }) => `${stdout}${stderr}`,
    (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ''}${err.stderr ?? ''}`,
  );
  return (
    out
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim() ?? 'unknown'
  );
}

async function gitState(): Promise<string> {
  const head = await run('git', ['rev-parse', '--short', 'HEAD']).then(
    (r) => r.stdout.trim(),
    () => 'unknown',
  );
  const dirty = await run('git', ['status', '--porcelain', '--', 'src']).then(
    (r) => r.stdout.trim() !== '',
    () => false,
  );
  return dirty ? `${head} with uncommitted changes in src/` : head;
}

export async function machineSection(facts: RunFacts): Promise<string> {
  const mem = `${Math.round(totalmem() / 2 ** 30)} GiB`;
  const model = cpus()[0]?.model ?? 'unknown CPU';
  const memInfo = await readFile('/proc/meminfo', 'utf8').catch(() => '');
  const load = (l: readonly number[]): string => l.map((v) => v.toFixed(2)).join(' / ');
  return [
    `- ${cpus().length} × ${model}, ${mem} RAM${memInfo.includes('SwapTotal:        0 kB') ? ', no swap' : ''}, Linux ${release()}`,
    `- Node ${process.version}; ${await version('docker-registry', ['--version'])}; ${await version('/usr/sbin/nginx', ['-v'])}; ${await version('wrk', ['-v'])}; ${await version('skopeo', ['--version'])}`,
    `- oci-mirror at ${await gitState()}`,
    `- Shared machine: ${format(facts.busyBefore * 100, 0)} % of the CPUs were busy with other work in the 2 s before the bench (${format(facts.busyAfter * 100, 0)} % after); load average 1/5/15 min ${load(facts.loadBefore)} before, ${load(facts.loadAfter)} after.`,
    `- ${facts.startedAt.toISOString()}, ${facts.rounds} rounds, wrk runs of ${facts.wrkSeconds} s, ${format(facts.totalSeconds / 60, 1)} min in all`,
  ].join('\n');
}

const METHOD = `Every system runs on loopback on this machine, started by the bench and stopped at the end:

- **upstream**: Debian's \`docker-registry\` (CNCF Distribution) holding seeded random content
  (AES-CTR keystream, incompressible; the same digests every run). Its access log counts
  every upstream request and the bytes it sent.
- **ours**: \`node dist/main.js serve\` (one process), log level \`info\` to a file, as users run it;
  **ours \`--workers 2\`**: a second instance, two cluster workers on the same store.
- **Distribution proxy**: a second \`docker-registry\` with \`proxy.remoteurl\` pointing at the
  upstream, filesystem storage, default logging (to a file).
- **nginx sendfile**: nginx serving the blob and manifest files from ours' store directory
  (\`sendfile on\`, \`worker_processes auto\`, access log on): the physical floor for a warm hit.
- **ours behind nginx front**: deploy/nginx/front.conf before a mirror in front mode on ours'
  store; the mirror answers a stored blob with \`X-Accel-Redirect\` and nginx sends it with
  sendfile; misses stream from the mirror through nginx unbuffered. Its CPU and memory are
  nginx's and the mirror's together.
- **ours ×3 sharded**: deploy/nginx/sharded.conf before three mirrors, each with its own store,
  a digest always on the same replica. Its CPU is nginx's and the three mirrors' together.

Each scenario runs every system once per round, rotating who goes first each round, for at
least 5 rounds; the table gives medians, the per-run figures are below. Server CPU is
utime + stime from \`/proc/<pid>/stat\` of the server's whole process tree (every thread and
worker), read before and after each run; GB and MB are 10⁹ and 10⁶ bytes.

- *Warm blob*: \`wrk\` (1 thread for 1 client, 2 threads for 16) GETs one 100 MiB blob over
  and over for the run; MB/s is bytes received ÷ duration. Each system's bytes are checked
  against the digest once before (wrk checks none).
- *Warm manifest*: \`wrk -t1 -c64\` GETs a small OCI manifest by digest or by tag with the
  full Accept list Docker sends; req/s and wrk's p99 latency. A tag is *fresh*: ours is
  configured with \`freshFor: 1h\` so that no revalidation falls inside a run.
- *Cold fan-out*: per round a new 100 MiB blob that no system has (ours behind the front gets
  one of its own, as its mirror shares ours' store); 50 clients (undici, in 2 worker threads,
  hashing every body) start at once. TTFB is to the first body byte; wall is until the last
  body is complete and its sha256 checked; server CPU is the process tree's over the whole
  fan-out (the upstream's is shown apart, as is the clients', i.e. the bench process's: on 2
  CPUs the wall time cannot be below their sum ÷ 2); peak RSS is the largest VmHWM in the server's
  tree, reset (\`clear_refs\`) before each run; upstream bytes and GETs are from the
  upstream's access log, bytes as a multiple of the blob.
- *Slow readers*: raw-socket clients (60 per loopback address 127.0.1.x, as ours limits
  requests in flight per client address) each GET the warm 100 MiB blob and read 1 KiB a
  second. Growth is the sum of VmHWM over the server's tree (reset before) minus the sum of
  its VmRSS just before; ours has already served the scenarios before this one. Every socket
  is destroyed after each run.
- *skopeo*: per round a new image (3 layers, 120 MiB), \`skopeo copy docker://… dir:…\`
  cold, then again warm.
- *Tag pulls*: 100 pulls as containerd makes them (\`GET /v2/\`, \`HEAD\` the tag, \`GET\` the
  manifest by digest, the config and 2 small layers), counting upstream requests. Ours
  within the freshness window, and after it (an upstream configured with \`freshFor: 0s\`, so
  every pull is past its window); Distribution has no window.`;

const ISSUES: Readonly<Record<number, string>> = {
  6: 'Issue 6: oci-mirror beside Distribution and nginx',
  13: 'Issue 13: slow readers',
  15: 'Issue 15: the nginx front, the cold path, sharded replicas',
};

function verdictLine(v: Verdict): string {
  const by =
    v.goal !== 0 && Number.isFinite(v.goal) ? ` (${format((v.ours / v.goal) * 100, 0)} % of the goal ${format(v.goal, v.digits)})` : '';
  return `- ${v.met ? 'met' : '**missed**'}: ${v.scenario}, ${v.metric} ${v.target}: ours ${format(v.ours, v.digits)}${by}`;
}

/** One list per issue, in issue order; a target two issues ask for is listed under each. */
function targetsByIssue(results: readonly ScenarioResult[]): string[] {
  const all = verdicts(results);
  const issues = [...new Set(all.flatMap((v) => v.issues))].sort((a, b) => a - b);
  return issues.flatMap((issue) => [
    `### ${ISSUES[issue] ?? `Issue ${issue}`}`,
    '',
    ...all.filter((v) => v.issues.includes(issue)).map(verdictLine),
    '',
  ]);
}

export async function resultsMarkdown(results: readonly ScenarioResult[], facts: RunFacts): Promise<string> {
  return [
    '# Benchmark results',
    '',
    'Written by `npm run bench` from its latest full run; never edited by hand (rerun instead).',
    'The code is in [test/bench/](./); how to read it, and what the profiles showed, in [README.md](README.md).',
    '',
    '## Machine',
    '',
    await machineSection(facts),
    '',
    '## Medians',
    '',
    medianTable(results),
    '',
    '## Targets',
    '',
    "Checked on ours' median (or the system named), grouped by the issue that set them.",
    '',
    ...targetsByIssue(results),
    '## Method',
    '',
    METHOD,
    '',
    '## Every run',
    '',
    roundsTable(results),
    '',
    '## Rerun',
    '',
    '```sh',
    'npm run bench                      # installs docker-registry, skopeo, nginx, wrk with apt-get when missing, builds, runs',
    'BENCH_ONLY=cold-fan-out npm run bench     # some scenarios only (ids below); prints, writes no RESULTS.md',
    'BENCH_ROUNDS=7 BENCH_SECONDS=5 npm run bench',
    'BENCH_SLOW_READERS=500 BENCH_SLOW_SECONDS=20 npm run bench   # the slow-readers scenario: clients per system, seconds',
    'BENCH_CPU_PROF=/tmp/prof npm run bench   # ours runs with --cpu-prof; profiles land there when it stops',
    '```',
    '',
    `Scenario ids: ${results.map((r) => `\`${r.scenario.id}\``).join(', ')}.`,
    '',
  ].join('\n');
}
