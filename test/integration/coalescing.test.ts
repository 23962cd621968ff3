import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { pushBlob, seededDigest } from '../support/images.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror.js';
import { freePort } from '../support/ports.js';
import { fetchHashed } from '../support/http.js';

const BLOB_BYTES = 100 * 1024 * 1024;
const CLIENTS = 50;

/**
 * The headline promise: N concurrent cold requests for one blob cause one upstream
 * GET, and every client streams verified bytes. Runs the built mirror as a child
 * process, as users do, so its peak RSS is its own.
 */
describe('50 concurrent cold pulls of one 100 MiB blob', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorProcess;
  let digest: string;

  beforeAll(async () => {
    registry = await startRegistry();
    digest = await seededDigest('fan-out', BLOB_BYTES);
    await pushBlob(registry.url, 'library/big-synth', { seed: 'fan-out', size: BLOB_BYTES });
    proxy = await startCountingProxy(registry.url);
    mirror = await startMirrorProcess({ upstreams: { 'docker.io': { url: proxy.url, library: true } } }, await freePort());
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  it('fetches the blob from upstream exactly once and gives every client the right bytes', async () => {
    const url = `${mirror.url}/v2/library/big-synth/blobs/${digest}`;
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: CLIENTS }, () => fetchHashed(url)));
    const mirrorMs = performance.now() - started;
    for (const res of results) {
      expect(res.status).toBe(200);
      expect(res.bytes).toBe(BLOB_BYTES);
      expect(res.sha256).toBe(digest);
    }
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(1);
    proxy.reset();

    // The same 50 clients straight at the upstream, for the closing note's comparison.
    const directStarted = performance.now();
    const direct = await Promise.all(
      Array.from({ length: CLIENTS }, () => fetchHashed(`${registry.url}/v2/library/big-synth/blobs/${digest}`)),
    );
    const directMs = performance.now() - directStarted;
    for (const res of direct) expect(res.sha256).toBe(digest);

    const warm = await fetchHashed(url);
    expect(warm.sha256).toBe(digest);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);

    const peakRss = await mirror.peakRssBytes();
    console.log(
      `coalescing: ${CLIENTS} clients, upstream blob GETs 1, mirror wall ${Math.round(mirrorMs)} ms, ` +
        `${CLIENTS} direct from upstream ${Math.round(directMs)} ms, mirror peak RSS ${Math.round(peakRss / 1048576)} MiB`,
    );
  });
});
