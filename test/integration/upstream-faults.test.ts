import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/oci/digest.js';
import {
  closeAfter,
  digestOf,
  drip,
  failWith,
  redirectTo,
  resetAfter,
  servedBlob,
  silent,
  startFakeUpstream,
  type BlobHandler,
  type FakeUpstream,
} from '../support/fake-upstream.js';
import { fetchOutcome, type Outcome } from '../support/http.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { metricValue, upstreamRoundTrips } from '../support/metrics.js';
import { freePort } from '../support/ports.js';
import { expectNoTempFiles } from '../support/store.js';

/**
 * Every upstream fault of issue 7, against an in-test upstream: nothing partial or
 * corrupt is committed; the client gets a broken transfer or a clean OCI error, within
 * the configured timeouts; a metric counts it; once the fault clears, the next request
 * succeeds and is cached.
 */
const TIMEOUTS = { connect: '500ms', headers: '500ms', body: '500ms' };
/** No fault may hold a client longer than this: the timeouts above, and margin for a busy machine. */
const BOUND_MS = 3_000;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** What the client must see: a transfer broken after its headers, or an OCI error. */
type Expected = 'broken' | { readonly status: number; readonly code: string; readonly headers?: Record<string, string> };

interface Counts {
  readonly fillsAborted?: number;
  readonly verifyFailures?: number;
  readonly requestErrors?: number;
  /** Upstream round trips by status class (`error`: no response at all). */
  readonly upstream?: readonly [statusClass: string, count: number];
}

interface Fault {
  readonly name: string;
  readonly serve: (body: Buffer, digest: string) => BlobHandler;
  readonly client: Expected;
  readonly counts: Counts;
}

function wrongBytes(body: Buffer): BlobHandler {
  const wrong = Buffer.from(body);
  wrong.writeUInt8(wrong.readUInt8(wrong.length - 10) ^ 0xff, wrong.length - 10);
  return servedBlob(wrong);
}

/** Chunked (no Content-Length), ends cleanly after half the body: only the digest can tell. */
function cleanShortChunked(body: Buffer): BlobHandler {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(body.subarray(0, body.length >> 1));
  };
}

/** 302s to itself with one more `hop` each time, so every Location is new: only the hop cap ends it. */
const endlessRedirects: BlobHandler = (req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const hop = Number(url.searchParams.get('hop') ?? 0) + 1;
  res.writeHead(302, { location: `${url.pathname}?hop=${hop}` });
  res.end();
};

const BLOB_FAULTS: readonly Fault[] = [
  { name: 'connection reset mid-blob', serve: (b) => resetAfter(b, b.length >> 1), client: 'broken', counts: { fillsAborted: 1 } },
  { name: 'wrong bytes with the right length', serve: wrongBytes, client: 'broken', counts: { fillsAborted: 1, verifyFailures: 1 } },
  {
    name: 'truncated body: Content-Length, then the connection closes',
    serve: (b) => closeAfter(b, b.length >> 1),
    client: 'broken',
    counts: { fillsAborted: 1 },
  },
  {
    name: 'truncated body: no Content-Length, a clean chunked end',
    serve: cleanShortChunked,
    client: 'broken',
    counts: { fillsAborted: 1, verifyFailures: 1 },
  },
  { name: 'slow drip below minSpeed', serve: (b) => drip(b, 64, 10), client: 'broken', counts: { fillsAborted: 1 } },
  {
    name: 'headers never sent',
    serve: () => silent,
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['error', 1] },
  },
  {
    name: '500',
    serve: () => failWith(500),
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['5xx', 1] },
  },
  {
    name: '502',
    serve: () => failWith(502),
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['5xx', 1] },
  },
  {
    name: '503 with Retry-After',
    serve: () => failWith(503, { 'retry-after': '7' }),
    client: { status: 503, code: 'UNAVAILABLE', headers: { 'retry-after': '7' } },
    counts: { requestErrors: 1, upstream: ['5xx', 1] },
  },
  {
    name: '429 with Retry-After',
    serve: () => failWith(429, { 'retry-after': '3' }),
    client: { status: 429, code: 'TOOMANYREQUESTS', headers: { 'retry-after': '3' } },
    counts: { requestErrors: 1, upstream: ['4xx', 1] },
  },
  {
    name: 'a redirect to itself',
    serve: (_b, d) => redirectTo(`/v2/org/app/blobs/${d}`),
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['3xx', 1] },
  },
  {
    name: 'a two-hop redirect loop',
    serve: () => redirectTo('/elsewhere/loop'),
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['3xx', 2] },
  },
  {
    name: 'an endless chain of new redirects',
    serve: () => endlessRedirects,
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['3xx', 6] },
  },
  {
    name: 'a redirect to file:',
    serve: () => redirectTo('file:///etc/passwd'),
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['3xx', 1] },
  },
  {
    name: 'a redirect to ftp:',
    serve: () => redirectTo('ftp://127.0.0.1/blob'),
    client: { status: 503, code: 'UNAVAILABLE' },
    counts: { requestErrors: 1, upstream: ['3xx', 1] },
  },
];

describe('upstream faults', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;

  beforeEach(async () => {
    upstream = await startFakeUpstream();
    mirror = await startMirror({
      upstreams: {
        'fake.test': { url: upstream.url },
        // RFC 6761: .invalid never resolves.
        'gone.invalid': { url: 'http://registry.gone.invalid:5000' },
      },
      // Neither retried nor resumed: each fault reaches the client as it is (resume.test.ts heals them).
      upstreamDefaults: { retries: 0, resume: { maxResumes: 0 }, downFor: '0s', timeouts: TIMEOUTS, minSpeed: '64KiB' },
    });
  });

  afterEach(async () => {
    await mirror.runtime.mirror.drain();
    expect(mirror.runtime.mirror.fillsInFlight).toBe(0);
    await expectNoTempFiles(mirror.storeDir);
    await mirror.stop();
    await upstream.stop();
  });

  const blobUrl = (digest: string, query = ''): string => `${mirror.url}/v2/org/app/blobs/${digest}${query}`;
  const manifestUrl = (ref: string): string => `${mirror.url}/v2/org/app/manifests/${ref}`;
  const upstreamGets = (fragment: string): number => upstream.hits.filter((h) => h.method === 'GET' && h.path.includes(fragment)).length;

  async function snapshot(): Promise<Record<string, number>> {
    const { metrics } = mirror.runtime;
    const snap: Record<string, number> = {
      fillsAborted: await metricValue(metrics.fills, { result: 'aborted' }),
      verifyFailures: await metricValue(metrics.verifyFailures),
      requestErrors: await metricValue(metrics.requests, { outcome: 'error' }),
    };
    for (const statusClass of ['2xx', '3xx', '4xx', '5xx', 'error']) {
      snap[statusClass] = await upstreamRoundTrips(metrics, { upstream: 'fake.test', status_class: statusClass });
    }
    return snap;
  }

  /** Fetches `url`, timed; asserts the client saw exactly `expected`, never a clean short body. */
  async function expectClientSees(url: string, expected: Expected, sizeBytes: number): Promise<Outcome> {
    const startedMs = performance.now();
    const outcome = await fetchOutcome(url);
    expect(performance.now() - startedMs).toBeLessThan(BOUND_MS);
    if (expected === 'broken') {
      expect(outcome.kind).toBe('broken');
      expect(outcome.status === undefined || outcome.status === 200).toBe(true);
      if (outcome.kind === 'broken') expect(outcome.bytes).toBeLessThan(sizeBytes);
      return outcome;
    }
    expect(outcome.kind).toBe('complete');
    if (outcome.kind !== 'complete') return outcome;
    expect(outcome.status).toBe(expected.status);
    expect(outcome.headers['content-type']).toMatch(/^application\/json/);
    const envelope = JSON.parse(outcome.body.toString()) as { errors: { code: string; message: string }[] };
    expect(envelope.errors[0]?.code).toBe(expected.code);
    expect(envelope.errors[0]?.message).toEqual(expect.any(String));
    for (const [name, value] of Object.entries(expected.headers ?? {})) expect(outcome.headers[name]).toBe(value);
    return outcome;
  }

  async function expectCounted(before: Record<string, number>, counts: Counts): Promise<void> {
    const after = await snapshot();
    const grew = (key: string): number => (after[key] ?? 0) - (before[key] ?? 0);
    if (counts.fillsAborted !== undefined) expect(grew('fillsAborted')).toBe(counts.fillsAborted);
    if (counts.verifyFailures !== undefined) expect(grew('verifyFailures')).toBe(counts.verifyFailures);
    if (counts.requestErrors !== undefined) expect(grew('requestErrors')).toBe(counts.requestErrors);
    if (counts.upstream) expect(grew(counts.upstream[0])).toBe(counts.upstream[1]);
  }

  /**
   * After a 429 the upstream is throttled until its Retry-After: a request meanwhile is
   * answered 429 without reaching it (a 429 is never retried or re-asked early). Resolves
   * once the throttle is over (its gauge returns to 0 by itself).
   */
  async function expectThrottledThenOver(url: string): Promise<void> {
    if ((await metricValue(mirror.runtime.metrics.upstreamThrottled, { upstream: 'fake.test' })) === 0) return;
    const hits = upstream.hits.length;
    const refused = await fetchOutcome(url);
    expect(refused.status).toBe(429);
    expect(upstream.hits.length).toBe(hits);
    while ((await metricValue(mirror.runtime.metrics.upstreamThrottled, { upstream: 'fake.test' })) !== 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** The fault has cleared: the blob is served whole, committed, and the next request is a hit. */
  async function expectBlobRecovers(digest: string, body: Buffer): Promise<void> {
    await expectThrottledThenOver(blobUrl(digest));
    upstream.setBlob(digest, servedBlob(body));
    const first = await fetchOutcome(blobUrl(digest));
    expect(first.kind === 'complete' && first.status === 200 && digestOf(first.body) === digest).toBe(true);
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as Digest)).toBe(body.length);
    const gets = upstreamGets(digest);
    const again = await fetchOutcome(blobUrl(digest));
    expect(again.kind === 'complete' && digestOf(again.body) === digest).toBe(true);
    expect(upstreamGets(digest)).toBe(gets);
  }

  describe.each(BLOB_FAULTS)('blob: $name', (fault) => {
    it('commits nothing, tells the client cleanly or breaks the transfer, counts it, and recovers', async () => {
      const body = randomBytes(256 << 10);
      const digest = digestOf(body);
      upstream.setBlob(digest, fault.serve(body, digest));
      upstream.setPath('/elsewhere/loop', redirectTo(`/v2/org/app/blobs/${digest}`));
      const before = await snapshot();
      await expectClientSees(blobUrl(digest), fault.client, body.length);
      await mirror.runtime.mirror.drain();
      expect(await mirror.runtime.store.blobs.stat(digest as Digest)).toBeUndefined();
      await expectNoTempFiles(mirror.storeDir);
      await expectCounted(before, fault.counts);
      await expectBlobRecovers(digest, body);
    });
  });

  describe('token endpoint', () => {
    let realm: string;
    /** The blob wants `Bearer good-token` and sends clients to `realm` for it. */
    function authed(serve: BlobHandler): BlobHandler {
      return (req, res) => {
        if (req.headers.authorization === 'Bearer good-token') return serve(req, res);
        res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="fake",scope="repository:org/app:pull"` });
        res.end();
      };
    }
    const json =
      (text: string): BlobHandler =>
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(text);
      };

    it.each([
      ['down (connection refused)', undefined, 'error'],
      ['answering 500', failWith(500), '5xx'],
      ['never answering', silent, 'error'],
      ['returning HTML', json('<html>login</html>'), '2xx'],
      ['returning JSON without a token', json('{"expires_in":300}'), '2xx'],
      ['returning a token that cannot go in a header', json('{"token":"a b\\r\\nx: y"}'), '2xx'],
      ['returning more than 1 MiB', json(`{"token":"${'t'.repeat(2 << 20)}"}`), '2xx'],
    ] as const)('%s: a clean 503, counted, and the next pull after it recovers works', async (_name, tokenHandler, tokenClass) => {
      realm = tokenHandler ? `${upstream.url}/token` : `http://127.0.0.1:${await freePort()}/token`;
      if (tokenHandler) upstream.setPath('/token', tokenHandler);
      const body = randomBytes(64 << 10);
      const digest = digestOf(body);
      upstream.setBlob(digest, authed(servedBlob(body)));
      const tokenTrips = () => upstreamRoundTrips(mirror.runtime.metrics, { method: 'TOKEN', status_class: tokenClass });
      const tripsBefore = await tokenTrips();
      const before = await snapshot();
      await expectClientSees(blobUrl(digest), { status: 503, code: 'UNAVAILABLE' }, body.length);
      await expectCounted(before, { requestErrors: 1, fillsAborted: 0 });
      expect(await tokenTrips()).toBe(tripsBefore + 1);
      expect(await mirror.runtime.store.blobs.stat(digest as Digest)).toBeUndefined();

      realm = `${upstream.url}/token`;
      upstream.setPath('/token', json('{"token":"good-token","expires_in":300}'));
      upstream.setBlob(digest, authed(servedBlob(body)));
      const recovered = await fetchOutcome(blobUrl(digest));
      expect(recovered.kind === 'complete' && recovered.status === 200 && digestOf(recovered.body) === digest).toBe(true);
      await mirror.runtime.mirror.drain();
      expect(await mirror.runtime.store.blobs.stat(digest as Digest)).toBe(body.length);
    });
  });

  it('DNS failure: a clean 503 each time, counted, other upstreams unaffected', async () => {
    const body = randomBytes(1024);
    const digest = digestOf(body);
    const trips = () => upstreamRoundTrips(mirror.runtime.metrics, { upstream: 'gone.invalid', status_class: 'error' });
    for (let attempt = 1; attempt <= 2; attempt++) {
      const outcome = await expectClientSees(blobUrl(digest, '?ns=gone.invalid'), { status: 503, code: 'UNAVAILABLE' }, body.length);
      expect(outcome.kind === 'complete' && outcome.body.toString()).toMatch(/ENOTFOUND|EAI_AGAIN/);
      expect(await trips()).toBe(attempt);
    }
    expect(await mirror.runtime.store.blobs.stat(digest as Digest)).toBeUndefined();
    await expectBlobRecovers(digest, body);
  });

  describe('manifests', () => {
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: `sha256:${'c'.repeat(64)}` }, layers: [] }),
    );
    const digest = digestOf(manifest);
    const manifestHeaders = { 'content-type': OCI_MANIFEST, 'docker-content-digest': digest };
    const other = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }));

    it.each([
      ['wrong bytes for a digest', digest, servedBlob(other, { 'content-type': OCI_MANIFEST }), 502, { verifyFailures: 1 }],
      ['a tag whose body is not its Docker-Content-Digest', 'v1', servedBlob(other, manifestHeaders), 502, { verifyFailures: 1 }],
      ['connection reset mid-body', digest, resetAfter(manifest, 20), 503, { verifyFailures: 0 }],
      ['truncated body', digest, closeAfter(manifest, 20), 503, { verifyFailures: 0 }],
      ['slow drip', digest, drip(manifest, 1, 20, manifestHeaders), 503, { verifyFailures: 0 }],
      ['headers never sent', digest, silent, 503, { upstream: ['error', 1] }],
      ['500', digest, failWith(500), 503, { upstream: ['5xx', 1] }],
      ['429 with Retry-After', 'v1', failWith(429, { 'retry-after': '3' }), 429, { upstream: ['4xx', 1] }],
    ] as const)('%s: a clean OCI error, nothing stored, counted, then served and cached', async (_name, ref, handler, status, counts) => {
      upstream.setPath(`org/app/manifests/${ref}`, handler);
      const before = await snapshot();
      const code = status === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE';
      await expectClientSees(manifestUrl(ref), { status, code }, manifest.length);
      expect(await mirror.runtime.store.manifests.findType(digest as Digest)).toBeUndefined();
      await expectCounted(before, { requestErrors: 1, ...counts });

      await expectThrottledThenOver(manifestUrl(ref));
      upstream.setPath(`org/app/manifests/${ref}`, servedBlob(manifest, manifestHeaders));
      upstream.setPath(`org/app/manifests/${digest}`, servedBlob(manifest, manifestHeaders));
      const served = await fetchOutcome(manifestUrl(ref));
      expect(served.kind === 'complete' && served.status === 200 && digestOf(served.body) === digest).toBe(true);
      const gets = upstreamGets('/manifests/');
      const again = await fetchOutcome(manifestUrl(digest));
      expect(again.kind === 'complete' && again.status === 200 && digestOf(again.body) === digest).toBe(true);
      expect(upstreamGets('/manifests/')).toBe(gets);
    });
  });
});
