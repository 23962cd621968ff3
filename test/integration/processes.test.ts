import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { pushBlob, seededDigest } from '../support/images.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror.js';
import { digestOf, gatedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { freePort } from '../support/ports.js';
import { fetchHashed } from '../support/http.js';
import { tempFiles } from '../support/store.js';
import { terminate, waitForOutput } from '../support/process.js';
import { createStore } from '../../src/store/store.js';

const MiB = 1024 * 1024;

/** Real mirror processes (the built dist/main.js) sharing one store directory. */
describe('several processes on one store', () => {
  const started: MirrorProcess[] = [];
  const unreaped: UnreapedMirror[] = [];
  let storeDir: string;

  async function spawnMirror(upstreamUrl: string, args: readonly string[] = []): Promise<MirrorProcess> {
    const mirror = await startMirrorProcess(
      { upstreams: { 'docker.io': { url: upstreamUrl, library: true } }, upstreamDefaults: { retries: 0 } },
      await freePort(),
      { storeDir, args },
    );
    started.push(mirror);
    return mirror;
  }

  afterEach(async () => {
    await Promise.all([...started.splice(0), ...unreaped.splice(0)].map((m) => m.stop()));
    await rm(storeDir, { recursive: true, force: true });
  });

  describe('against a real registry', () => {
    let registry: RegistryHandle;
    let proxy: CountingProxy;
    const BLOB_BYTES = 100 * MiB;
    let digest: string;

    beforeAll(async () => {
      registry = await startRegistry();
      digest = await seededDigest('two-processes', BLOB_BYTES);
      await pushBlob(registry.url, 'library/big-shared', { seed: 'two-processes', size: BLOB_BYTES });
      proxy = await startCountingProxy(registry.url);
    });

    afterAll(async () => {
      await proxy?.stop();
      await registry?.dispose();
    });

    it('fetches a blob once for 20 concurrent cold pulls spread over two processes', async () => {
      storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-shared-'));
      proxy.reset();
      const mirrors = [await spawnMirror(proxy.url), await spawnMirror(proxy.url)];
      const pulls = Array.from({ length: 20 }, (_, i) => fetchHashed(`${mirrors[i % 2]!.url}/v2/library/big-shared/blobs/${digest}`));
      const results = await Promise.all(pulls);
      for (const res of results) {
        expect(res.status).toBe(200);
        expect(res.bytes).toBe(BLOB_BYTES);
        expect(res.sha256).toBe(digest);
      }
      expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(1);
      // One process fetched; the other followed its spool (it did not wait for the commit).
      expect(mirrors.filter((m) => m.output().includes('"msg":"fill started"'))).toHaveLength(1);
      expect(mirrors.filter((m) => m.output().includes('"msg":"fill followed"'))).toHaveLength(1);
      // Committed by one, a hit in the other.
      for (const mirror of mirrors) {
        const warm = await fetchHashed(`${mirror.url}/v2/library/big-shared/blobs/${digest}`, { method: 'HEAD' });
        expect(warm.status).toBe(200);
      }
      expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(1);
      expect(proxy.count({ method: 'HEAD', kind: 'blob' })).toBe(0);
      console.log(
        `two processes, one store: 20 pulls of ${BLOB_BYTES / MiB} MiB, upstream blob GETs ${proxy.count({ method: 'GET', kind: 'blob' })}`,
      );
    });

    it('serve --workers 2 shares the port and the fills', async () => {
      storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-workers-'));
      proxy.reset();
      const mirror = await spawnMirror(proxy.url, ['--workers', '2']);
      const results = await Promise.all(
        Array.from({ length: 8 }, () => fetchHashed(`${mirror.url}/v2/library/big-shared/blobs/${digest}`)),
      );
      for (const res of results) expect(res.sha256).toBe(digest);
      expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(1);
      expect(mirror.output()).toContain('"workers":2');
      // Each worker has a temp area of its own.
      const areas = (await readdir(join(storeDir, 'tmp'))).filter((e) => e !== 'fills');
      expect(areas).toHaveLength(2);
    });
  });

  describe('after kill -9', () => {
    let upstream: FakeUpstream;

    beforeAll(async () => {
      upstream = await startFakeUpstream();
    });

    afterAll(async () => {
      await upstream?.stop();
    });

    it('never follows the spool of a killed process whose parent does not reap it, and pulls again', async () => {
      storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-crash-'));
      const body = randomBytes(8 * MiB);
      const digest = digestOf(body);
      const gated = gatedBlob(body, 3 * MiB);
      upstream.setBlob(digest, gated.handler);
      const first = await spawnUnreaped(upstream.url, storeDir);
      unreaped.push(first);
      const response = await request(`${first.url}/v2/library/app/blobs/${digest}`);
      expect(response.statusCode).toBe(200);
      response.body.on('error', () => undefined);
      await gated.started;
      const hex = digest.slice('sha256:'.length);
      // The spool is on disk and its record says where: what another process would follow.
      const record = join(storeDir, 'tmp', 'fills', `${hex}.json`);
      await expectSoon(async () => ((await readIfExists(record)) ?? '').includes('"spool"'));

      // kill -9 under a parent that never waits: a zombie, its PID still taken, its lock still fresh.
      await first.kill();
      expect(await processState(first.pid)).toBe('Z');
      const left = await tempFiles(storeDir);
      expect(left.filter((f) => !f.startsWith('fills/')).length).toBeGreaterThanOrEqual(1);

      upstream.setBlob(digest, (_req, res) => {
        res.writeHead(200, { 'content-length': String(body.length) });
        res.end(body);
      });
      const second = await spawnMirror(upstream.url);
      await expect(stat(join(storeDir, 'blobs', 'sha256', hex.slice(0, 2), hex))).rejects.toThrow(/ENOENT/);
      const head = await fetchHashed(`${second.url}/v2/library/app/blobs/${digest}`, { method: 'HEAD' });
      expect(head.headers['content-length']).toBe(String(body.length));
      // The dead spool is never streamed: the second process fetches once the dead one's lock is stale.
      const pulled = await fetchHashed(`${second.url}/v2/library/app/blobs/${digest}`);
      expect(pulled.status).toBe(200);
      expect(pulled.bytes).toBe(body.length);
      expect(pulled.sha256).toBe(digest);
      expect(second.output()).toContain('"msg":"fill started"');
      expect(second.output()).not.toContain('"msg":"fill followed"');
      gated.finish();

      // The dead process's spool and record go at the next start-up; nothing of it reached blobs/.
      await second.stop();
      await expectSoon(async () => {
        const again = createStore(storeDir);
        await again.init();
        await again.close();
        return (await tempFiles(storeDir)).length === 0;
      });
    });
  });
});

interface UnreapedMirror {
  readonly url: string;
  /** The mirror's own PID (not its parent's). */
  readonly pid: number;
  /** SIGKILL the mirror; its parent never waits, so it stays a zombie. */
  kill(): Promise<void>;
  /** Ends the parent as well, so the zombie is reaped. */
  stop(): Promise<void>;
}

/**
 * The built mirror under a parent that never reaps it: `sh` starts it in the background and
 * execs into `sleep`, which never waits. After kill -9 its PID stays taken, as a zombie.
 */
async function spawnUnreaped(upstreamUrl: string, storeDir: string): Promise<UnreapedMirror> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-unreaped-'));
  const configFile = join(dir, 'mirror.config.json');
  const config = {
    listen: { host: '127.0.0.1', port },
    store: { path: storeDir },
    log: { level: 'info' },
    defaultUpstream: 'docker.io',
    upstreams: { 'docker.io': { url: upstreamUrl, library: true } },
    upstreamDefaults: { retries: 0 },
  };
  await writeFile(configFile, JSON.stringify(config));
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const mirror = `${quote(process.execPath)} dist/main.js serve --config ${quote(configFile)}`;
  const script = `${mirror} & echo "mirror-pid $!"; exec sleep 1000`;
  const wrapper = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  wrapper.stdout.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-65_536);
  });
  await waitForOutput(wrapper, 'mirror listening');
  const pid = Number(/mirror-pid (\d+)/.exec(output)?.[1]);
  return {
    url: `http://127.0.0.1:${port}`,
    pid,
    async kill() {
      process.kill(pid, 'SIGKILL');
      await expectSoon(async () => (await processState(pid)) === 'Z');
    },
    async stop() {
      const state = await processState(pid);
      if (state !== undefined && state !== 'Z') process.kill(pid, 'SIGKILL');
      await terminate(wrapper);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The state letter of /proc/<pid>/stat (`Z` for a zombie); undefined once the PID is gone. */
async function processState(pid: number): Promise<string | undefined> {
  const stat = await readIfExists(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : /\) (\S)/.exec(stat)?.[1];
}

async function readIfExists(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
}

/** Polls a condition a child process makes true; bounded. */
async function expectSoon(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
