import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { fetchHashed } from '../support/http.js';
import { metricValue } from '../support/metrics.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';

/**
 * Docker Hub's pull quota, emulated in front of a real registry: manifest GETs count,
 * HEAD and blobs are free, and past the limit a manifest GET answers 429 without
 * Retry-After. The mirror must never spend a 429 it does not hand to a client: no
 * retries, and while throttled it answers from its cache (stale included) or with 429
 * without asking.
 */
describe('rate limits: a 429 throttles the upstream, the cache keeps serving', () => {
  const QUOTA = 3;
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  const images: Pushed[] = [];
  let client429s = 0;

  beforeAll(async () => {
    registry = await startRegistry();
    for (const tag of ['a', 'b', 'c', 'd', 'e', 'f']) {
      images.push(
        await pushImage(
          registry.url,
          'library/quota-synth',
          tag,
          buildImage({ mediaTypes: 'docker', layers: [{ seed: `quota-${tag}`, size: 4096 }] }),
        ),
      );
    }
    proxy = await startCountingProxy(registry.url, { quota: { limit: QUOTA, windowS: 21600 } });
    // freshFor 0s: every tag pull asks the upstream (a HEAD), so the throttle is what keeps it away.
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: proxy.url, library: true, freshFor: '0s' } },
      upstreamDefaults: { retries: 2, timeouts: { connect: '1s', headers: '2s', body: '2s' } },
    });
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const get = async (path: string) => {
    const res = await fetchHashed(`${mirror.url}/v2/quota-synth/${path}`);
    if (res.status === 429) client429s++;
    return res;
  };
  const upstream429s = () => proxy.requests.filter((r) => r.status === 429).length;

  it('spends the quota on pulls, then answers the first miss with the upstream 429, not retried', async () => {
    expect((await get('tags/list')).status).toBe(200);
    for (const [i, tag] of ['a', 'b', 'c'].entries()) {
      expect((await get(`manifests/${tag}`)).sha256).toBe(images[i]!.topDigest);
      expect((await get(`blobs/${images[i]!.blobs[0]!.digest}`)).status).toBe(200);
    }
    expect(proxy.count({ method: 'GET', kind: 'manifest' })).toBe(QUOTA);
    const limited = await get('manifests/d');
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBe('60');
    expect(upstream429s()).toBe(1);
    expect(await metricValue(mirror.runtime.metrics.upstreamThrottled, { upstream: 'docker.io' })).toBe(1);
  });

  it('answers misses with 429 and Retry-After without asking the upstream', async () => {
    const before = proxy.requests.length;
    const misses = await Promise.all(['d', 'e', 'f', 'd'].map((tag) => get(`manifests/${tag}`)));
    expect(misses.map((m) => m.status)).toEqual([429, 429, 429, 429]);
    for (const miss of misses) expect(Number(miss.headers['retry-after'])).toBeGreaterThan(0);
    expect(proxy.requests.length).toBe(before);
    expect(await metricValue(mirror.runtime.metrics.upstreamThrottledRefusals, { upstream: 'docker.io' })).toBe(4);
  });

  it('serves cached tags, manifests, blobs and tag lists, stale, while throttled', async () => {
    const before = proxy.requests.length;
    for (const [i, tag] of ['a', 'b', 'c'].entries()) {
      const pulled = await get(`manifests/${tag}`);
      expect(pulled.status).toBe(200);
      expect(pulled.sha256).toBe(images[i]!.topDigest);
      expect((await get(`manifests/${images[i]!.topDigest}`)).sha256).toBe(images[i]!.topDigest);
      const blob = images[i]!.blobs[0]!;
      expect((await get(`blobs/${blob.digest}`)).sha256).toBe(blob.digest);
    }
    const tags = await get('tags/list');
    expect(tags.status).toBe(200);
    expect(proxy.requests.length).toBe(before);
    expect(await metricValue(mirror.runtime.metrics.staleServed, { upstream: 'docker.io' })).toBeGreaterThanOrEqual(4);
  });

  it('never sees more upstream 429s than clients saw', () => {
    // Reported by the test run: the figures the issue asks for.
    console.info(`quota test: upstream 429s = ${upstream429s()}, client-visible 429s = ${client429s}`);
    expect(upstream429s()).toBe(1);
    expect(client429s).toBe(5);
    expect(upstream429s()).toBeLessThanOrEqual(client429s);
  });
});
