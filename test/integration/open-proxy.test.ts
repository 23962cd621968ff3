import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/oci/digest.js';
import { isLocalAddress } from '../../src/upstream/local-address.js';
import { digestOf, redirectTo, servedBlob, startFakeUpstream, type BlobHandler, type FakeUpstream } from '../support/fake-upstream.js';
import { fetchOutcome } from '../support/http.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';

/**
 * Not an open proxy: an upstream's redirects and token realms cannot make the mirror
 * fetch from this machine or its link-local neighbours (unless that upstream is itself
 * local), and per-upstream repository patterns bound what is mirrored at all.
 * `strict.test` and `local.test` are the same in-test upstream on 127.0.0.1; only
 * `strict.test` says `allowLocalRedirects: false`, as a remote upstream gets by default.
 */
/** This machine's name resolves to loopback (Debian's /etc/hosts does so): a name only DNS knows is local. */
const HOSTNAME_IS_LOCAL = await resolvesLocally(hostname());

describe('not an open proxy', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;
  /** A local service an upstream would like the mirror to reach, on 127.0.0.2. */
  let victim: Server;
  let victimPort: number;
  let victimRequests = 0;
  const secret = randomBytes(4096);
  const secretDigest = digestOf(secret);

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    victim = createServer((req, res) => {
      victimRequests++;
      servedBlob(secret)(req, res);
    });
    await new Promise<void>((resolve) => victim.listen(0, '127.0.0.2', resolve));
    victimPort = (victim.address() as { port: number }).port;
    mirror = await startMirror({
      upstreams: {
        'strict.test': {
          url: upstream.url,
          allowLocalRedirects: false,
          repositories: { allow: ['org/**', 'library/*'], deny: ['org/secret/**'] },
        },
        'local.test': { url: upstream.url },
      },
      upstreamDefaults: { retries: 0, downFor: '0s', timeouts: { connect: '500ms', headers: '1s', body: '1s' } },
    });
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
    victim?.closeAllConnections();
    await new Promise((resolve) => victim?.close(resolve));
  });

  const blobUrl = (ns: string, repository: string, digest: string): string => `${mirror.url}/v2/${repository}/blobs/${digest}?ns=${ns}`;

  async function expectRefused(ns: string, handler: BlobHandler): Promise<void> {
    upstream.setBlob(secretDigest, handler);
    const before = victimRequests;
    const outcome = await fetchOutcome(blobUrl(ns, 'org/app', secretDigest));
    expect(outcome.kind).toBe('complete');
    if (outcome.kind !== 'complete') return;
    expect(outcome.status).toBe(503);
    expect(JSON.parse(outcome.body.toString())).toMatchObject({ errors: [{ code: 'UNAVAILABLE' }] });
    expect(victimRequests).toBe(before);
    expect(await mirror.runtime.store.blobs.stat(secretDigest as Digest)).toBeUndefined();
  }

  describe.each([
    ['a loopback address', () => `http://127.0.0.2:${victimPort}/secret`],
    ['localhost', () => `http://localhost:${victimPort}/secret`],
    ['0.0.0.0 (Linux dials it as loopback)', () => `http://0.0.0.0:${victimPort}/secret`],
    ['an IPv4-mapped IPv6 loopback', () => `http://[::ffff:127.0.0.2]:${victimPort}/secret`],
    ['a loopback address written as a number', () => `http://2130706434:${victimPort}/secret`],
  ])('a redirect to %s', (_name, target) => {
    it('is refused for an upstream that may not send the mirror to local addresses', async () => {
      await expectRefused('strict.test', redirectTo(target()));
    });
  });

  it('is refused when the upstream names a local token realm', async () => {
    await expectRefused('strict.test', (_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.2:${victimPort}/token",service="x"` });
      res.end();
    });
  });

  it.runIf(HOSTNAME_IS_LOCAL)('is refused for a name that resolves to a local address (checked at connect time)', async () => {
    await expectRefused('strict.test', redirectTo(`http://${hostname()}:${victimPort}/secret`));
  });

  it('is followed for an upstream that is itself local (the default), so the refusals above are the policy', async () => {
    upstream.setBlob(secretDigest, redirectTo(`http://127.0.0.2:${victimPort}/secret`));
    const before = victimRequests;
    const outcome = await fetchOutcome(blobUrl('local.test', 'org/app', secretDigest));
    expect(outcome.kind === 'complete' && outcome.status === 200 && digestOf(outcome.body) === secretDigest).toBe(true);
    expect(victimRequests).toBe(before + 1);
  });

  describe('repository patterns', () => {
    const body = randomBytes(2048);
    const digest = digestOf(body);

    it('mirrors allowed repositories', async () => {
      upstream.setBlob(digest, servedBlob(body));
      const outcome = await fetchOutcome(blobUrl('strict.test', 'org/team/app', digest));
      expect(outcome.kind === 'complete' && outcome.status === 200 && digestOf(outcome.body) === digest).toBe(true);
      const hub = await fetchOutcome(`${mirror.url}/v2/library/alpine/manifests/latest?ns=strict.test`);
      expect(hub.kind === 'complete' && hub.status).toBe(404);
    });

    it.each(['org/secret/app', 'other/app', 'library/alpine/extra'])(
      'answers %s with 403 DENIED, from the store too, without asking upstream',
      async (repository) => {
        await mirror.runtime.mirror.drain();
        expect(await mirror.runtime.store.blobs.stat(digest as Digest)).toBe(body.length);
        const hits = upstream.hits.length;
        for (const url of [blobUrl('strict.test', repository, digest), `${mirror.url}/v2/${repository}/manifests/latest?ns=strict.test`]) {
          const outcome = await fetchOutcome(url);
          expect(outcome.kind === 'complete' && outcome.status).toBe(403);
          if (outcome.kind === 'complete') expect(JSON.parse(outcome.body.toString())).toMatchObject({ errors: [{ code: 'DENIED' }] });
        }
        expect(upstream.hits.length).toBe(hits);
      },
    );

    it('leaves other upstreams unfiltered', async () => {
      const outcome = await fetchOutcome(blobUrl('local.test', 'other/app', digest));
      expect(outcome.kind === 'complete' && outcome.status).toBe(200);
    });
  });
});

async function resolvesLocally(host: string): Promise<boolean> {
  const addresses = await lookup(host, { all: true }).catch(() => []);
  return addresses.length > 0 && addresses.every((a) => isLocalAddress(a.address));
}
