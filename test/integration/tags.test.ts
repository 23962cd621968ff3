import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';

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
    v1 = await pushImage(registry.url, 'library/tagged-synth', 'latest', buildImage({ mediaTypes: 'docker', layers: [{ seed: 'tag-v1', size: 64 << 10 }] }));
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
    const v2 = await pushImage(registry.url, 'library/tagged-synth', 'latest', buildImage({ mediaTypes: 'docker', layers: [{ seed: 'tag-v2', size: 64 << 10 }] }));
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
