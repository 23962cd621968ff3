import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { digestOf, gatedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { CLIENT_MANIFEST_ACCEPT, fetchHashed } from '../support/http.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { metricValue } from '../support/metrics.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { startNginx, type NginxHandle } from '../support/nginx.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';

const MiB = 1 << 20;
const FRONT_CONF = join(import.meta.dirname, '../../deploy/nginx/front.conf');

/**
 * deploy/nginx/front.conf in front of a mirror in front mode: stored blobs leave through
 * nginx (X-Accel-Redirect to the store), everything else through the mirror.
 */
describe('nginx front: stored blobs sent by nginx', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let fake: FakeUpstream;
  let mirror: MirrorHandle;
  let nginx: NginxHandle;
  let image: Pushed;

  beforeAll(async () => {
    registry = await startRegistry();
    image = await pushImage(
      registry.url,
      'library/front-synth',
      '1',
      buildImage({
        mediaTypes: 'oci',
        layers: [
          { seed: 'front-a', size: 3 * MiB },
          { seed: 'front-b', size: 200 << 10 },
        ],
      }),
    );
    proxy = await startCountingProxy(registry.url);
    fake = await startFakeUpstream();
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: proxy.url, library: true }, 'fake.test': { url: fake.url } },
      defaultUpstream: 'docker.io',
      front: { mode: 'nginx', internalPrefix: '/_store/' },
    });
    nginx = await startNginx(FRONT_CONF, { blobsDir: join(mirror.storeDir, 'blobs', 'sha256'), mirrors: [mirror.host] });
  });

  afterAll(async () => {
    await nginx?.stop();
    await mirror?.stop();
    await fake?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const layer = (): { digest: string; size: number } => {
    const found = image.blobs.find((blob) => blob.size === 3 * MiB);
    if (!found) throw new Error('no layer');
    return found;
  };
  const blobPath = (digest: string): string => `/v2/library/front-synth/blobs/${digest}`;
  const served = (): Promise<number> => metricValue(mirror.runtime.metrics.bytesServed, { source: 'cache' });

  it('passes manifests through with their headers', async () => {
    const res = await fetchHashed(`${nginx.url}/v2/library/front-synth/manifests/1`, {
      headers: { accept: CLIENT_MANIFEST_ACCEPT.join(', ') },
    });
    expect(res.status).toBe(200);
    expect(res.sha256).toBe(image.topDigest);
    expect(res.headers['docker-content-digest']).toBe(image.topDigest);
  });

  it('streams a miss from the mirror, then sends the stored blob itself', async () => {
    const { digest, size } = layer();
    const cold = await fetchHashed(`${nginx.url}${blobPath(digest)}`);
    expect([cold.status, cold.sha256, cold.bytes]).toEqual([200, digest, size]);
    expect(proxy.count({ method: 'GET', kind: 'blob', pathIncludes: digest })).toBe(1);
    await mirror.runtime.mirror.drain();

    const before = await served();
    const warm = await fetchHashed(`${nginx.url}${blobPath(digest)}`);
    expect([warm.status, warm.sha256, warm.bytes]).toEqual([200, digest, size]);
    expect(warm.headers['docker-content-digest']).toBe(digest);
    expect(warm.headers.etag).toBe(`"${digest}"`);
    expect(warm.headers['content-type']).toBe('application/octet-stream');
    expect(warm.headers['content-length']).toBe(String(size));
    expect(warm.headers['x-accel-redirect']).toBeUndefined();
    expect(proxy.count({ method: 'GET', kind: 'blob', pathIncludes: digest })).toBe(1);
    // Hit metrics as if the mirror had sent it: the blob's size, counted once.
    expect((await served()) - before).toBe(size);
    const lines = (await nginx.accessLog()).filter((line) => line.includes(digest));
    expect(lines.at(-1)).toContain(` 200 ${size} redirect="/_store/${digest.slice(7, 9)}/${digest.slice(7)}"`);
    expect(lines.filter((line) => line.includes('redirect="/_store/'))).toHaveLength(1);
  });

  it('answers a stored blob to the front with X-Accel-Redirect and no body', async () => {
    const { digest } = layer();
    const res = await request(`${mirror.url}${blobPath(digest)}`);
    const body = await res.body.arrayBuffer();
    expect(res.statusCode).toBe(200);
    expect(body.byteLength).toBe(0);
    expect(res.headers['x-accel-redirect']).toBe(`/_store/${digest.slice(7, 9)}/${digest.slice(7)}`);
    expect(res.headers['docker-content-digest']).toBe(digest);
    // A Range is nginx's to answer from the file: the mirror's answer stays a plain 200.
    const ranged = await request(`${mirror.url}${blobPath(digest)}`, { headers: { range: 'bytes=100-' } });
    await ranged.body.dump();
    expect(ranged.statusCode).toBe(200);
    expect(ranged.headers['content-range']).toBeUndefined();
  });

  it('lets nginx answer Range on a stored blob, counting the range', async () => {
    const { digest, size } = layer();
    const whole = await request(`${nginx.url}${blobPath(digest)}`);
    const bytes = Buffer.from(await whole.body.arrayBuffer());
    const before = await served();
    const res = await request(`${nginx.url}${blobPath(digest)}`, { headers: { range: 'bytes=1048576-' } });
    const part = Buffer.from(await res.body.arrayBuffer());
    expect(res.statusCode).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes 1048576-${size - 1}/${size}`);
    expect(part.equals(bytes.subarray(1048576))).toBe(true);
    expect((await served()) - before).toBe(size - 1048576);
    const beyond = await request(`${nginx.url}${blobPath(digest)}`, { headers: { range: `bytes=${size}-` } });
    await beyond.body.dump();
    expect(beyond.statusCode).toBe(416);
  });

  it('keeps HEAD with the mirror', async () => {
    const { digest, size } = layer();
    const res = await request(`${nginx.url}${blobPath(digest)}`, { method: 'HEAD' });
    await res.body.dump();
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-length']).toBe(String(size));
    expect(res.headers['docker-content-digest']).toBe(digest);
  });

  it('streams a fill through nginx before the upstream has sent it all', async () => {
    const body = randomBytes(8 * MiB);
    const digest = digestOf(body);
    const gated = gatedBlob(body, 2 * MiB);
    fake.setBlob(digest, gated.handler);
    const direct = await request(`${mirror.url}/v2/app/blobs/${digest}?ns=fake.test`);
    // Misses tell nginx not to buffer them.
    expect(direct.headers['x-accel-buffering']).toBe('no');
    const res = await request(`${nginx.url}/v2/app/blobs/${digest}?ns=fake.test`);
    expect(res.statusCode).toBe(200);
    let received = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      received += chunk.length;
      if (received >= MiB) break;
    }
    // A megabyte arrived while the upstream still held back three quarters of the blob.
    expect(received).toBeGreaterThanOrEqual(MiB);
    gated.finish();
    await direct.body.dump();
    await mirror.runtime.mirror.drain();
    expect(fake.hits.filter((h) => h.method === 'GET')).toHaveLength(1);
  });
});
