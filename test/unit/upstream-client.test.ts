import { readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { text } from 'node:stream/consumers';
import { afterEach, describe, expect, it } from 'vitest';
import type { UpstreamConfig } from '../../src/config/types.js';
import { createSilentLogger } from '../../src/log.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { createUpstream, isUpstreamFailure, type Upstream, type UpstreamRequest } from '../../src/upstream/client.js';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

interface TestServer {
  readonly origin: string;
  readonly port: number;
  readonly seen: Seen[];
  readonly connections: () => number;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(handler: Handler, host = '127.0.0.1', port = 0): Promise<TestServer> {
  const seen: Seen[] = [];
  let connections = 0;
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const address = server.address() as AddressInfo;
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { origin: `http://${host}:${address.port}`, port: address.port, seen, connections: () => connections };
}

function reply(status: number, headers: Record<string, string> = {}, body = ''): Handler {
  return (_req, res) => {
    res.writeHead(status, headers);
    res.end(body);
  };
}

/** A registry that wants `Bearer <token>` and challenges with the given realm. */
function bearerRegistry(realm: string, token: string, then: Handler = reply(200, {}, 'ok')): Handler {
  return (req, res) => {
    if (req.headers.authorization === `Bearer ${token}`) return then(req, res);
    const challenge = `Bearer realm="${realm}",service="registry.test",scope="repository:library/alpine:pull"`;
    reply(401, { 'www-authenticate': challenge })(req, res);
  };
}

function tokenServer(body: unknown = { token: 'tok', expires_in: 300 }, delayMs = 0): Handler {
  return (_req, res) => {
    setTimeout(() => reply(200, { 'content-type': 'application/json' }, JSON.stringify(body))(_req, res), delayMs);
  };
}

interface Harness {
  readonly upstream: Upstream;
  readonly metrics: Metrics;
  readonly clock: { t: number };
}

function upstreamFor(url: string, overrides: Partial<UpstreamConfig> = {}): Harness {
  const config: UpstreamConfig = {
    name: 'test',
    url,
    aliases: [],
    library: false,
    freshForMs: 60_000,
    maxStaleMs: 0,
    resume: { maxResumes: 0, backoffMs: 0, withinMs: 1 },
    timeouts: { connectMs: 500, headersMs: 200, bodyMs: 200 },
    retries: 2,
    downForMs: 30_000,
    maxConnections: 16,
    minBytesPerSecond: 1,
    urls: [],
    throttleMs: 60_000,
    ...overrides,
  };
  const metrics = createMetrics({ processMetrics: false });
  const clock = { t: 1_000_000 };
  const upstream = createUpstream(config, { metrics, log: createSilentLogger(), now: () => clock.t });
  cleanups.push(() => upstream.close());
  return { upstream, metrics, clock };
}

const manifest = (overrides: Partial<UpstreamRequest> = {}): UpstreamRequest => ({
  method: 'GET',
  repository: 'library/alpine',
  path: 'manifests/latest',
  notFound: 'MANIFEST_UNKNOWN',
  ...overrides,
});

async function fetchText(upstream: Upstream, req: UpstreamRequest = manifest()): Promise<string> {
  const res = await upstream.request(req);
  return text(res.body);
}

async function failure(promise: Promise<unknown>): Promise<Record<string, unknown>> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  return err as Record<string, unknown>;
}

async function metricValue(metric: Metrics['upstreamThrottled'] | Metrics['upstreamThrottledRefusals']): Promise<number | undefined> {
  return (await metric.get()).values.find((v) => v.labels['upstream'] === 'test')?.value;
}

async function gauge(metric: Metrics['upstreamDown']): Promise<number | undefined> {
  return (await metric.get()).values.find((v) => v.labels['upstream'] === 'test')?.value;
}

describe('upstream request', () => {
  it('builds the URL and headers, never forwarding Authorization from the caller', async () => {
    const registry = await serve(reply(200, { 'docker-content-digest': 'sha256:abc', 'x-multi': 'a' }, 'body'));
    const { upstream } = upstreamFor(`${registry.origin}/`);
    const res = await upstream.request(
      manifest({
        query: 'n=10&last=a',
        accept: ['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json'],
        headers: { Range: 'bytes=0-', Authorization: 'Bearer client-token' },
      }),
    );
    expect(res.status).toBe(200);
    expect(res.headers['docker-content-digest']).toBe('sha256:abc');
    expect(res.url).toBe(`${registry.origin}/v2/library/alpine/manifests/latest?n=10&last=a`);
    expect(await text(res.body)).toBe('body');
    const seen = registry.seen[0];
    expect(seen?.url).toBe('/v2/library/alpine/manifests/latest?n=10&last=a');
    expect(seen?.headers.accept).toBe('application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json');
    expect(seen?.headers.range).toBe('bytes=0-');
    expect(seen?.headers.authorization).toBeUndefined();
    // The version of package.json, not a copy of it that a release forgets to bump.
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(seen?.headers['user-agent']).toBe(`oci-mirror/${version}`);
  });

  it('maps 404 to the requested unknown code, not an upstream failure', async () => {
    const registry = await serve(reply(404));
    const { upstream } = upstreamFor(registry.origin);
    const err = await failure(upstream.request(manifest({ path: 'blobs/sha256:00', notFound: 'BLOB_UNKNOWN' })));
    expect(err).toMatchObject({ code: 'BLOB_UNKNOWN', statusCode: 404 });
    expect(isUpstreamFailure(err)).toBe(false);
    expect(upstream.isDown()).toBe(false);
  });

  it('sets the rate-limit gauge from ratelimit-remaining', async () => {
    const registry = await serve(reply(200, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '20;w=21600' }));
    const { upstream, metrics } = upstreamFor(registry.origin);
    await fetchText(upstream, manifest({ method: 'HEAD' }));
    expect(await gauge(metrics.upstreamRateLimitRemaining)).toBe(20);
  });
});

describe('upstream auth', () => {
  it('answers a Bearer challenge with a token, then reuses the cached token', async () => {
    const tokens = await serve(tokenServer());
    const registry = await serve(bearerRegistry(`${tokens.origin}/token`, 'tok'));
    const { upstream, metrics } = upstreamFor(registry.origin);
    expect(await fetchText(upstream)).toBe('ok');
    expect(await fetchText(upstream)).toBe('ok');
    expect(tokens.seen).toHaveLength(1);
    expect(tokens.seen[0]?.url).toBe('/token?service=registry.test&scope=repository%3Alibrary%2Falpine%3Apull');
    expect(registry.seen.map((s) => s.headers.authorization)).toEqual([undefined, 'Bearer tok', 'Bearer tok']);
    const observed = (await metrics.upstreamRequests.get()).values.filter((v) => v.metricName?.endsWith('_count'));
    expect(observed.find((v) => v.labels['method'] === 'TOKEN')?.value).toBe(1);
    expect(observed.find((v) => v.labels['method'] === 'GET' && v.labels['status_class'] === '4xx')?.value).toBe(1);
  });

  it('accepts access_token and fetches a new token after expires_in', async () => {
    const tokens = await serve(tokenServer({ access_token: 'tok', expires_in: 100 }));
    const registry = await serve(bearerRegistry(`${tokens.origin}/token`, 'tok'));
    const { upstream, clock } = upstreamFor(registry.origin);
    await fetchText(upstream);
    clock.t += 60_000;
    await fetchText(upstream);
    expect(tokens.seen).toHaveLength(1);
    clock.t += 60_000;
    await fetchText(upstream);
    expect(tokens.seen).toHaveLength(2);
  });

  it('shares one token fetch among 10 concurrent requests', async () => {
    const tokens = await serve(tokenServer({ token: 'tok' }, 50));
    const registry = await serve(bearerRegistry(`${tokens.origin}/token`, 'tok'));
    const { upstream } = upstreamFor(registry.origin);
    const bodies = await Promise.all(Array.from({ length: 10 }, () => fetchText(upstream)));
    expect(bodies).toEqual(Array(10).fill('ok'));
    expect(tokens.seen).toHaveLength(1);
  });

  it('sends credentials to a realm in the trust boundary (here: listed in auth.realms) and not to another host', async () => {
    const basic = `Basic ${Buffer.from('user:pw').toString('base64')}`;
    const inside = await serve(tokenServer());
    const outside = await serve(tokenServer(), 'localhost');
    const credentials = { username: 'user', password: 'pw', realms: [inside.origin] };
    for (const realm of [inside, outside]) {
      const registry = await serve(bearerRegistry(`${realm.origin}/token`, 'tok'));
      const { upstream } = upstreamFor(registry.origin, { credentials });
      expect(await fetchText(upstream)).toBe('ok');
    }
    expect(inside.seen[0]?.headers.authorization).toBe(basic);
    expect(outside.seen[0]?.headers.authorization).toBeUndefined();
  });

  it('answers a Basic challenge with the configured credentials', async () => {
    const basic = `Basic ${Buffer.from('user:pw').toString('base64')}`;
    const registry = await serve((req, res) =>
      req.headers.authorization === basic
        ? reply(200, {}, 'ok')(req, res)
        : reply(401, { 'www-authenticate': 'Basic realm="r"' })(req, res),
    );
    const { upstream } = upstreamFor(registry.origin, { credentials: { username: 'user', password: 'pw' } });
    expect(await fetchText(upstream)).toBe('ok');
    expect(await fetchText(upstream)).toBe('ok');
    expect(registry.seen.map((s) => s.headers.authorization)).toEqual([undefined, basic, basic]);
  });

  it('maps a refused request to DENIED after one authenticated retry', async () => {
    const registry = await serve(reply(401, { 'www-authenticate': 'Basic realm="r"' }));
    const { upstream } = upstreamFor(registry.origin, { credentials: { username: 'user', password: 'bad' } });
    const err = await failure(upstream.request(manifest()));
    expect(err).toMatchObject({ code: 'DENIED', statusCode: 403 });
    expect(isUpstreamFailure(err)).toBe(true);
    expect(registry.seen).toHaveLength(2);
    const anonymous = upstreamFor(registry.origin).upstream;
    expect(await failure(anonymous.request(manifest()))).toMatchObject({ code: 'DENIED' });
    expect(registry.seen).toHaveLength(3);
  });

  it('maps a token endpoint failure to UNAVAILABLE', async () => {
    const tokens = await serve(reply(200, {}, 'not json'));
    const registry = await serve(bearerRegistry(`${tokens.origin}/token`, 'tok'));
    const { upstream } = upstreamFor(registry.origin);
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'UNAVAILABLE' });
  });
});

describe('upstream redirects', () => {
  it('follows a cross-host redirect exactly, dropping Authorization', async () => {
    const cdn = await serve(reply(200, {}, 'blob'), 'localhost');
    const signed = `${cdn.origin}/data?verify=a%2Fb%3D%3D&expires=1`;
    const tokens = await serve(tokenServer());
    const registry = await serve(bearerRegistry(`${tokens.origin}/token`, 'tok', reply(307, { location: signed })));
    const { upstream } = upstreamFor(registry.origin);
    const res = await upstream.request(manifest({ path: 'blobs/sha256:00', notFound: 'BLOB_UNKNOWN' }));
    expect(await text(res.body)).toBe('blob');
    expect(res.url).toBe(signed);
    expect(cdn.seen[0]?.url).toBe('/data?verify=a%2Fb%3D%3D&expires=1');
    expect(cdn.seen[0]?.headers.authorization).toBeUndefined();
  });

  it('keeps Authorization on a same-host relative redirect', async () => {
    const tokens = await serve(tokenServer());
    const registry = await serve(
      bearerRegistry(`${tokens.origin}/token`, 'tok', (req, res) =>
        req.url?.startsWith('/storage') ? reply(200, {}, 'moved')(req, res) : reply(302, { location: '/storage/x' })(req, res),
      ),
    );
    const { upstream } = upstreamFor(registry.origin);
    expect(await fetchText(upstream)).toBe('moved');
    expect(registry.seen.at(-1)?.url).toBe('/storage/x');
    expect(registry.seen.at(-1)?.headers.authorization).toBe('Bearer tok');
  });

  it('fails a redirect loop or too many hops with UNAVAILABLE', async () => {
    const loop = await serve((req, res) => reply(301, { location: req.url === '/a' ? '/b' : '/a' })(req, res));
    expect(await failure(upstreamFor(loop.origin).upstream.request(manifest()))).toMatchObject({ code: 'UNAVAILABLE' });
    const chain = await serve((req, res) => reply(308, { location: `/hop/${registryHop(req) + 1}` })(req, res));
    expect(await failure(upstreamFor(chain.origin).upstream.request(manifest()))).toMatchObject({ code: 'UNAVAILABLE' });
    expect(chain.seen).toHaveLength(6);
  });

  it('refuses a redirect to a non-http scheme', async () => {
    const registry = await serve(reply(302, { location: 'file:///etc/passwd' }));
    const err = await failure(upstreamFor(registry.origin).upstream.request(manifest()));
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
    expect(String(err['message'])).toContain('file:');
  });
});

function registryHop(req: IncomingMessage): number {
  return Number(/^\/hop\/(\d+)$/.exec(req.url ?? '')?.[1] ?? 0);
}

describe('upstream retries', () => {
  it('retries a 503 and then succeeds', async () => {
    let calls = 0;
    const registry = await serve((req, res) => (++calls < 3 ? reply(503, {}, 'busy') : reply(200, {}, 'ok'))(req, res));
    const { upstream } = upstreamFor(registry.origin, { retries: 2 });
    expect(await fetchText(upstream)).toBe('ok');
    expect(registry.seen).toHaveLength(3);
  });

  it('gives up after the configured retries with UNAVAILABLE', async () => {
    const registry = await serve(reply(500));
    const { upstream } = upstreamFor(registry.origin, { retries: 1 });
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'UNAVAILABLE', statusCode: 503 });
    expect(registry.seen).toHaveLength(2);
  });

  it('never retries a 429, and refuses further requests without asking until Retry-After', async () => {
    const registry = await serve(reply(429, { 'retry-after': '1' }));
    const { upstream, metrics, clock } = upstreamFor(registry.origin, { retries: 3 });
    const err = await failure(upstream.request(manifest()));
    expect(err).toMatchObject({ code: 'TOOMANYREQUESTS', statusCode: 429, headers: { 'retry-after': '1' } });
    expect(registry.seen).toHaveLength(1);
    expect(upstream.isThrottled()).toBe(true);
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'TOOMANYREQUESTS', statusCode: 429 });
    expect(registry.seen).toHaveLength(1);
    expect(await metricValue(metrics.upstreamThrottledRefusals)).toBe(1);
    expect(await metricValue(metrics.upstreamThrottled)).toBe(1);
    clock.t += 1_000;
    expect(upstream.isThrottled()).toBe(false);
    expect(await metricValue(metrics.upstreamThrottled)).toBe(0);
  });

  it('fails at once on a long Retry-After, passing it on', async () => {
    const registry = await serve(reply(429, { 'retry-after': '3600' }, 'You have reached your pull rate limit'));
    const { upstream } = upstreamFor(registry.origin, { retries: 3 });
    const err = await failure(upstream.request(manifest()));
    expect(err).toMatchObject({ code: 'TOOMANYREQUESTS', statusCode: 429, headers: { 'retry-after': '3600' } });
    expect(isUpstreamFailure(err)).toBe(true);
    expect(registry.seen).toHaveLength(1);
    expect(upstream.isDown()).toBe(false);
  });
});

describe('upstream breaker', () => {
  it('opens on connection refused, fails fast without dialling, and closes after the window', async () => {
    const probe = await serve(reply(200));
    const port = probe.port;
    await cleanups.pop()?.(); // free the port: nothing listens there now
    const { upstream, metrics, clock } = upstreamFor(`http://127.0.0.1:${port}`, { retries: 1, downForMs: 30_000 });
    const refused = await failure(upstream.request(manifest()));
    expect(refused).toMatchObject({ code: 'UNAVAILABLE', statusCode: 503 });
    expect(isUpstreamFailure(refused)).toBe(true);
    expect(upstream.isDown()).toBe(true);
    expect(await gauge(metrics.upstreamDown)).toBe(1);

    const registry = await serve(reply(200, {}, 'back'), '127.0.0.1', port);
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'UNAVAILABLE' });
    expect(registry.connections()).toBe(0);

    clock.t += 30_001;
    expect(await fetchText(upstream)).toBe('back');
    expect(registry.connections()).toBe(1);
    expect(upstream.isDown()).toBe(false);
    expect(await gauge(metrics.upstreamDown)).toBe(0);
  });

  it('times out a server that never sends headers, within bounds', async () => {
    const silent = await serve(() => undefined);
    const { upstream } = upstreamFor(silent.origin, { retries: 0 });
    const started = Date.now();
    const err = await failure(upstream.request(manifest()));
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
    expect(String(err['message'])).toContain('UND_ERR_HEADERS_TIMEOUT');
    // undici checks its timers about once a second, so a 200 ms timeout fires within ~1.2 s.
    expect(Date.now() - started).toBeLessThan(1800);
    expect(upstream.isDown()).toBe(true);
  });

  it('leaves the breaker closed when the caller aborts', async () => {
    const slow = await serve((req, res) => setTimeout(() => reply(200)(req, res), 100));
    const { upstream } = upstreamFor(slow.origin);
    const controller = new AbortController();
    const pending = upstream.request(manifest({ signal: controller.signal }));
    setTimeout(() => controller.abort(), 20);
    await failure(pending);
    expect(upstream.isDown()).toBe(false);
  });
});

describe('auth per hop', () => {
  /** Wants `Bearer <token>` and challenges with its own realm and `scope`; `then` answers the rest. */
  function challenging(realm: string, token: string, scope: string, then: Handler): Handler {
    return (req, res) => {
      if (req.headers.authorization === `Bearer ${token}`) return then(req, res);
      reply(401, { 'www-authenticate': `Bearer realm="${realm}",service="hop.test",scope="${scope}"` })(req, res);
    };
  }
  /** S3-style signed storage: one auth mechanism only. */
  const storage: Handler = (req, res) =>
    (req.headers.authorization ? reply(400, {}, 'two auth mechanisms') : reply(200, {}, 'blob'))(req, res);

  it('answers the challenge of the host a redirect leads to, for that host only, then storage gets no Authorization', async () => {
    const store = await serve(storage, '127.0.0.3');
    const backing = await serve((req, res) => {
      if (req.url?.startsWith('/v2/token')) return tokenServer({ token: 'ar-token' })(req, res);
      const then = req.url?.includes('/blobs/') ? reply(302, { location: `${store.origin}/signed?sig=1` }) : reply(200, {}, 'manifest');
      challenging(`${backing.origin}/v2/token`, 'ar-token', 'repository:images/pause:pull', then)(req, res);
    }, '127.0.0.2');
    const front = await serve((req, res) =>
      reply(307, { location: `${backing.origin}${req.url?.replace('/v2/', '/v2/images/')}` })(req, res),
    );
    const { upstream } = upstreamFor(front.origin);
    expect(await fetchText(upstream, manifest({ repository: 'pause' }))).toBe('manifest');
    expect(await fetchText(upstream, manifest({ repository: 'pause', path: 'blobs/sha256:00', notFound: 'BLOB_UNKNOWN' }))).toBe('blob');
    expect(front.seen.map((s) => s.headers.authorization)).toEqual([undefined, undefined]);
    const backingRequests = backing.seen.filter((s) => !s.url.startsWith('/v2/token'));
    // One 401 for the cold origin, then its token at once, also for the blob.
    expect(backingRequests.map((s) => s.headers.authorization)).toEqual([undefined, 'Bearer ar-token', 'Bearer ar-token']);
    expect(backing.seen.filter((s) => s.url.startsWith('/v2/token'))).toHaveLength(1);
    expect(store.seen.map((s) => s.headers.authorization)).toEqual([undefined]);
  });

  it('remembers a challenge scope that is not a repository scope for the whole origin (ECR Public scope="aws")', async () => {
    const tokens = await serve(tokenServer({ token: 'aws-token' }));
    const registry = await serve(challenging(`${tokens.origin}/token/`, 'aws-token', 'aws', reply(200, {}, 'ok')));
    const { upstream } = upstreamFor(registry.origin);
    expect(await fetchText(upstream, manifest({ repository: 'docker/library/busybox' }))).toBe('ok');
    expect(await fetchText(upstream, manifest({ repository: 'nginx/nginx' }))).toBe('ok');
    expect(registry.seen.map((s) => s.headers.authorization)).toEqual([undefined, 'Bearer aws-token', 'Bearer aws-token']);
    expect(new URL(tokens.seen[0]?.url ?? '', 'http://x').searchParams.getAll('scope')).toEqual(['aws']);
    expect(tokens.seen).toHaveLength(1);
  });

  it('never answers a Basic challenge from a host a redirect leads to with the upstream credentials', async () => {
    const other = await serve(reply(401, { 'www-authenticate': 'Basic realm="other"' }), '127.0.0.2');
    const registry = await serve(reply(307, { location: `${other.origin}/elsewhere` }));
    const { upstream } = upstreamFor(registry.origin, { credentials: { username: 'user', password: 'pw' } });
    await expect(upstream.request(manifest())).rejects.toMatchObject({ code: 'DENIED' });
    expect(other.seen.map((s) => s.headers.authorization)).toEqual([undefined]);
  });
});

/** Resolves once `read()` returns `want`, polling; the test's own timeout bounds it. */
async function until<T>(read: () => Promise<T> | T, want: T): Promise<void> {
  while ((await read()) !== want) await new Promise((resolve) => setTimeout(resolve, 20));
}

async function endpointDown(metrics: Metrics, url: string): Promise<number | undefined> {
  return (await metrics.upstreamEndpointDown.get()).values.find((v) => v.labels['url'] === url)?.value;
}

async function freedPort(): Promise<number> {
  const probe = await serve(reply(200));
  await cleanups.pop()?.();
  return probe.port;
}

describe('upstream breaker opens on the upstream, not on one object', () => {
  it('keeps the upstream up when one blob answers 500: other paths still fetch', async () => {
    const registry = await serve((req, res) =>
      (req.url?.endsWith('/blobs/sha256:bad') ? reply(500, {}, 'boom') : reply(200, {}, 'ok'))(req, res),
    );
    const { upstream, metrics } = upstreamFor(registry.origin, { retries: 1 });
    const bad = manifest({ path: 'blobs/sha256:bad', notFound: 'BLOB_UNKNOWN' });
    for (let i = 0; i < 3; i++) expect(await failure(upstream.request(bad))).toMatchObject({ code: 'UNAVAILABLE', reason: 'server' });
    expect(registry.seen.filter((s) => s.url.endsWith('sha256:bad'))).toHaveLength(6);
    expect(upstream.isDown()).toBe(false);
    expect(await gauge(metrics.upstreamDown)).not.toBe(1);
    expect(await fetchText(upstream, manifest({ path: 'blobs/sha256:good', notFound: 'BLOB_UNKNOWN' }))).toBe('ok');
  });

  it('closes by itself once the upstream is back: a background GET /v2/ and no client request', async () => {
    const port = await freedPort();
    const { upstream, metrics } = upstreamFor(`http://127.0.0.1:${port}`, { retries: 0, downForMs: 50 });
    await failure(upstream.request(manifest()));
    expect(await gauge(metrics.upstreamDown)).toBe(1);
    const registry = await serve(reply(401, { 'www-authenticate': 'Bearer realm="http://127.0.0.1:1/token"' }), '127.0.0.1', port);
    await until(() => gauge(metrics.upstreamDown), 0);
    expect(upstream.isDown()).toBe(false);
    expect(registry.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /v2/']);
  });
});

describe('upstream urls', () => {
  it('tries the next URL when the first refuses connections, each with its own breaker', async () => {
    const deadPort = await freedPort();
    const dead = `http://127.0.0.1:${deadPort}`;
    const registry = await serve(reply(200, {}, 'from second'));
    const { upstream, metrics } = upstreamFor(dead, { urls: [registry.origin], retries: 0 });
    expect(await fetchText(upstream)).toBe('from second');
    expect(await endpointDown(metrics, dead)).toBe(1);
    expect(await gauge(metrics.upstreamDown)).toBe(0);
    expect(upstream.isDown()).toBe(false);
    // The open breaker of the first URL sends the next request straight to the second.
    expect(await fetchText(upstream)).toBe('from second');
    expect(registry.seen).toHaveLength(2);
    expect(await endpointDown(metrics, registry.origin)).toBeUndefined();
  });

  it('returns the answer of a reachable URL, a 404 too, without trying the next', async () => {
    const first = await serve(reply(404));
    const second = await serve(reply(200, {}, 'never'));
    const { upstream } = upstreamFor(first.origin, { urls: [second.origin] });
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'MANIFEST_UNKNOWN', statusCode: 404 });
    expect(second.seen).toHaveLength(0);
  });
});

describe('upstream rate limits', () => {
  it('stays away for the w= window of ratelimit-remaining, probing once per throttle interval', async () => {
    let limited = true;
    const registry = await serve((req, res) =>
      (limited ? reply(429, { 'ratelimit-remaining': '0;w=21600' }) : reply(200, { 'ratelimit-remaining': '99;w=21600' }, 'ok'))(req, res),
    );
    const { upstream, metrics, clock } = upstreamFor(registry.origin, { throttleMs: 60_000 });
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'TOOMANYREQUESTS', headers: { 'retry-after': '60' } });
    clock.t += 59_000;
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'TOOMANYREQUESTS', headers: { 'retry-after': '1' } });
    expect(registry.seen).toHaveLength(1);
    clock.t += 1_000;
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'TOOMANYREQUESTS' }); // the probe: still limited
    expect(registry.seen).toHaveLength(2);
    limited = false;
    expect(await failure(upstream.request(manifest()))).toMatchObject({ code: 'TOOMANYREQUESTS' });
    expect(registry.seen).toHaveLength(2);
    clock.t += 60_000;
    expect(await fetchText(upstream)).toBe('ok');
    expect(upstream.isThrottled()).toBe(false);
    expect(await fetchText(upstream)).toBe('ok');
    expect(registry.seen).toHaveLength(4);
    expect(await metricValue(metrics.upstreamThrottledRefusals)).toBe(2);
  });
});
