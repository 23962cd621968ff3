import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { UpstreamConfig, UpstreamCredentials } from '../../src/config/types.js';
import { createLogger, createSilentLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { createTokenCache, isInTrustBoundary, parseWwwAuthenticate, type TokenCache } from '../../src/upstream/auth.js';
import { createCredentialSource } from '../../src/upstream/credentials.js';
import { isUpstreamFailure } from '../../src/upstream/failure.js';
import { createTransport, type Transport } from '../../src/upstream/transport.js';

interface Seen {
  readonly url: URL;
  readonly headers: IncomingHttpHeaders;
}

interface TestServer {
  readonly origin: string;
  readonly seen: Seen[];
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(handler: Handler, host = '127.0.0.1'): Promise<TestServer> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    seen.push({ url: new URL(req.url ?? '/', 'http://x'), headers: req.headers });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  const close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  cleanups.push(close);
  return { origin: `http://${host}:${port}`, seen, close };
}

function json(body: unknown, status = 200): Handler {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
}

function config(url: string, credentials?: UpstreamCredentials): UpstreamConfig {
  return {
    name: 'test',
    url,
    aliases: [],
    library: false,
    ...(credentials ? { credentials } : {}),
    freshForMs: 60_000,
    maxStaleMs: 0,
    resume: { maxResumes: 0, backoffMs: 0, withinMs: 1 },
    timeouts: { connectMs: 1000, headersMs: 200, bodyMs: 200 },
    retries: 0,
    downForMs: 0,
    maxConnections: 4,
    minBytesPerSecond: 1,
    urls: [],
    throttleMs: 60_000,
  };
}

function tokenCache(
  upstreamUrl: string,
  clock: { t: number },
  credentials?: UpstreamCredentials,
): { tokens: TokenCache; transport: Transport } {
  const cfg = config(upstreamUrl, credentials);
  const transport = createTransport(cfg, { metrics: createMetrics({ processMetrics: false }) });
  cleanups.push(() => transport.close());
  const tokens = createTokenCache({
    upstreamUrl: new URL(upstreamUrl),
    credentials: credentials && createCredentialSource(credentials, { host: 'upstream.test', now: () => clock.t }),
    trustedRealms: credentials?.realms,
    send: (url, headers, signal) => transport.send('GET', url, headers, signal, 'TOKEN'),
    deadlineMs: 500,
    now: () => clock.t,
    log: createSilentLogger(),
  });
  return { tokens, transport };
}

describe('parseWwwAuthenticate', () => {
  it('parses the Docker Hub Bearer challenge', () => {
    const challenge = parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    );
    expect(challenge?.scheme).toBe('bearer');
    expect(Object.fromEntries(challenge?.params ?? [])).toEqual({
      realm: 'https://auth.docker.io/token',
      service: 'registry.docker.io',
      scope: 'repository:library/alpine:pull',
    });
  });

  it('keeps commas inside quoted strings', () => {
    const challenge = parseWwwAuthenticate('Bearer realm="https://a/token", scope="repository:a/b:pull,push"');
    expect(challenge?.params.get('scope')).toBe('repository:a/b:pull,push');
  });

  it('unescapes quoted pairs', () => {
    const challenge = parseWwwAuthenticate('Bearer realm="https://a/token",error="say \\"hi\\", \\\\ok"');
    expect(challenge?.params.get('error')).toBe('say "hi", \\ok');
  });

  it('is case-insensitive in scheme and parameter names and tolerates spaces', () => {
    const challenge = parseWwwAuthenticate('BEARER  Realm = "https://a/token" ,  SERVICE=reg');
    expect(challenge?.scheme).toBe('bearer');
    expect(challenge?.params.get('realm')).toBe('https://a/token');
    expect(challenge?.params.get('service')).toBe('reg');
  });

  it('takes the first Bearer challenge among several', () => {
    const header = 'Basic realm="basic", Negotiate abc==, Bearer realm="https://one/token",scope="x", Bearer realm="https://two/token"';
    const challenge = parseWwwAuthenticate(header);
    expect(challenge?.scheme).toBe('bearer');
    expect(challenge?.params.get('realm')).toBe('https://one/token');
    expect(challenge?.params.get('scope')).toBe('x');
  });

  it('falls back to Basic', () => {
    const challenge = parseWwwAuthenticate('Negotiate, Basic realm="Registry Realm", charset="UTF-8"');
    expect(challenge?.scheme).toBe('basic');
    expect(challenge?.params.get('realm')).toBe('Registry Realm');
  });

  it('returns undefined for empty, unknown or garbage headers', () => {
    expect(parseWwwAuthenticate('')).toBeUndefined();
    expect(parseWwwAuthenticate('Negotiate abc==')).toBeUndefined();
    expect(parseWwwAuthenticate('"unterminated ,,, = ="')).toBeUndefined();
  });

  it('does not lose an unterminated quoted value', () => {
    expect(parseWwwAuthenticate('Bearer realm="https://a/token')?.params.get('realm')).toBe('https://a/token');
  });
});

describe('isInTrustBoundary', () => {
  const boundary = (realm: string, upstream: string, realms?: string[]) => isInTrustBoundary(new URL(realm), new URL(upstream), realms);

  it('trusts the same origin', () => {
    expect(boundary('https://registry.example.com/token', 'https://registry.example.com')).toBe(true);
    expect(boundary('http://127.0.0.1:5000/token', 'http://127.0.0.1:5000')).toBe(true);
  });

  it('does not trust another port of the same host: another origin', () => {
    expect(boundary('https://registry.example.com:5001/token', 'https://registry.example.com')).toBe(false);
    expect(boundary('http://127.0.0.1:9000/token', 'http://127.0.0.1:5000')).toBe(false);
  });

  it('trusts the same registrable domain by the Public Suffix List', () => {
    expect(boundary('https://auth.docker.io/token', 'https://registry-1.docker.io')).toBe(true);
    expect(boundary('https://gitlab.com/jwt/auth', 'https://registry.gitlab.com')).toBe(true);
    expect(boundary('https://ghcr.io/token', 'https://ghcr.io')).toBe(true);
    expect(boundary('https://auth.example.co.uk/token', 'https://registry.example.co.uk')).toBe(true);
  });

  it('does not trust another tenant under a shared suffix', () => {
    expect(boundary('https://attacker.azurecr.io/oauth2/token', 'https://myreg.azurecr.io')).toBe(false);
    expect(boundary('https://myreg.azurecr.io/oauth2/token', 'https://myreg.azurecr.io')).toBe(true);
    expect(boundary('https://europe-docker.pkg.dev/v2/token', 'https://us-docker.pkg.dev')).toBe(false);
    expect(boundary('https://attacker.s3.amazonaws.com/token', 'https://mine.s3.amazonaws.com')).toBe(false);
    expect(boundary('https://attacker.github.io/token', 'https://mine.github.io')).toBe(false);
  });

  it('does not trust other domains', () => {
    expect(boundary('https://evil.example/token', 'https://registry-1.docker.io')).toBe(false);
    expect(boundary('https://docker.io.evil.example/token', 'https://registry-1.docker.io')).toBe(false);
    expect(boundary('https://evil.co.uk/token', 'https://registry.example.co.uk')).toBe(false);
  });

  it('matches IP addresses and single-label names exactly', () => {
    expect(boundary('http://localhost:5000/token', 'http://127.0.0.1:5000')).toBe(false);
    expect(boundary('http://127.0.0.2/token', 'http://127.0.0.1')).toBe(false);
    expect(boundary('http://10.0.0.1/token', 'http://10.1.0.1')).toBe(false);
    expect(boundary('http://[::1]:5000/token', 'http://[::1]:5000')).toBe(true);
  });

  it('never sends credentials from https down to http', () => {
    expect(boundary('http://auth.docker.io/token', 'https://registry-1.docker.io')).toBe(false);
  });

  it('trusts a realm origin listed in auth.realms, and only that origin', () => {
    const realms = ['https://gitlab.example.com'];
    expect(boundary('https://gitlab.example.com/jwt/auth', 'https://registry.example.net', realms)).toBe(true);
    expect(boundary('https://gitlab.example.com:8443/jwt/auth', 'https://registry.example.net', realms)).toBe(false);
    expect(boundary('http://gitlab.example.com/jwt/auth', 'https://registry.example.net', realms)).toBe(false);
  });
});

describe('token cache', () => {
  const credentials = { username: 'user', password: 'secret' };
  const basic = `Basic ${Buffer.from('user:secret').toString('base64')}`;

  it('requests realm?service&scope with each scope its own parameter', async () => {
    const realm = await serve(json({ token: 'tok' }));
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    const key = { realm: `${realm.origin}/token?x=1`, service: 'reg', scope: 'repository:a:pull repository:b:pull' };
    await expect(tokens.getToken(key)).resolves.toBe('tok');
    const url = realm.seen[0]?.url;
    expect(url?.pathname).toBe('/token');
    expect(url?.searchParams.get('x')).toBe('1');
    expect(url?.searchParams.get('service')).toBe('reg');
    expect(url?.searchParams.getAll('scope')).toEqual(['repository:a:pull', 'repository:b:pull']);
  });

  it('reads access_token when token is absent', async () => {
    const realm = await serve(json({ access_token: 'oauth' }));
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    await expect(tokens.getToken({ realm: `${realm.origin}/token`, scope: 's' })).resolves.toBe('oauth');
  });

  it('caches until expires_in, refreshing a little early', async () => {
    let issued = 0;
    const realm = await serve((_req, res) => json({ token: `t${++issued}`, expires_in: 300 })(_req, res));
    const clock = { t: 1_000_000 };
    const { tokens } = tokenCache('http://127.0.0.1:1', clock);
    const key = { realm: `${realm.origin}/token`, scope: 's' };
    await expect(tokens.getToken(key)).resolves.toBe('t1');
    clock.t += 280_000;
    expect(tokens.findToken(key)).toBe('t1');
    await expect(tokens.getToken(key)).resolves.toBe('t1');
    clock.t += 15_000; // 295 s: inside the early-refresh margin
    expect(tokens.findToken(key)).toBeUndefined();
    await expect(tokens.getToken(key)).resolves.toBe('t2');
    expect(realm.seen).toHaveLength(2);
  });

  it('defaults expires_in to 60 seconds', async () => {
    const realm = await serve(json({ token: 'tok' }));
    // A clock that reads like a real one: lru-cache takes an entry stored at time 0 as having no TTL.
    const start = 1_000_000;
    const clock = { t: start };
    const { tokens } = tokenCache('http://127.0.0.1:1', clock);
    const key = { realm: `${realm.origin}/token`, scope: 's' };
    await tokens.getToken(key);
    clock.t = start + 45_000;
    expect(tokens.findToken(key)).toBe('tok');
    clock.t = start + 61_000;
    expect(tokens.findToken(key)).toBeUndefined();
  });

  it('shares one fetch between concurrent callers', async () => {
    const realm = await serve((req, res) => setTimeout(() => json({ token: 'tok' })(req, res), 50));
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    const key = { realm: `${realm.origin}/token`, scope: 's' };
    const all = await Promise.all(Array.from({ length: 10 }, () => tokens.getToken(key)));
    expect(new Set(all)).toEqual(new Set(['tok']));
    expect(realm.seen).toHaveLength(1);
  });

  it('does not cache a failed fetch', async () => {
    let calls = 0;
    const realm = await serve((req, res) => (++calls === 1 ? json('oops', 500) : json({ token: 'tok' }))(req, res));
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    const key = { realm: `${realm.origin}/token`, scope: 's' };
    await expect(tokens.getToken(key)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(tokens.getToken(key)).resolves.toBe('tok');
  });

  it('invalidates only the token that was refused', async () => {
    let issued = 0;
    const realm = await serve((req, res) => json({ token: `t${++issued}` })(req, res));
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    const key = { realm: `${realm.origin}/token`, scope: 's' };
    await tokens.getToken(key);
    tokens.invalidate(key, 'other');
    expect(tokens.findToken(key)).toBe('t1');
    tokens.invalidate(key, 't1');
    await expect(tokens.getToken(key)).resolves.toBe('t2');
  });

  it('sends credentials to a realm on the upstream origin', async () => {
    const realm = await serve(json({ token: 'tok' }));
    const { tokens } = tokenCache(realm.origin, { t: 0 }, credentials);
    await tokens.getToken({ realm: `${realm.origin}/token`, scope: 's' });
    expect(realm.seen[0]?.headers.authorization).toBe(basic);
  });

  it('warns once per untrusted realm, naming its origin and never the credentials', async () => {
    const realm = await serve(json({ token: 'tok' }));
    const lines: string[] = [];
    const transport = createTransport(config('http://127.0.0.1:5000'), { metrics: createMetrics({ processMetrics: false }) });
    cleanups.push(() => transport.close());
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const tokens = createTokenCache({
      upstreamUrl: new URL('http://127.0.0.1:5000'),
      credentials: createCredentialSource(credentials, { host: '127.0.0.1:5000', now: () => 0 }),
      send: (url, headers, signal) => transport.send('GET', url, headers, signal, 'TOKEN'),
      deadlineMs: 500,
      now: () => 0,
      log: createLogger('debug', sink),
    });
    for (const scope of ['a', 'b', 'c']) await tokens.getToken({ realm: `${realm.origin}/token`, scope });
    const warnings = lines.filter((line) => line.includes('outside upstream trust boundary'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(realm.origin);
    expect(lines.join('')).not.toContain('secret');
  });

  it('sends credentials to a realm on another port only when auth.realms lists it', async () => {
    const realm = await serve(json({ token: 'tok' }));
    const other = tokenCache('http://127.0.0.1:5000', { t: 0 }, credentials).tokens;
    await other.getToken({ realm: `${realm.origin}/token`, scope: 's' });
    expect(realm.seen[0]?.headers.authorization).toBeUndefined();
    const listed = tokenCache('http://127.0.0.1:5000', { t: 0 }, { ...credentials, realms: [realm.origin] }).tokens;
    await listed.getToken({ realm: `${realm.origin}/token`, scope: 's' });
    expect(realm.seen[1]?.headers.authorization).toBe(basic);
  });

  it('counts expires_in from issued_at when the issuer says it issued the token earlier', async () => {
    const start = 1_000_000_000;
    const issuedAt = new Date(start - 200_000).toISOString();
    const realm = await serve(json({ token: 'tok', expires_in: 300, issued_at: issuedAt }));
    const clock = { t: start };
    const { tokens } = tokenCache('http://127.0.0.1:1', clock);
    const key = { realm: `${realm.origin}/token`, scope: 's' };
    await tokens.getToken(key);
    clock.t = start + 80_000;
    expect(tokens.findToken(key)).toBe('tok');
    clock.t = start + 95_000; // 295 s after issued_at: inside the early-refresh margin
    expect(tokens.findToken(key)).toBeUndefined();
  });

  it('re-reads a rotated password file once when the realm refuses the credentials', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-pw-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'password');
    await writeFile(file, 'old\n');
    const realm = await serve((req, res) => {
      const ok = req.headers.authorization === `Basic ${Buffer.from('user:new').toString('base64')}`;
      json(ok ? { token: 'tok' } : 'no', ok ? 200 : 401)(req, res);
    });
    const { tokens } = tokenCache(realm.origin, { t: 0 }, { username: 'user', passwordFile: file });
    await expect(tokens.getToken({ realm: `${realm.origin}/token`, scope: 'a' })).rejects.toMatchObject({ code: 'DENIED' });
    expect(realm.seen).toHaveLength(1); // unchanged file: not re-sent
    await writeFile(file, 'new\n');
    await expect(tokens.getToken({ realm: `${realm.origin}/token`, scope: 'b' })).resolves.toBe('tok');
    expect(realm.seen.map((s) => s.headers.authorization)).toEqual([
      `Basic ${Buffer.from('user:old').toString('base64')}`,
      `Basic ${Buffer.from('user:new').toString('base64')}`,
    ]);
  });

  it('fetches anonymously from a realm outside the trust boundary', async () => {
    const realm = await serve(json({ token: 'tok' }), 'localhost');
    const { tokens } = tokenCache('http://127.0.0.1:5000', { t: 0 }, credentials);
    await expect(tokens.getToken({ realm: `${realm.origin}/token`, scope: 's' })).resolves.toBe('tok');
    expect(realm.seen[0]?.headers.authorization).toBeUndefined();
  });

  it.each([
    ['a refusal', json('no', 401), 'DENIED'],
    ['a server error', json('no', 503), 'UNAVAILABLE'],
    ['a non-JSON body', json('<html>'), 'UNAVAILABLE'],
    ['JSON without a token', json({ expires_in: 60 }), 'UNAVAILABLE'],
    ['a token that cannot be a header', json({ token: 'a\r\nb' }), 'UNAVAILABLE'],
  ] as const)('maps %s to %s, marked as an upstream failure', async (_name, handler, code) => {
    const realm = await serve(handler);
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    const failure = await tokens.getToken({ realm: `${realm.origin}/token`, scope: 's' }).catch((err: unknown) => err);
    expect(failure).toMatchObject({ code });
    expect(isUpstreamFailure(failure)).toBe(true);
  });

  it('refuses a realm that is not http(s)', async () => {
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    await expect(tokens.getToken({ realm: 'file:///etc/passwd', scope: 's' })).rejects.toMatchObject({
      code: 'UNAVAILABLE',
    });
  });

  it('gives up on a token endpoint that never answers', async () => {
    const realm = await serve(() => undefined);
    const { tokens } = tokenCache('http://127.0.0.1:1', { t: 0 });
    const started = Date.now();
    await expect(tokens.getToken({ realm: `${realm.origin}/token`, scope: 's' })).rejects.toMatchObject({
      code: 'UNAVAILABLE',
    });
    expect(Date.now() - started).toBeLessThan(1500);
  });
});
