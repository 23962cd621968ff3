import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { digestOf, rangedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { CLIENT_MANIFEST_ACCEPT, fetchHashed } from '../support/http.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { metricValue } from '../support/metrics.js';
import { expectNoTempFiles } from '../support/store.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Every kind of upstream answer to a resume, and the small requests that are retried whole instead. */
describe('upstream answers to a resume', () => {
  let upstream: FakeUpstream;
  let storage: FakeUpstream;
  let mirror: MirrorHandle;

  beforeEach(async () => {
    upstream = await startFakeUpstream();
    storage = await startFakeUpstream();
    mirror = await startMirror({
      upstreams: { 'fake.test': { url: upstream.url } },
      upstreamDefaults: { retries: 1, resume: { backoff: '10ms' }, timeouts: { connect: '2s', headers: '2s', body: '2s' } },
    });
  });

  afterEach(async () => {
    await mirror.runtime.mirror.drain();
    expect(mirror.runtime.mirror.fillsInFlight).toBe(0);
    await expectNoTempFiles(mirror.storeDir);
    await mirror.stop();
    await upstream.stop();
    await storage.stop();
  });

  const blobUrl = (digest: string): string => `${mirror.url}/v2/org/app/blobs/${digest}`;
  const resumes = (outcome: string): Promise<number> =>
    metricValue(mirror.runtime.metrics.upstreamResumes, { upstream: 'fake.test', outcome });

  it('starts the spool and hash over on 416 while no reader took a byte', async () => {
    const body = randomBytes(400_000);
    const digest = digestOf(body);
    // Cut after one byte: a reader holds back the last byte it has, so it took none.
    const blob = rangedBlob(body, { cuts: [1], refuseRanges: true });
    upstream.setBlob(digest, blob);
    const res = await fetchHashed(blobUrl(digest));
    expect(res).toMatchObject({ status: 200, bytes: body.length, sha256: digest });
    expect(blob.gets).toEqual([{}, { range: 'bytes=1-', ifRange: `"${digest}"` }, {}]);
    expect(await resumes('restarted')).toBe(1);
    expect(await metricValue(mirror.runtime.metrics.upstreamRefetchedBytes)).toBe(0);
  });

  it('re-reads and discards up to the offset on 416 once a reader took bytes, so it reads on', async () => {
    const body = randomBytes(400_000);
    const digest = digestOf(body);
    const blob = rangedBlob(body, { cuts: [300_000], refuseRanges: true });
    upstream.setBlob(digest, blob);
    const res = await fetchHashed(blobUrl(digest));
    expect(res).toMatchObject({ status: 200, bytes: body.length, sha256: digest });
    expect(blob.gets).toEqual([{}, { range: 'bytes=300000-', ifRange: `"${digest}"` }, {}]);
    expect(await resumes('refetched')).toBe(1);
    expect(await resumes('restarted')).toBe(0);
    expect(await metricValue(mirror.runtime.metrics.upstreamRefetchedBytes)).toBe(300_000);
  });

  it('treats a Content-Range from another offset as a refusal', async () => {
    const body = randomBytes(400_000);
    const digest = digestOf(body);
    let gets = 0;
    upstream.setBlob(digest, (req, res) => {
      gets++;
      if (gets === 1) return cutAt(res, body, 200_000);
      if (req.headers.range) {
        res.writeHead(206, { 'content-length': String(body.length - 100), 'content-range': `bytes 100-${body.length - 1}/${body.length}` });
        return void res.end(body.subarray(100));
      }
      res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    });
    const res = await fetchHashed(blobUrl(digest));
    expect(res).toMatchObject({ status: 200, bytes: body.length, sha256: digest });
    expect(gets).toBe(3);
    expect(await resumes('refetched')).toBe(1);
  });

  it('goes back through the registry for a fresh redirect when the signed storage URL expired', async () => {
    const body = randomBytes(600_000);
    const digest = digestOf(body);
    const issued = new Set<string>();
    const storageStatuses: number[] = [];
    let registryGets = 0;
    upstream.setBlob(digest, (_req, res) => {
      registryGets++;
      const signature = randomBytes(8).toString('hex');
      issued.add(signature);
      res.writeHead(307, { location: `${storage.url}/storage/blobs/${digest}?sig=${signature}` }).end();
    });
    const blob = rangedBlob(body, { cuts: [250_000] });
    storage.setBlob(digest, (req, res) => {
      const signature = new URL(req.url ?? '/', 'http://x').searchParams.get('sig') ?? '';
      // Each signed URL expires once used: a resume that reused it would get 403.
      const valid = issued.delete(signature);
      storageStatuses.push(valid ? 200 : 403);
      if (!valid) return void res.writeHead(403, { 'content-type': 'application/xml' }).end('<Error>Request has expired</Error>');
      blob(req, res);
    });
    const res = await fetchHashed(blobUrl(digest));
    expect(res).toMatchObject({ status: 200, bytes: body.length, sha256: digest });
    expect(registryGets).toBe(2);
    expect(storageStatuses).toEqual([200, 200]);
    expect(blob.gets).toEqual([{}, { range: 'bytes=250000-', ifRange: `"${digest}"` }]);
    expect(await resumes('resumed')).toBe(1);
  });

  it('fetches a manifest cut mid-body again whole', async () => {
    const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(Buffer.from('{}')), size: 2 };
    const annotations = { pad: 'x'.repeat(4000) };
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [], annotations }));
    let gets = 0;
    upstream.setPath('org/app/manifests/v1', (req, res) => {
      gets++;
      const headers = { 'content-type': OCI_MANIFEST, 'docker-content-digest': digestOf(manifest) };
      if (req.method === 'GET' && gets === 1) return cutAt(res, manifest, 1000, headers);
      res.writeHead(200, { ...headers, 'content-length': String(manifest.length) }).end(req.method === 'HEAD' ? undefined : manifest);
    });
    const res = await fetchHashed(`${mirror.url}/v2/org/app/manifests/v1`, { headers: { accept: CLIENT_MANIFEST_ACCEPT }, keepBody: true });
    expect(res.status).toBe(200);
    expect(res.sha256).toBe(digestOf(manifest));
    expect(gets).toBe(2);
    expect(await resumes('refetched')).toBe(1);
  });

  it('fetches a token cut mid-body again whole', async () => {
    const body = randomBytes(100_000);
    const digest = digestOf(body);
    let tokenGets = 0;
    const realm = `${upstream.url}/token`;
    upstream.setPath('/token', (_req, res) => {
      tokenGets++;
      const token = Buffer.from(JSON.stringify({ token: 'good-token', expires_in: 300 }));
      if (tokenGets === 1) return cutAt(res, token, 10, { 'content-type': 'application/json' });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(token.length) }).end(token);
    });
    upstream.setBlob(digest, (req, res) => {
      if (req.headers.authorization !== 'Bearer good-token') {
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="fake"` }).end();
      }
      res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    });
    const res = await fetchHashed(blobUrl(digest));
    expect(res).toMatchObject({ status: 200, sha256: digest });
    expect(tokenGets).toBe(2);
  });
});

/** Announces `body` whole, sends its first `bytes`, then (once they were read) closes the connection. */
function cutAt(res: ServerResponse<IncomingMessage>, body: Buffer, bytes: number, headers: Record<string, string> = {}): void {
  res.writeHead(200, { ...headers, 'content-length': String(body.length) });
  res.write(body.subarray(0, bytes), () => setTimeout(() => res.socket?.end(), 50));
}
