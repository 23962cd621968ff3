import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
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

const MiB = 1024 * 1024;

/** Real mirror processes (the built dist/main.js) sharing one store directory. */
describe('several processes on one store', () => {
  const started: MirrorProcess[] = [];
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
    await Promise.all(started.splice(0).map((m) => m.stop()));
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
      const pulls = Array.from({ length: 20 }, (_, i) =>
        fetchHashed(`${mirrors[i % 2]!.url}/v2/library/big-shared/blobs/${digest}`),
      );
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
      console.log(`two processes, one store: 20 pulls of ${BLOB_BYTES / MiB} MiB, upstream blob GETs ${proxy.count({ method: 'GET', kind: 'blob' })}`);
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

    it('leaves no partial blob that can be served, cleans up at start-up, and pulls again', async () => {
      storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-crash-'));
      const body = randomBytes(8 * MiB);
      const digest = digestOf(body);
      const gated = gatedBlob(body, 3 * MiB);
      upstream.setBlob(digest, gated.handler);
      const first = await spawnMirror(upstream.url);
      const response = await request(`${first.url}/v2/library/app/blobs/${digest}`);
      expect(response.statusCode).toBe(200);
      response.body.on('error', () => undefined);
      await gated.started;
      await expectSoon(async () => (await tempFiles(storeDir)).some((f) => !f.startsWith('fills/')));

      await first.kill();
      const left = await tempFiles(storeDir);
      expect(left.filter((f) => !f.startsWith('fills/')).length).toBeGreaterThanOrEqual(1);

      upstream.setBlob(digest, (_req, res) => {
        res.writeHead(200, { 'content-length': String(body.length) });
        res.end(body);
      });
      const second = await spawnMirror(upstream.url);
      // Start-up removed the dead process's spool and fill record; nothing reached blobs/.
      expect(await tempFiles(storeDir)).toEqual([]);
      const hex = digest.slice('sha256:'.length);
      await expect(stat(join(storeDir, 'blobs', 'sha256', hex.slice(0, 2), hex))).rejects.toThrow(/ENOENT/);
      const head = await fetchHashed(`${second.url}/v2/library/app/blobs/${digest}`, { method: 'HEAD' });
      expect(head.headers['content-length']).toBe(String(body.length));
      const pulled = await fetchHashed(`${second.url}/v2/library/app/blobs/${digest}`);
      expect(pulled.status).toBe(200);
      expect(pulled.bytes).toBe(body.length);
      expect(pulled.sha256).toBe(digest);
      gated.finish();
    });
  });
});

/** Polls a condition a child process makes true; bounded. */
async function expectSoon(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
