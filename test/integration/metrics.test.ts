import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, servedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { fetchHashed } from '../support/http.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror.js';
import { freePort } from '../support/ports.js';

const WORKERS = 3;
const STORE_MAX_BYTES = 2 ** 30;

/** `serve --workers 3` as users run it: one /metrics for the group, whichever worker gets the scrape. */
describe('metrics of a worker group', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorProcess;
  let storeDir: string;
  const body = randomBytes(64 << 10);
  const digest = digestOf(body);

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    upstream.setBlob(digest, servedBlob(body));
    storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-metrics-'));
    mirror = await startMirrorProcess(
      { upstreams: { 'docker.io': { url: upstream.url, library: true } }, store: { maxSize: '1GiB' } },
      await freePort(),
      { storeDir, args: ['--workers', String(WORKERS)] },
    );
    await waitUntil(() => count(mirror.output(), '"msg":"mirror listening"') === WORKERS);
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
    await rm(storeDir, { recursive: true, force: true });
  });

  /** A new connection each time, so the primary hands requests to every worker in turn. */
  const get = (path: string) => fetchHashed(`${mirror.url}${path}`, { headers: { connection: 'close' }, keepBody: path === '/metrics' });

  async function scrape(): Promise<string> {
    const res = await get('/metrics');
    expect(res.status).toBe(200);
    return res.body!.toString();
  }

  it('sums counters and histograms over the workers in every scrape, whichever worker answers', async () => {
    let made = 0;
    const totals: number[] = [];
    for (let round = 0; round < 6; round++) {
      // 4 + 1 scrape per round: with 3 workers taking turns, the scrapes rotate too.
      for (let i = 0; i < 4; i++) {
        expect((await get(`/v2/library/app/blobs/${digest}`)).sha256).toBe(digest);
        made++;
      }
      const text = await scrape();
      expect(sum(text, 'oci_mirror_requests_total')).toBe(made);
      expect(sum(text, 'oci_mirror_request_duration_seconds_count', 'kind="blob"')).toBe(made);
      expect(sum(text, 'oci_mirror_requests_total', 'outcome="error"')).toBe(0);
      totals.push(sum(text, 'oci_mirror_served_bytes_total'));
      // One series per label set, not one per worker; shared-store gauges are not multiplied.
      expect(count(text, 'oci_mirror_requests_total{kind="blob",outcome="hit"}')).toBe(1);
      expect(sum(text, 'oci_mirror_store_max_bytes')).toBe(STORE_MAX_BYTES);
      expect(sum(text, 'oci_mirror_ready')).toBe(1);
      expect(sum(text, 'oci_mirror_build_info')).toBe(1);
    }
    expect(totals).toEqual(totals.map((_, i) => (i + 1) * 4 * body.length));
    // The work and the scrapes really were spread: more than one worker served each.
    const access = accessLines(mirror.output());
    expect(new Set(access.filter((l) => l.path === '/metrics').map((l) => l.worker)).size).toBeGreaterThan(1);
    expect(new Set(access.filter((l) => l.kind === 'blob').map((l) => l.worker)).size).toBeGreaterThan(1);
    console.log(excerpt(await scrape()));
  });

  it('passes promtool check metrics', async () => {
    const text = await scrape();
    const promtool = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    promtool.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    promtool.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    promtool.stdin.end(text);
    const [code] = (await once(promtool, 'exit')) as [number | null];
    expect(output).toBe('');
    expect(code).toBe(0);
    // Standard process metric names, so stock dashboards and promtool's lint agree.
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^nodejs_version_info\{/m);
    expect(text).not.toContain('oci_mirror_process_');
  });
});

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

/** The sum of a metric's samples whose labels contain `labelMatch`. */
function sum(text: string, name: string, labelMatch = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labelMatch)) total += Number(m[3]);
  }
  return total;
}

function accessLines(output: string): { worker: number; path: string; kind?: string }[] {
  return output
    .split('\n')
    .filter((l) => l.includes('"msg":"request"'))
    .map((l) => JSON.parse(l) as { worker: number; path: string; kind?: string });
}

/** The oci_mirror_* samples of a scrape that are not zero, for the test log. */
function excerpt(text: string): string {
  return text
    .split('\n')
    .filter(
      (l) =>
        /^oci_mirror_(requests_total|served_bytes|store|ready|build|fills_total|request_duration_seconds_count)/.test(l) && !/ 0$/.test(l),
    )
    .join('\n');
}

/** Polls a condition a child process makes true; bounded. */
async function waitUntil(check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
