import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';
import { metricValue } from '../support/metrics.js';
import { digestOf, servedBlob, startFakeUpstream } from '../support/fake-upstream.js';

/**
 * Tag policy against a real registry: revalidation costs one HEAD and no GET when the
 * tag did not move; when the upstream is gone, cached tags and digests still pull.
 * freshFor 0s makes every tag request a revalidation, with no clock games.
 */
describe('tags: revalidated, changed, stale', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  let v1: Pushed;

  beforeAll(async () => {
    registry = await startRegistry();
    v1 = await pushImage(
      registry.url,
      'library/tagged-synth',
      'latest',
      buildImage({ mediaTypes: 'docker', layers: [{ seed: 'tag-v1', size: 64 << 10 }] }),
    );
    proxy = await startCountingProxy(registry.url);
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: proxy.url, library: true, freshFor: '0s', downFor: '1s' } },
      upstreamDefaults: { retries: 0, timeouts: { connect: '1s', headers: '2s', body: '2s' } },
    });
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const tagUrl = (): string => `${mirror.url}/v2/tagged-synth/manifests/latest`;

  it('revalidates an unchanged tag with one HEAD and no GET', async () => {
    expect((await fetchHashed(tagUrl())).sha256).toBe(v1.topDigest);
    proxy.reset();
    const again = await fetchHashed(tagUrl());
    expect(again.sha256).toBe(v1.topDigest);
    expect(proxy.count({ method: 'HEAD', kind: 'manifest' })).toBe(1);
    expect(proxy.count({ method: 'GET', kind: 'manifest' })).toBe(0);
    const requests = await mirror.runtime.metrics.requests.get();
    expect(requests.values.find((v) => v.labels.outcome === 'revalidated')?.value).toBeGreaterThanOrEqual(1);
  });

  it('refreshes every part of the image when a HEAD revalidates the tag', async () => {
    const layer = v1.blobs[0]!;
    const config = v1.blobs[1]!;
    for (const blob of [layer, config]) {
      expect((await fetchHashed(`${mirror.url}/v2/tagged-synth/blobs/${blob.digest}`)).sha256).toBe(blob.digest);
    }
    const recency = (): string[] => mirror.runtime.index.list().map((e) => e.digest as string);
    expect(recency().at(-1)).toBe(config.digest);
    proxy.reset();
    const head = await fetchHashed(tagUrl(), { method: 'HEAD' });
    expect(head.headers['docker-content-digest']).toBe(v1.topDigest);
    expect(proxy.count({ method: 'HEAD', kind: 'manifest' })).toBe(1);
    // The walk refreshes the manifest, its config, then its layer: what containerd resolves keeps its layers.
    expect(recency().slice(-3)).toEqual([v1.topDigest, config.digest, layer.digest]);
  });

  it('follows a tag that moved upstream', async () => {
    const v2 = await pushImage(
      registry.url,
      'library/tagged-synth',
      'latest',
      buildImage({ mediaTypes: 'docker', layers: [{ seed: 'tag-v2', size: 64 << 10 }] }),
    );
    const res = await fetchHashed(tagUrl());
    expect(res.sha256).toBe(v2.topDigest);
    expect(res.sha256).not.toBe(v1.topDigest);
    v1 = v2;
  });

  it('serves cached tags and digests when the upstream is stopped', async () => {
    const blob = v1.blobs[0]!;
    expect((await fetchHashed(`${mirror.url}/v2/tagged-synth/blobs/${blob.digest}`)).sha256).toBe(blob.digest);
    await registry.stop();
    const tag = await fetchHashed(tagUrl());
    expect(tag.status).toBe(200);
    expect(tag.sha256).toBe(v1.topDigest);
    const head = await fetchHashed(tagUrl(), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['docker-content-digest']).toBe(v1.topDigest);
    const byDigest = await fetchHashed(`${mirror.url}/v2/tagged-synth/manifests/${v1.topDigest}`);
    expect(byDigest.sha256).toBe(v1.topDigest);
    const cachedBlob = await fetchHashed(`${mirror.url}/v2/tagged-synth/blobs/${blob.digest}`);
    expect(cachedBlob.sha256).toBe(blob.digest);
    const stale = await mirror.runtime.metrics.staleServed.get();
    expect(stale.values[0]?.value).toBeGreaterThanOrEqual(2);
    const unknown = await fetchHashed(`${mirror.url}/v2/tagged-synth/manifests/never-cached`);
    expect(unknown.status).toBeGreaterThanOrEqual(500);
    await registry.restart();
  });
});

/**
 * tags/list (with n/last pages) and referrers are cached per request under the tag
 * freshness policy: fresh answers cost no upstream request, and when the upstream is
 * gone, or the mirror offline, the last answers are served stale; a 404 stays a 404.
 */
describe('tag lists and referrers survive outages', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  let image: Pushed;
  let pages = { last: '', second: [] as string[] };

  beforeAll(async () => {
    registry = await startRegistry();
    for (const tag of ['1.0', '1.1', '2.0']) {
      image = await pushImage(
        registry.url,
        'library/listed-synth',
        tag,
        buildImage({ mediaTypes: 'oci', layers: [{ seed: 'listed', size: 4096 }] }),
      );
    }
    proxy = await startCountingProxy(registry.url);
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: proxy.url, library: true, freshFor: '1h', downFor: '1s' } },
      upstreamDefaults: { retries: 0, timeouts: { connect: '1s', headers: '2s', body: '2s' } },
    });
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const list = async (query = '') => {
    const res = await fetchHashed(`${mirror.url}/v2/listed-synth/tags/list${query}`, { keepBody: true });
    return {
      status: res.status,
      link: res.headers['link'],
      tags: res.status === 200 ? (JSON.parse(String(res.body)) as { tags: string[] }).tags : [],
    };
  };
  const referrers = () => fetchHashed(`${mirror.url}/v2/listed-synth/referrers/${image.topDigest}`, { keepBody: true });

  it('caches each page apart, and answers fresh pages without asking the upstream', async () => {
    // Distribution 2.8 ignores n and last, so what is proven is the cache key: each query its own entry.
    const all = (await list()).tags;
    expect([...all].sort()).toEqual(['1.0', '1.1', '2.0']);
    const first = await list('?n=2');
    const second = await list('?n=2&last=1.1');
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    // Distribution 2.8 has no referrers API: its 404 is passed on, never cached (asked twice).
    expect((await referrers()).status).toBe(404);
    expect((await referrers()).status).toBe(404);
    expect(proxy.count({ pathIncludes: '/referrers/' })).toBe(2);
    expect(proxy.count({ kind: 'tags' })).toBe(3);
    expect(proxy.count({ pathIncludes: 'tags/list?n=2&last=1.1' })).toBe(1);
    proxy.reset();
    expect((await list('?n=2')).tags).toEqual(first.tags);
    expect((await list('?n=2&last=1.1')).tags).toEqual(second.tags);
    expect((await list()).tags).toEqual(all);
    expect(proxy.requests).toHaveLength(0);
    pages = { last: '1.1', second: second.tags };
  });

  it('answers 404 for an unknown repository, and caches no such answer', async () => {
    const unknown = await fetchHashed(`${mirror.url}/v2/never-pushed-synth/tags/list`);
    expect(unknown.status).toBe(404);
    expect((await fetchHashed(`${mirror.url}/v2/never-pushed-synth/tags/list`)).status).toBe(404);
    expect(proxy.count({ kind: 'tags', pathIncludes: 'never-pushed' })).toBe(2);
  });

  it('serves the last lists stale when the upstream is stopped, and from an offline mirror', async () => {
    await registry.stop();
    await proxy.stop();
    const stale = await startMirror(
      {
        upstreams: { 'docker.io': { url: proxy.url, library: true, freshFor: '0s' } },
        upstreamDefaults: { retries: 0, timeouts: { connect: '1s', headers: '2s', body: '2s' } },
      },
      { storeDir: mirror.storeDir },
    );
    try {
      const res = await fetchHashed(`${stale.url}/v2/listed-synth/tags/list?n=2&last=${pages.last}`, { keepBody: true });
      expect(res.status).toBe(200);
      expect(JSON.parse(String(res.body))).toMatchObject({ tags: pages.second });
      expect((await fetchHashed(`${stale.url}/v2/listed-synth/tags/list`)).status).toBe(200);
      expect(await metricValue(stale.runtime.metrics.staleServed, { upstream: 'docker.io' })).toBe(2);
      const never = await fetchHashed(`${stale.url}/v2/listed-synth/tags/list?n=1`);
      expect(never.status).toBeGreaterThanOrEqual(500);
    } finally {
      await stale.stop();
    }
    const offline = await startMirror(
      { upstreams: { 'docker.io': { url: proxy.url, library: true, freshFor: '0s' } }, offline: true },
      { storeDir: mirror.storeDir },
    );
    try {
      const res = await fetchHashed(`${offline.url}/v2/listed-synth/tags/list`, { keepBody: true });
      expect(res.status).toBe(200);
      expect([...(JSON.parse(String(res.body)) as { tags: string[] }).tags].sort()).toEqual(['1.0', '1.1', '2.0']);
      expect((await fetchHashed(`${offline.url}/v2/listed-synth/tags/list?n=1`)).status).toBe(404);
    } finally {
      await offline.stop();
    }
  });
});

/** Referrers (OCI distribution spec, "Listing Referrers") against an upstream that has the API. */
describe('referrers are cached and served stale', () => {
  it('serves a referrers index from the cache while fresh, and stale once the upstream is gone', async () => {
    const upstream = await startFakeUpstream();
    const subject = `sha256:${'a'.repeat(64)}`;
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }));
    upstream.setPath(`org/app/referrers/${subject}`, servedBlob(index, { 'content-type': 'application/vnd.oci.image.index.v1+json' }));
    const config = (freshFor: string) => ({
      upstreams: { 'fake.test': { url: upstream.url, freshFor } },
      upstreamDefaults: { retries: 0, timeouts: { connect: '1s', headers: '2s', body: '2s' } },
    });
    const fresh = await startMirror(config('1h'));
    const url = (mirror: MirrorHandle) => `${mirror.url}/v2/org/app/referrers/${subject}`;
    try {
      for (let i = 0; i < 3; i++) {
        const res = await fetchHashed(url(fresh), { keepBody: true });
        expect(res.status).toBe(200);
        expect(res.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json');
        expect(String(res.body)).toBe(String(index));
      }
      expect(upstream.hits.filter((h) => h.path.includes('/referrers/'))).toHaveLength(1);
      expect(await metricValue(fresh.runtime.metrics.requests, { kind: 'referrers', outcome: 'hit' })).toBe(2);
      await upstream.stop();
      const stale = await startMirror(config('0s'), { storeDir: fresh.storeDir });
      try {
        const res = await fetchHashed(url(stale), { keepBody: true });
        expect(res.status).toBe(200);
        expect(res.sha256).toBe(digestOf(index));
        expect(await metricValue(stale.runtime.metrics.requests, { kind: 'referrers', outcome: 'stale' })).toBe(1);
      } finally {
        await stale.stop();
      }
    } finally {
      await fresh.stop();
    }
  });
});
