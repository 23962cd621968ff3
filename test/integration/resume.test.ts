import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy, type LinkFault } from '../support/proxy.js';
import { pushBlob, seededDigest } from '../support/images.js';
import { startMirror, startMirrorProcess, type MirrorHandle } from '../support/mirror.js';
import { freePort } from '../support/ports.js';
import { fetchHashed } from '../support/http.js';
import { metricValue } from '../support/metrics.js';
import { expectNoTempFiles } from '../support/store.js';

const MiB = 1024 * 1024;
const BLOB_BYTES = 8 * MiB;
const CUT_AFTER = 3 * MiB;
const CLIENTS = 3;

/** What a test needs of the log: the lines the mirror wrote, parsed. */
function capturedLog(): { lines: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { lines, logger };
}

/**
 * A WAN that breaks: a proxy in front of a real registry cuts blob downloads mid-body.
 * The mirror resumes them with Range against the same registry, so every client gets
 * the whole verified blob, and the upstream sends each byte about once.
 */
describe('a blob download cut mid-body is resumed, not restarted', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy | undefined;
  let mirror: MirrorHandle | undefined;
  const seeds = [
    'resume-once',
    'resume-twice',
    'resume-no-range',
    'resume-stall',
    'resume-give-up',
    'resume-processes',
    'resume-token',
  ] as const;
  const digests = new Map<string, string>();

  beforeAll(async () => {
    registry = await startRegistry();
    for (const seed of seeds) {
      digests.set(seed, await seededDigest(seed, BLOB_BYTES));
      await pushBlob(registry.url, 'library/wan-synth', { seed, size: BLOB_BYTES });
    }
  });

  afterEach(async () => {
    if (mirror) {
      await mirror.runtime.mirror.drain();
      expect(mirror.runtime.mirror.fillsInFlight).toBe(0);
      await expectNoTempFiles(mirror.storeDir);
      await mirror.stop();
    }
    await proxy?.stop();
    mirror = undefined;
    proxy = undefined;
  });

  afterAll(async () => {
    await registry?.dispose();
  });

  async function start(fault: LinkFault, resume: Record<string, unknown> = {}, timeouts?: Record<string, string>, tokenAuth = false) {
    const log = capturedLog();
    proxy = await startCountingProxy(registry.url, { linkFault: fault, tokenAuth });
    mirror = await startMirror(
      {
        upstreams: { 'docker.io': { url: proxy.url, library: true } },
        upstreamDefaults: { retries: 0, resume: { backoff: '20ms', ...resume }, ...(timeouts ? { timeouts } : {}) },
      },
      { log: log.logger },
    );
    return { proxy, mirror, log: log.lines };
  }

  async function pullAll(handle: MirrorHandle, seed: string) {
    const url = `${handle.url}/v2/library/wan-synth/blobs/${digests.get(seed)}`;
    return Promise.all(Array.from({ length: CLIENTS }, () => fetchHashed(url).catch((err: Error) => err)));
  }

  async function upstreamFigures(handle: MirrorHandle, counting: CountingProxy) {
    const metrics = handle.runtime.metrics;
    const gets = counting.requests.filter((r) => r.method === 'GET' && r.kind === 'blob');
    return {
      gets,
      bodyBytes: gets.reduce((sum, r) => sum + r.bytes, 0),
      fetched: await metricValue(metrics.upstreamBytes, { upstream: 'docker.io' }),
      refetched: await metricValue(metrics.upstreamRefetchedBytes, { upstream: 'docker.io' }),
      resumes: (outcome: string) => metricValue(metrics.upstreamResumes, { upstream: 'docker.io', outcome }),
    };
  }

  function expectWhole(results: readonly (Error | { status: number; sha256: string; bytes: number })[], digest: string | undefined): void {
    for (const res of results) {
      expect(res).not.toBeInstanceOf(Error);
      expect(res).toMatchObject({ status: 200, bytes: BLOB_BYTES, sha256: digest });
    }
  }

  it('continues with Range from the offset after a reset: every client whole, each byte fetched about once', async () => {
    const { proxy, mirror, log } = await start({ afterBytes: CUT_AFTER });
    expectWhole(await pullAll(mirror, 'resume-once'), digests.get('resume-once'));
    const f = await upstreamFigures(mirror, proxy);
    expect(f.gets).toHaveLength(2);
    expect(f.gets[0]?.cut).toBe(true);
    const offset = Number(/^bytes=(\d+)-$/.exec(String(f.gets[1]?.headers.range))?.[1]);
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(CUT_AFTER);
    expect(f.gets[1]?.headers['if-range']).toBe(`"${digests.get('resume-once')}"`);
    expect(f.gets[1]?.status).toBe(206);
    expect(await f.resumes('resumed')).toBe(1);
    expect(f.refetched).toBe(0);
    // Each byte received once. (The link may have sent more: an RST drops what the receiver had not read yet.)
    expect(f.fetched).toBe(BLOB_BYTES);
    expect(log.filter((l) => l['msg'] === 'fill resumed')).toMatchObject([{ offset, outcome: 'resumed', attempt: 1 }]);
    expect(await mirror.runtime.store.blobs.stat(digests.get('resume-once') as never)).toBe(BLOB_BYTES);
    console.log(
      `resume, Range honoured: ${BLOB_BYTES} B blob, ${f.fetched} B received, ${f.bodyBytes} B sent by the link (${(f.bodyBytes / BLOB_BYTES).toFixed(3)}×)`,
    );
  });

  it('resumes against an upstream that wants a bearer token, answering its challenge again', async () => {
    const { proxy, mirror } = await start({ afterBytes: CUT_AFTER }, {}, undefined, true);
    expectWhole(await pullAll(mirror, 'resume-token'), digests.get('resume-token'));
    const gets = proxy.requests.filter((r) => r.method === 'GET' && r.kind === 'blob' && r.status !== 401);
    expect(gets.map((g) => g.status)).toEqual([200, 206]);
    expect(gets[1]?.headers.authorization).toMatch(/^Bearer /);
    expect(gets[1]?.headers.range).toMatch(/^bytes=\d+-$/);
    expect(await metricValue(mirror.runtime.metrics.upstreamResumes, { outcome: 'resumed' })).toBe(1);
  });

  it('resumes twice when the link cuts twice', async () => {
    const { proxy, mirror } = await start({ afterBytes: CUT_AFTER, times: 2 });
    expectWhole(await pullAll(mirror, 'resume-twice'), digests.get('resume-twice'));
    const f = await upstreamFigures(mirror, proxy);
    expect(f.gets).toHaveLength(3);
    expect(f.gets.map((g) => g.cut ?? false)).toEqual([true, true, false]);
    expect(f.gets.slice(1).every((g) => /^bytes=\d+-$/.test(String(g.headers.range)))).toBe(true);
    expect(await f.resumes('resumed')).toBe(2);
    expect(f.fetched).toBe(BLOB_BYTES);
  });

  it('re-reads and discards up to the offset when the upstream ignores Range (200), and counts what it refetched', async () => {
    const { proxy, mirror } = await start({ afterBytes: CUT_AFTER, ignoreRange: true });
    expectWhole(await pullAll(mirror, 'resume-no-range'), digests.get('resume-no-range'));
    const f = await upstreamFigures(mirror, proxy);
    expect(f.gets).toHaveLength(2);
    expect(f.gets[1]?.status).toBe(200);
    expect(await f.resumes('refetched')).toBe(1);
    expect(f.refetched).toBeGreaterThan(0);
    expect(f.refetched).toBeLessThanOrEqual(CUT_AFTER);
    expect(f.fetched).toBe(BLOB_BYTES + f.refetched);
    console.log(
      `resume, Range ignored: ${BLOB_BYTES} B blob, ${f.fetched} B received (${(f.fetched / BLOB_BYTES).toFixed(3)}×), ${f.refetched} B refetched, ${f.bodyBytes} B sent by the link`,
    );
  });

  it('resumes a body that stalls (the body timeout fires) as one that resets', async () => {
    const { proxy, mirror } = await start({ afterBytes: CUT_AFTER, mode: 'stall' }, {}, { body: '500ms' });
    expectWhole(await pullAll(mirror, 'resume-stall'), digests.get('resume-stall'));
    const f = await upstreamFigures(mirror, proxy);
    expect(f.gets).toHaveLength(2);
    expect(f.gets[1]?.headers.range).toBe(`bytes=${CUT_AFTER}-`);
    expect(await f.resumes('resumed')).toBe(1);
    expect(f.bodyBytes).toBe(BLOB_BYTES);
  });

  it('breaks every transfer and stores nothing when the resumes run out', async () => {
    const { proxy, mirror } = await start({ afterBytes: CUT_AFTER, times: 3 }, { maxResumes: 1 });
    const results = await pullAll(mirror, 'resume-give-up');
    for (const res of results) {
      // Headers went out before the cut: the client sees a broken transfer, never a clean end.
      if (!(res instanceof Error)) expect(res.status).toBeGreaterThanOrEqual(500);
    }
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digests.get('resume-give-up') as never)).toBeUndefined();
    const f = await upstreamFigures(mirror, proxy);
    expect(f.gets).toHaveLength(2);
    expect(await f.resumes('resumed')).toBe(1);
    expect(await metricValue(mirror.runtime.metrics.fills, { result: 'aborted' })).toBe(1);
  });

  it('resumes under processes that follow the spool: they see a pause, not a failure', async () => {
    const storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-resume-shared-'));
    const counting = await startCountingProxy(registry.url, { linkFault: { afterBytes: CUT_AFTER } });
    proxy = counting;
    const input = {
      upstreams: { 'docker.io': { url: counting.url, library: true } },
      upstreamDefaults: { retries: 0, resume: { backoff: '200ms' } },
    };
    const mirrors = [
      await startMirrorProcess(input, await freePort(), { storeDir }),
      await startMirrorProcess(input, await freePort(), { storeDir }),
    ];
    try {
      await bothProvedAlive(storeDir);
      const digest = digests.get('resume-processes');
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          fetchHashed(`${mirrors[i % 2]!.url}/v2/library/wan-synth/blobs/${digest}`).catch((err: Error) => err),
        ),
      );
      expectWhole(results, digest);
      const gets = counting.requests.filter((r) => r.method === 'GET' && r.kind === 'blob');
      expect(gets).toHaveLength(2);
      expect(gets[1]?.headers.range).toMatch(/^bytes=\d+-$/);
      const outputs = mirrors.map((m) => m.output());
      expect(outputs.filter((o) => o.includes('"msg":"fill resumed"'))).toHaveLength(1);
      expect(outputs.filter((o) => o.includes('"msg":"fill followed"'))).toHaveLength(1);
      for (const output of outputs) expect(output).not.toContain('"msg":"fill aborted"');
    } finally {
      await Promise.all(mirrors.map((m) => m.stop()));
      await rm(storeDir, { recursive: true, force: true });
    }
  });
});

/**
 * A process follows another's spool only once that process proved alive after it opened
 * the store (its lock refreshed since): wait for both process locks to be refreshed after
 * both processes started, so either may follow the other.
 */
async function bothProvedAlive(storeDir: string): Promise<void> {
  const startedMs = Date.now();
  const locks = join(storeDir, 'locks');
  for (let attempt = 0; attempt < 400; attempt++) {
    const names = (await readdir(locks)).filter((name) => name.startsWith('process-'));
    const times = await Promise.all(names.map(async (name) => (await stat(join(locks, name))).mtimeMs));
    // A second past the start: lock mtimes may run up to a second ahead (fill-records.ts).
    if (times.length === 2 && times.every((t) => t > startedMs + 1_000)) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('the two processes never refreshed their locks');
}
