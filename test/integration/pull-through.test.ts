import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, pushIndex, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { CLIENT_MANIFEST_ACCEPT, fetchHashed } from '../support/http.js';

/**
 * The pull-through contract against a real Distribution registry, with a counting
 * proxy between the mirror and it: what reaches the upstream is what we assert.
 */
describe('pull-through against a real registry', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  let single: Pushed;
  let index: Pushed;
  let dockerList: Pushed;

  beforeAll(async () => {
    registry = await startRegistry();
    single = await pushImage(
      registry.url,
      'library/alpine-synth',
      '3.20',
      buildImage({
        mediaTypes: 'oci',
        layers: [
          { seed: 'single-a', size: 1 << 20 },
          { seed: 'single-b', size: 5 << 20 },
        ],
      }),
    );
    index = await pushIndex(registry.url, 'team/sub/app-synth', 'v1', {
      mediaTypes: 'oci',
      images: [
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'shared', size: 256 << 10 },
            { seed: 'amd64', size: 2 << 20 },
          ],
          platform: { os: 'linux', architecture: 'amd64' },
        }),
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'shared', size: 256 << 10 },
            { seed: 'arm64', size: 2 << 20 },
          ],
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        }),
      ],
    });
    dockerList = await pushIndex(registry.url, 'library/busybox-synth', 'latest', {
      mediaTypes: 'docker',
      images: [
        buildImage({
          mediaTypes: 'docker',
          layers: [{ seed: 'docker-a', size: 300 << 10 }],
          platform: { os: 'linux', architecture: 'amd64' },
        }),
      ],
    });
    proxy = await startCountingProxy(registry.url);
    mirror = await startMirror({
      upstreams: {
        'docker.io': { url: proxy.url, aliases: ['index.docker.io', 'registry-1.docker.io'], library: true },
        'ghcr.io': { url: proxy.url },
      },
      defaultUpstream: 'docker.io',
    });
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const manifestUrl = (name: string, ref: string, query = ''): string => `${mirror.url}/v2/${name}/manifests/${ref}${query}`;
  const blobUrl = (name: string, digest: string, query = ''): string => `${mirror.url}/v2/${name}/blobs/${digest}${query}`;

  it('answers the API version check without contacting the upstream', async () => {
    const res = await fetchHashed(`${mirror.url}/v2/`);
    expect(res.status).toBe(200);
    expect(res.headers['docker-distribution-api-version']).toBe('registry/2.0');
    expect(proxy.count({ kind: 'base' })).toBe(0);
  });

  it('serves a tag with the upstream bytes, media type, digest, length and ETag, on GET and HEAD', async () => {
    const get = await fetchHashed(manifestUrl('library/alpine-synth', '3.20'), { headers: { accept: CLIENT_MANIFEST_ACCEPT } });
    expect(get.status).toBe(200);
    expect(get.sha256).toBe(single.topDigest);
    expect(get.headers['content-type']).toBe(single.topMediaType);
    expect(get.headers['docker-content-digest']).toBe(single.topDigest);
    expect(get.headers['etag']).toBe(`"${single.topDigest}"`);
    expect(Number(get.headers['content-length'])).toBe(get.bytes);
    const head = await fetchHashed(manifestUrl('alpine-synth', '3.20'), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.bytes).toBe(0);
    expect(head.headers['docker-content-digest']).toBe(single.topDigest);
    expect(head.headers['content-length']).toBe(get.headers['content-length']);
    expect(head.headers['content-type']).toBe(single.topMediaType);
  });

  it('serves a fresh tag with zero upstream requests', async () => {
    await fetchHashed(manifestUrl('library/alpine-synth', '3.20'));
    proxy.reset();
    for (let i = 0; i < 20; i++) {
      const res = await fetchHashed(manifestUrl('library/alpine-synth', '3.20'));
      expect(res.sha256).toBe(single.topDigest);
    }
    expect(proxy.requests.length).toBe(0);
  });

  it('pulls an OCI index and its children by digest, and serves them again with no upstream contact', async () => {
    const top = await fetchHashed(manifestUrl('team/sub/app-synth', 'v1', '?ns=ghcr.io'));
    expect(top.sha256).toBe(index.topDigest);
    expect(top.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json');
    for (const child of index.manifests) {
      const res = await fetchHashed(manifestUrl('team/sub/app-synth', child.digest, '?ns=ghcr.io'));
      expect(res.sha256).toBe(child.digest);
      expect(res.headers['content-type']).toBe(child.mediaType);
    }
    for (const blob of index.blobs) {
      const res = await fetchHashed(blobUrl('team/sub/app-synth', blob.digest, '?ns=ghcr.io'));
      expect(res.status).toBe(200);
      expect(res.sha256).toBe(blob.digest);
      expect(res.bytes).toBe(blob.size);
    }
    proxy.reset();
    for (const child of index.manifests) await fetchHashed(manifestUrl('team/sub/app-synth', child.digest, '?ns=ghcr.io'));
    for (const blob of index.blobs) {
      const res = await fetchHashed(blobUrl('team/sub/app-synth', blob.digest, '?ns=ghcr.io'));
      expect(res.sha256).toBe(blob.digest);
    }
    expect(proxy.requests.length).toBe(0);
  });

  it('pulls a Docker manifest list with its schema2 manifests unchanged', async () => {
    const list = await fetchHashed(manifestUrl('busybox-synth', 'latest'), { headers: { accept: CLIENT_MANIFEST_ACCEPT } });
    expect(list.sha256).toBe(dockerList.topDigest);
    expect(list.headers['content-type']).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
    const child = dockerList.manifests[0]!;
    const res = await fetchHashed(manifestUrl('library/busybox-synth', child.digest));
    expect(res.sha256).toBe(child.digest);
    expect(res.headers['content-type']).toBe('application/vnd.docker.distribution.manifest.v2+json');
  });

  it('answers HEAD on an uncached blob from an upstream HEAD, without downloading it', async () => {
    const blob = single.blobs.find((b) => b.size === 5 << 20)!;
    proxy.reset();
    const head = await fetchHashed(blobUrl('library/alpine-synth', blob.digest), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(blob.size));
    expect(head.headers['docker-content-digest']).toBe(blob.digest);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);
    expect(proxy.count({ method: 'HEAD', kind: 'blob' })).toBe(1);
  });

  it('serves Range requests on a cached blob with 206 and Content-Range', async () => {
    const blob = single.blobs.find((b) => b.size === 1 << 20)!;
    const whole = await fetchHashed(blobUrl('library/alpine-synth', blob.digest), { keepBody: true });
    expect(whole.headers['accept-ranges']).toBe('bytes');
    const part = await fetchHashed(blobUrl('library/alpine-synth', blob.digest), { headers: { range: 'bytes=1000-' }, keepBody: true });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 1000-${blob.size - 1}/${blob.size}`);
    expect(part.body?.equals(whole.body!.subarray(1000))).toBe(true);
    const bad = await fetchHashed(blobUrl('library/alpine-synth', blob.digest), { headers: { range: `bytes=${blob.size}-` } });
    expect(bad.status).toBe(416);
  });

  it('routes ?ns= aliases and path prefixes to one upstream, and refuses unknown registries without dialling', async () => {
    const viaAlias = await fetchHashed(manifestUrl('library/alpine-synth', '3.20', '?ns=index.docker.io'));
    expect(viaAlias.sha256).toBe(single.topDigest);
    const viaPrefix = await fetchHashed(manifestUrl('docker.io/library/alpine-synth', '3.20'));
    expect(viaPrefix.sha256).toBe(single.topDigest);
    proxy.reset();
    const unknown = await fetchHashed(manifestUrl('library/alpine-synth', '3.20', '?ns=evil.example.com'), { keepBody: true });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body!.toString()).errors[0].code).toBe('NAME_UNKNOWN');
    expect(proxy.requests.length).toBe(0);
  });

  it('passes tags/list through with n and last', async () => {
    const res = await fetchHashed(`${mirror.url}/v2/library/alpine-synth/tags/list?n=10`, { keepBody: true });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body!.toString())).toEqual({ name: 'library/alpine-synth', tags: ['3.20'] });
  });

  it('answers push and delete with 405 UNSUPPORTED in the OCI error envelope', async () => {
    for (const [method, path] of [
      ['POST', '/v2/library/alpine-synth/blobs/uploads/'],
      ['PUT', '/v2/library/alpine-synth/manifests/3.20'],
      ['DELETE', `/v2/library/alpine-synth/manifests/${single.topDigest}`],
    ] as const) {
      const res = await request(`${mirror.url}${path}`, { method });
      expect(res.statusCode).toBe(405);
      expect(((await res.body.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe('UNSUPPORTED');
    }
  });

  it('reports MANIFEST_UNKNOWN and BLOB_UNKNOWN for content the upstream does not have', async () => {
    const manifest = await fetchHashed(manifestUrl('library/alpine-synth', 'nosuch'), { keepBody: true });
    expect(manifest.status).toBe(404);
    expect(JSON.parse(manifest.body!.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
    const blob = await fetchHashed(blobUrl('library/alpine-synth', `sha256:${'0'.repeat(64)}`), { keepBody: true });
    expect(blob.status).toBe(404);
    expect(JSON.parse(blob.body!.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
    expect(mirror.runtime.mirror.fillsInFlight).toBe(0);
  });

  it('coalesces concurrent requests for one uncached manifest into one upstream GET', async () => {
    const fresh = await pushImage(
      registry.url,
      'library/alpine-synth',
      undefined,
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'coalesce-m', size: 2048 }] }),
    );
    proxy.reset();
    const results = await Promise.all(Array.from({ length: 20 }, () => fetchHashed(manifestUrl('library/alpine-synth', fresh.topDigest))));
    for (const res of results) expect(res.sha256).toBe(fresh.topDigest);
    expect(proxy.count({ method: 'GET', kind: 'manifest' })).toBe(1);
  });

  it('refuses a manifest type the client explicitly does not accept, rather than converting it', async () => {
    const res = await fetchHashed(manifestUrl('team/sub/app-synth', 'v1', '?ns=ghcr.io'), {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' },
      keepBody: true,
    });
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body!.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
  });

  it('refuses invalid names and digests with NAME_INVALID and DIGEST_INVALID', async () => {
    const name = await fetchHashed(`${mirror.url}/v2/Bad/Name/manifests/latest`, { keepBody: true });
    expect(name.status).toBe(400);
    expect(JSON.parse(name.body!.toString()).errors[0].code).toBe('NAME_INVALID');
    const digest = await fetchHashed(`${mirror.url}/v2/library/alpine-synth/blobs/sha256:xyz`, { keepBody: true });
    expect(digest.status).toBe(400);
    expect(JSON.parse(digest.body!.toString()).errors[0].code).toBe('DIGEST_INVALID');
  });
});
