import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { digestOf, servedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { fetchOutcome, type Outcome } from '../support/http.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';

/**
 * Client authentication (htpasswd bcrypt Basic, static bearer tokens, a /metrics token)
 * and where secrets may go: no credential or token in logs, metrics, errors or
 * responses, and no upstream's token or password sent to another upstream.
 */
const CLIENT_PASSWORD = 'client-Pa55word-7f3a9c';
const CLIENT_TOKEN = 'static-client-token-1b2c3d4e5f';
const METRICS_TOKEN = 'metrics-token-9a8b7c6d5e4f';
const UPSTREAM_A_PASSWORD = 'upstream-a-secret-0c4f';
const UPSTREAM_B_PASSWORD = 'upstream-b-secret-e81d';

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

function logSink(lines: Record<string, unknown>[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
}

describe('client authentication', () => {
  let dir: string;
  let upstream: FakeUpstream;
  let proxyA: CountingProxy;
  let proxyB: CountingProxy;
  let mirror: MirrorHandle;
  const logLines: Record<string, unknown>[] = [];
  /** Everything a client was shown, to search for secrets at the end. */
  const shown: string[] = [];
  const blob = randomBytes(8192);
  const digest = digestOf(blob);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-client-auth-'));
    // htpasswd -B writes $2y$; cost 5 keeps the test quick.
    const hash = bcrypt.hashSync(CLIENT_PASSWORD, 5).replace(/^\$2b\$/, '$2y$');
    await writeFile(join(dir, 'htpasswd'), `# pullers\nalice:${hash}\n`);
    upstream = await startFakeUpstream();
    upstream.setBlob(digest, servedBlob(blob));
    proxyA = await startCountingProxy(upstream.url, {
      tokenAuth: true,
      tokenCredentials: { username: 'mirror-a', password: UPSTREAM_A_PASSWORD },
    });
    proxyB = await startCountingProxy(upstream.url, {
      tokenAuth: true,
      tokenCredentials: { username: 'mirror-b', password: UPSTREAM_B_PASSWORD },
    });
    mirror = await startMirror(
      {
        upstreams: {
          'a.test': { url: proxyA.url, auth: { username: 'mirror-a', passwordEnv: 'UPSTREAM_A', realms: [proxyA.realmOrigin] } },
          'b.test': { url: proxyB.url, auth: { username: 'mirror-b', passwordEnv: 'UPSTREAM_B', realms: [proxyB.realmOrigin] } },
        },
        // Every request here comes from 127.0.0.1 and many fail on purpose: no throttling
        // (hostile-clients.test.ts tests it).
        clientAuth: {
          htpasswdFile: join(dir, 'htpasswd'),
          tokensEnv: 'CLIENT_TOKENS',
          metricsTokenEnv: 'METRICS_TOKEN',
          failedLoginsPerMinute: 1000,
        },
      },
      {
        env: { UPSTREAM_A: UPSTREAM_A_PASSWORD, UPSTREAM_B: UPSTREAM_B_PASSWORD, CLIENT_TOKENS: CLIENT_TOKEN, METRICS_TOKEN },
        log: createLogger('debug', logSink(logLines)),
      },
    );
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxyA?.stop();
    await proxyB?.stop();
    await upstream?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function get(path: string, authorization?: string): Promise<Outcome> {
    const outcome = await fetchOutcome(`${mirror.url}${path}`, authorization === undefined ? {} : { authorization });
    if (outcome.kind === 'complete') shown.push(JSON.stringify(outcome.headers), outcome.body.toString('latin1'));
    return outcome;
  }

  const status = (outcome: Outcome): number | undefined => (outcome.kind === 'complete' ? outcome.status : undefined);
  const blobPath = (ns: string): string => `/v2/org/app/blobs/${digest}?ns=${ns}`;

  it('asks anonymous and wrongly authenticated clients for credentials, with a Basic challenge and UNAUTHORIZED', async () => {
    const hits = upstream.hits.length;
    for (const authorization of [
      undefined,
      basic('alice', 'wrong-password'),
      basic('mallory', CLIENT_PASSWORD),
      `Bearer ${CLIENT_TOKEN}x`,
      `Bearer ${METRICS_TOKEN}`,
      'Basic !!!not-base64',
      `Digest username="alice"`,
      basic('alice', ''),
    ]) {
      for (const path of ['/v2/', blobPath('a.test'), '/v2/org/app/manifests/latest?ns=b.test']) {
        const outcome = await get(path, authorization);
        expect(status(outcome), `${path} ${authorization}`).toBe(401);
        if (outcome.kind !== 'complete') continue;
        expect(outcome.headers['www-authenticate']).toBe('Basic realm="oci-mirror", charset="UTF-8"');
        expect(JSON.parse(outcome.body.toString())).toEqual({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
      }
    }
    expect(upstream.hits.length).toBe(hits);
  });

  it('serves an htpasswd user, a static token as Bearer, and a static token as the Basic password', async () => {
    for (const authorization of [basic('alice', CLIENT_PASSWORD), `Bearer ${CLIENT_TOKEN}`, basic('ci-bot', CLIENT_TOKEN)]) {
      expect(status(await get('/v2/', authorization))).toBe(200);
      for (const ns of ['a.test', 'b.test']) {
        const outcome = await get(blobPath(ns), authorization);
        expect(outcome.kind === 'complete' && outcome.status === 200 && digestOf(outcome.body) === digest).toBe(true);
      }
    }
  });

  it('verifies a password once for many concurrent requests', async () => {
    const authorization = basic('alice', CLIENT_PASSWORD);
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => get(blobPath('a.test'), authorization)));
    expect(outcomes.map(status)).toEqual(Array(20).fill(200));
  });

  it('guards /metrics with its own token, and leaves the probes open', async () => {
    expect(status(await get('/metrics'))).toBe(401);
    expect(status(await get('/metrics', basic('alice', CLIENT_PASSWORD)))).toBe(401);
    expect(status(await get('/metrics', `Bearer ${CLIENT_TOKEN}`))).toBe(401);
    const metrics = await get('/metrics', `Bearer ${METRICS_TOKEN}`);
    expect(status(metrics)).toBe(200);
    expect(metrics.kind === 'complete' && metrics.body.toString()).toContain('oci_mirror_requests_total');
    expect(status(await get('/healthz'))).toBe(200);
    expect(status(await get('/readyz'))).toBe(200);
  });

  it('never sends one upstream its token or password to another upstream', () => {
    const seen = (proxy: CountingProxy, kind: 'token' | 'blob') =>
      new Set(proxy.requests.filter((r) => r.kind === kind).map((r) => String(r.headers.authorization ?? '')));
    const bearersA = seen(proxyA, 'blob');
    const bearersB = seen(proxyB, 'blob');
    expect([...bearersA].some((a) => a.startsWith('Bearer '))).toBe(true);
    expect([...bearersB].some((a) => a.startsWith('Bearer '))).toBe(true);
    expect([...bearersA].filter((a) => a.startsWith('Bearer ') && bearersB.has(a))).toEqual([]);
    expect([...seen(proxyA, 'token')]).toEqual([basic('mirror-a', UPSTREAM_A_PASSWORD)]);
    expect([...seen(proxyB, 'token')]).toEqual([basic('mirror-b', UPSTREAM_B_PASSWORD)]);
    // The client's credentials never go upstream at all.
    for (const proxy of [proxyA, proxyB]) {
      const sent = JSON.stringify(proxy.requests.map((r) => r.headers));
      for (const secret of [CLIENT_PASSWORD, CLIENT_TOKEN, basic('alice', CLIENT_PASSWORD)]) expect(sent).not.toContain(secret);
    }
  });

  it('writes no credential or token to logs, metrics, errors or responses', async () => {
    const metrics = await get('/metrics', `Bearer ${METRICS_TOKEN}`);
    expect(status(metrics)).toBe(200);
    const upstreamBearers = [...proxyA.requests, ...proxyB.requests]
      .map((r) => /^Bearer (.+)$/.exec(String(r.headers.authorization ?? ''))?.[1])
      .filter((t): t is string => t !== undefined);
    expect(upstreamBearers.length).toBeGreaterThan(0);
    const secrets = [
      CLIENT_PASSWORD,
      CLIENT_TOKEN,
      METRICS_TOKEN,
      UPSTREAM_A_PASSWORD,
      UPSTREAM_B_PASSWORD,
      ...upstreamBearers,
      ...[basic('alice', CLIENT_PASSWORD), basic('mirror-a', UPSTREAM_A_PASSWORD), basic('mirror-b', UPSTREAM_B_PASSWORD)].map((b) =>
        b.slice('Basic '.length),
      ),
    ];
    const logs = JSON.stringify(logLines);
    expect(logLines.filter((l) => l['msg'] === 'request').length).toBeGreaterThan(20);
    for (const secret of secrets) {
      expect(logs, 'logs').not.toContain(secret);
      for (const text of shown) expect(text, 'a response').not.toContain(secret);
    }
  });

  it('warns at start-up when an upstream has credentials and clients are anonymous, and not otherwise', async () => {
    const lines: Record<string, unknown>[] = [];
    const open = await startMirror(
      {
        upstreams: {
          'a.test': { url: proxyA.url, auth: { username: 'mirror-a', passwordEnv: 'UPSTREAM_A', realms: [proxyA.realmOrigin] } },
          'pub.test': { url: upstream.url },
        },
      },
      { env: { UPSTREAM_A: UPSTREAM_A_PASSWORD }, log: createLogger('info', logSink(lines)) },
    );
    await open.stop();
    const warning = lines.find((l) => String(l['msg']).includes('clients are anonymous'));
    expect(warning).toMatchObject({ level: 40, upstreams: ['a.test'] });
    expect(logLines.some((l) => String(l['msg']).includes('clients are anonymous'))).toBe(false);
  });

  it('refuses to start on an htpasswd file with a non-bcrypt entry, without printing it', async () => {
    const file = join(dir, 'htpasswd-md5');
    await writeFile(file, 'bob:$apr1$abcdefgh$0123456789abcdefghijkl\n');
    const storeDir = join(dir, 'refused-store');
    const started = startMirror(
      { upstreams: { 'pub.test': { url: upstream.url } }, clientAuth: { htpasswdFile: file } },
      { log: createLogger('silent'), storeDir },
    );
    await expect(started).rejects.toThrow(/line 1: only bcrypt entries are accepted/);
    await expect(started).rejects.not.toThrow(/apr1/);
    // The failed start let go of the store: no temp area, no lock left for others to wait out.
    expect(await readdir(join(storeDir, 'tmp'))).toEqual(['fills']);
    expect(await readdir(join(storeDir, 'locks'))).toEqual([]);
  });
});
