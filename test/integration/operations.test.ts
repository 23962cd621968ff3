import { connect } from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';
import { createLogger } from '../../src/log.js';
import type { Digest } from '../../src/oci/digest.js';

/** Self-healing, metrics, access logs and the TLS probe, against a real registry. */
describe('operations', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  let image: Pushed;
  const logLines: Record<string, unknown>[] = [];

  beforeAll(async () => {
    registry = await startRegistry();
    image = await pushImage(
      registry.url,
      'library/ops-synth',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'ops-a', size: 256 << 10 }] }),
    );
    proxy = await startCountingProxy(registry.url);
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    mirror = await startMirror({ upstreams: { 'docker.io': { url: proxy.url, library: true } } }, { log: createLogger('info', sink) });
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const base = (): string => `${mirror.url}/v2/library/ops-synth`;

  it('refetches a manifest whose stored file was damaged instead of serving it', async () => {
    expect((await fetchHashed(`${base()}/manifests/${image.topDigest}`)).sha256).toBe(image.topDigest);
    await writeFile(mirror.runtime.store.layout.blobPath(image.topDigest as Digest), '{"damaged":true}');
    proxy.reset();
    const res = await fetchHashed(`${base()}/manifests/${image.topDigest}`);
    expect(res.sha256).toBe(image.topDigest);
    expect(proxy.count({ method: 'GET', kind: 'manifest' })).toBe(1);
  });

  it('refetches a blob whose stored file went missing', async () => {
    const blob = image.blobs[0]!;
    expect((await fetchHashed(`${base()}/blobs/${blob.digest}`)).sha256).toBe(blob.digest);
    await rm(mirror.runtime.store.layout.blobPath(blob.digest as Digest));
    proxy.reset();
    const res = await fetchHashed(`${base()}/blobs/${blob.digest}`);
    expect(res.sha256).toBe(blob.digest);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(1);
  });

  it('answers HEAD on an uncached manifest by digest from an upstream HEAD', async () => {
    const fresh = await pushImage(
      registry.url,
      'library/ops-synth',
      undefined,
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'ops-b', size: 1024 }] }),
    );
    proxy.reset();
    const head = await fetchHashed(`${base()}/manifests/${fresh.topDigest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['docker-content-digest']).toBe(fresh.topDigest);
    expect(head.headers['content-type']).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(proxy.count({ method: 'GET' })).toBe(0);
  });

  it('exposes hit, miss and bandwidth-saved counters at /metrics', async () => {
    const blob = image.blobs[0]!;
    await fetchHashed(`${base()}/blobs/${blob.digest}`);
    const res = await fetchHashed(`${mirror.url}/metrics`, { keepBody: true });
    const text = res.body!.toString();
    expect(res.headers['content-type']).toContain('text/plain');
    expect(text).toMatch(/oci_mirror_requests_total\{kind="blob",outcome="hit"\} [1-9]/);
    expect(text).toMatch(/oci_mirror_requests_total\{kind="blob",outcome="miss"\} [1-9]/);
    expect(text).toMatch(/oci_mirror_bandwidth_saved_bytes_total [1-9]/);
    expect(text).toMatch(/oci_mirror_upstream_fetched_bytes_total\{upstream="docker.io"\} [1-9]/);
    expect(text).toContain('oci_mirror_upstream_request_duration_seconds_bucket');
    expect(text).not.toContain('ops-synth');
  });

  it('writes one access line per request with its cache facts, and never the Authorization header', async () => {
    logLines.length = 0;
    await fetchHashed(`${base()}/manifests/v1`, { headers: { authorization: 'Bearer very-secret' } });
    const access = logLines.filter((l) => l['msg'] === 'request');
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({ method: 'GET', kind: 'manifest', upstream: 'docker.io', status: 200 });
    expect(['hit', 'miss', 'revalidated']).toContain(access[0]!['outcome']);
    expect(JSON.stringify(logLines)).not.toContain('very-secret');
  });

  it('answers a TLS handshake on the plain-HTTP port with 400 and keeps serving', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(new URL(mirror.url).port), '127.0.0.1');
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString('latin1')));
      socket.on('close', () => resolve(data));
      socket.on('error', reject);
      // The first bytes of a TLS 1.2 ClientHello, as skopeo and podman send them.
      socket.write(Buffer.from('16030100a5010000a10303', 'hex'));
      socket.write(Buffer.alloc(64, 0x41));
    });
    expect(reply.startsWith('HTTP/1.1 400')).toBe(true);
    expect((await fetchHashed(`${mirror.url}/v2/`)).status).toBe(200);
  });
});
