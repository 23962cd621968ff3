import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { digestOf, gatedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';
import { tempFiles } from '../support/store.js';

/**
 * A bad upstream body must reach the client as a broken transfer (headers were already
 * sent) or, when the fill failed before the client joined it, as an OCI error: never
 * as a clean 200.
 */
async function expectNoCleanBody(url: string): Promise<void> {
  const outcome = await fetchHashed(url).then(
    (res) => res.status,
    () => 'broken',
  );
  expect(outcome === 'broken' || (typeof outcome === 'number' && outcome >= 500), `got ${outcome}`).toBe(true);
}

/** Faults a real registry will not produce, against an in-test upstream. */
describe('fills under upstream faults', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;

  beforeEach(async () => {
    upstream = await startFakeUpstream();
    mirror = await startMirror({
      upstreams: { 'fake.test': { url: upstream.url } },
      upstreamDefaults: { retries: 0, timeouts: { connect: '2s', headers: '2s', body: '2s' } },
    });
  });

  afterEach(async () => {
    await mirror.runtime.mirror.drain();
    expect(mirror.runtime.mirror.fillsInFlight).toBe(0);
    expect(await tempFiles(mirror.storeDir)).toEqual([]);
    await mirror.stop();
    await upstream.stop();
  });

  const blobUrl = (digest: string): string => `${mirror.url}/v2/org/app/blobs/${digest}`;

  it('never ends a response cleanly when the upstream sends wrong bytes of the right length, and stores nothing', async () => {
    const good = randomBytes(300_000);
    const digest = digestOf(good);
    const wrong = Buffer.from(good);
    wrong.writeUInt8(wrong.readUInt8(wrong.length - 10) ^ 0xff, wrong.length - 10);
    upstream.setBlob(digest, (_req, res) => {
      res.writeHead(200, { 'content-length': String(wrong.length) });
      res.end(wrong);
    });
    await expectNoCleanBody(blobUrl(digest));
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBeUndefined();
    const failures = await mirror.runtime.metrics.verifyFailures.get();
    expect(failures.values.find((v) => v.labels.kind === 'blob')?.value).toBe(1);
  });

  it('breaks the transfer when the upstream cuts the body short, and a later request fetches it cleanly', async () => {
    const body = randomBytes(200_000);
    const digest = digestOf(body);
    upstream.setBlob(digest, (_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.write(body.subarray(0, 100_000));
      setImmediate(() => res.destroy());
    });
    await expectNoCleanBody(blobUrl(digest));
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBeUndefined();
    upstream.setBlob(digest, (_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    });
    const res = await fetchHashed(blobUrl(digest));
    expect(res.status).toBe(200);
    expect(res.sha256).toBe(digest);
  });

  it('sends headers before the body is complete, and holds back the last byte until verified', async () => {
    const body = randomBytes(1 << 20);
    const digest = digestOf(body);
    const gated = gatedBlob(body, body.length - 1);
    upstream.setBlob(digest, gated.handler);
    const response = await request(blobUrl(digest));
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-length']).toBe(String(body.length));
    const reader = response.body[Symbol.asyncIterator]();
    let received = 0;
    while (received < body.length - 2) {
      const next = await reader.next();
      received += (next.value as Buffer).length;
    }
    // Upstream has sent all but one byte: the client must not have all of its own yet.
    expect(received).toBeLessThan(body.length);
    gated.finish();
    for (;;) {
      const next = await reader.next();
      if (next.done) break;
      received += (next.value as Buffer).length;
    }
    expect(received).toBe(body.length);
  });

  it('keeps filling when the client that started the fill disconnects, so the retry is a hit', async () => {
    const body = randomBytes(2 << 20);
    const digest = digestOf(body);
    const gated = gatedBlob(body, 64 << 10);
    upstream.setBlob(digest, gated.handler);
    const controller = new AbortController();
    const response = await request(blobUrl(digest), { signal: controller.signal });
    await gated.started;
    controller.abort();
    await response.body.text().catch(() => undefined);
    gated.finish();
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBe(body.length);
    const gets = upstream.hits.filter((h) => h.method === 'GET').length;
    const again = await fetchHashed(blobUrl(digest));
    expect(again.sha256).toBe(digest);
    expect(upstream.hits.filter((h) => h.method === 'GET').length).toBe(gets);
  });

  it('serves a resumed Range request from a blob still being fetched', async () => {
    const body = randomBytes(1 << 20);
    const digest = digestOf(body);
    const gated = gatedBlob(body, 512 << 10);
    upstream.setBlob(digest, gated.handler);
    const first = request(blobUrl(digest)).then((r) => r.body.arrayBuffer());
    await gated.started;
    const resumed = await request(blobUrl(digest), { headers: { range: 'bytes=524288-' } });
    expect(resumed.statusCode).toBe(206);
    expect(resumed.headers['content-range']).toBe(`bytes 524288-${body.length - 1}/${body.length}`);
    gated.finish();
    const tail = Buffer.from(await resumed.body.arrayBuffer());
    expect(tail.equals(body.subarray(524288))).toBe(true);
    expect(Buffer.from(await first).equals(body)).toBe(true);
    expect(upstream.hits.filter((h) => h.method === 'GET').length).toBe(1);
  });

  it('passes the referrers API through with its media type and query, and without ns', async () => {
    const subject = `sha256:${'b'.repeat(64)}`;
    const index = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
    let seenQuery = '';
    upstream.setPath(`org/app/referrers/${subject}`, (req, res) => {
      seenQuery = (req.url ?? '').split('?')[1] ?? '';
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'oci-filters-applied': 'artifactType' });
      res.end(index);
    });
    const res = await fetchHashed(`${mirror.url}/v2/org/app/referrers/${subject}?ns=fake.test&artifactType=application%2Fspdx`, {
      keepBody: true,
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json');
    expect(res.headers['oci-filters-applied']).toBe('artifactType');
    expect(res.body?.toString()).toBe(index);
    expect(seenQuery).toBe('artifactType=application%2Fspdx');
  });
});
