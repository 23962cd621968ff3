import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';

export type RequestKind = 'base' | 'manifest' | 'blob' | 'tags' | 'token' | 'other';

export interface Recorded {
  readonly method: string;
  readonly path: string;
  readonly kind: RequestKind;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  status: number;
  /** Body bytes sent on to the client (the mirror). */
  bytes: number;
  /** The response's Content-Length, when it had one. */
  length?: number;
  /** The link fault cut this response. */
  cut?: boolean;
}

export interface CountingProxy {
  readonly url: string;
  /** With tokenAuth: the token server's origin (another port, so another origin). */
  readonly realmOrigin?: string | undefined;
  /** With tokenAuth: the token realm its challenges name. */
  readonly realm: string | undefined;
  readonly requests: readonly Recorded[];
  count(filter: { method?: string; kind?: RequestKind; pathIncludes?: string }): number;
  reset(): void;
  stop(): Promise<void>;
}

export interface ProxyOptions {
  /** Emulate Docker Hub: 401 + Bearer challenge, tokens from a realm served beside the proxy. */
  readonly tokenAuth?: boolean;
  /** With tokenAuth: the token realm requires these Basic credentials. */
  readonly tokenCredentials?: { readonly username: string; readonly password: string };
  /**
   * Emulate Docker Hub's pull quota: `limit` manifest GETs (HEAD and blobs are free), then
   * 429 TOOMANYREQUESTS without Retry-After; manifest answers carry `ratelimit-limit` and
   * `ratelimit-remaining` with a `w=` window.
   */
  readonly quota?: { readonly limit: number; readonly windowS: number };
  /** A WAN that breaks: blob GET responses cut mid-body. */
  readonly linkFault?: LinkFault;
}

export interface LinkFault {
  /** Body bytes let through before the cut. */
  readonly afterBytes: number;
  /** How many responses are cut for each blob, from its first (default 1); later ones pass whole. */
  readonly times?: number;
  /** `reset`: the connection is reset (RST, the default); `stall`: the body stops, the connection stays open. */
  readonly mode?: 'reset' | 'stall';
  /** Range and If-Range are dropped on the way: an upstream that ignores Range and answers 200. */
  readonly ignoreRange?: boolean;
}

/**
 * A reverse proxy in front of a real registry that records every request, so tests
 * can assert what reached the upstream ("50 cold GETs → 1 upstream GET").
 */
export async function startCountingProxy(targetUrl: string, options: ProxyOptions = {}): Promise<CountingProxy> {
  const target = new URL(targetUrl);
  let requests: Recorded[] = [];
  let pulls = 0;
  const tokens = new Map<string, Set<string>>();
  /** Responses cut so far, per blob digest. */
  const cuts = new Map<string, number>();
  const faultFor = (req: IncomingMessage, entry: Recorded): LinkFault | undefined => {
    const fault = options.linkFault;
    const digest = /\/blobs\/(sha256:[a-f0-9]{64})/.exec(entry.path)?.[1];
    if (!fault || !digest || req.method !== 'GET' || entry.kind !== 'blob') return undefined;
    if (fault.ignoreRange) {
      delete req.headers.range;
      delete req.headers['if-range'];
    }
    const done = cuts.get(digest) ?? 0;
    if (done >= (fault.times ?? 1)) return undefined;
    cuts.set(digest, done + 1);
    return fault;
  };
  const record = (req: IncomingMessage, kind: RequestKind): Recorded => {
    const entry: Recorded = { method: req.method ?? '', path: req.url ?? '', kind, headers: { ...req.headers }, status: 0, bytes: 0 };
    requests.push(entry);
    return entry;
  };

  const tokenServer = options.tokenAuth
    ? await listen(createServer((req, res) => issueToken(req, res, record(req, 'token'), tokens, options.tokenCredentials)))
    : undefined;
  const realm = tokenServer && `http://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token`;

  const server = await listen(
    createServer((req, res) => {
      const entry = record(req, classify(req.url ?? ''));
      if (realm && !authorized(req, tokens)) return challenge(res, entry, realm, req.url ?? '');
      const quota = options.quota;
      if (quota && entry.kind === 'manifest') {
        const counted = entry.method === 'GET';
        if (counted && pulls >= quota.limit) return rateLimited(res, entry, quota);
        if (counted) pulls++;
        const remaining = Math.max(0, quota.limit - pulls);
        res.setHeader('ratelimit-limit', `${quota.limit};w=${quota.windowS}`);
        res.setHeader('ratelimit-remaining', `${remaining};w=${quota.windowS}`);
      }
      forward(req, res, target, entry, faultFor(req, entry));
    }),
  );
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    realmOrigin: realm && new URL(realm).origin,
    realm,
    get requests() {
      return requests;
    },
    count(filter) {
      return requests.filter(
        (r) =>
          (filter.method === undefined || r.method === filter.method) &&
          (filter.kind === undefined || r.kind === filter.kind) &&
          (filter.pathIncludes === undefined || r.path.includes(filter.pathIncludes)),
      ).length;
    },
    reset() {
      requests = [];
    },
    async stop() {
      for (const s of [server, tokenServer]) {
        if (!s) continue;
        s.closeAllConnections();
        await new Promise((resolve) => s.close(resolve));
      }
    },
  };
}

function forward(req: IncomingMessage, res: ServerResponse, target: URL, entry: Recorded, fault?: LinkFault): void {
  const headers = { ...req.headers, host: target.host };
  delete headers.authorization;
  const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (upRes) => {
    entry.status = upRes.statusCode ?? 0;
    if (upRes.headers['content-length'] !== undefined) entry.length = Number(upRes.headers['content-length']);
    res.writeHead(upRes.statusCode ?? 502, upRes.headers);
    if (fault && entry.status < 300) return cutAfter(upRes, res, entry, fault);
    upRes.on('data', (chunk: Buffer) => {
      entry.bytes += chunk.length;
    });
    pipeline(upRes, res).catch(() => res.destroy());
  });
  upstream.on('error', () => {
    entry.status = 502;
    if (!res.headersSent)
      res.writeHead(502, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAVAILABLE","message":"registry down"}]}');
    else res.destroy();
  });
  pipeline(req, upstream).catch(() => upstream.destroy());
}

/** Lets `fault.afterBytes` of the body through, then resets the connection or stops sending. */
function cutAfter(upRes: IncomingMessage, res: ServerResponse, entry: Recorded, fault: LinkFault): void {
  upRes.on('data', (chunk: Buffer) => {
    const room = fault.afterBytes - entry.bytes;
    const part = chunk.subarray(0, Math.max(0, room));
    entry.bytes += part.length;
    if (part.length < chunk.length || entry.bytes >= fault.afterBytes) {
      entry.cut = true;
      upRes.destroy();
      if (fault.mode === 'stall') res.write(part);
      // A moment for the bytes to be read: an RST makes the receiver drop what it has not read yet,
      // and a link that drops delivers what came before the drop.
      else res.write(part, () => setTimeout(() => res.socket?.resetAndDestroy(), 100));
      return;
    }
    res.write(part);
  });
  upRes.on('end', () => res.end());
}

function rateLimited(res: ServerResponse, entry: Recorded, quota: NonNullable<ProxyOptions['quota']>): void {
  entry.status = 429;
  res.writeHead(429, {
    'content-type': 'application/json',
    'ratelimit-limit': `${quota.limit};w=${quota.windowS}`,
    'ratelimit-remaining': `0;w=${quota.windowS}`,
  });
  res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}');
}

function classify(url: string): RequestKind {
  const path = url.split('?', 1)[0] ?? '';
  if (/^\/v2\/?$/.test(path)) return 'base';
  if (path.includes('/manifests/')) return 'manifest';
  if (path.includes('/blobs/') && !path.includes('/blobs/uploads')) return 'blob';
  if (path.endsWith('/tags/list')) return 'tags';
  return 'other';
}

function repositoryOf(url: string): string | undefined {
  const path = url.split('?', 1)[0] ?? '';
  return /^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(path)?.[1];
}

function authorized(req: IncomingMessage, tokens: Map<string, Set<string>>): boolean {
  const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
  const scopes = token ? tokens.get(token) : undefined;
  if (!scopes) return false;
  const repo = repositoryOf(req.url ?? '');
  return repo === undefined || scopes.has(`repository:${repo}:pull`);
}

function challenge(res: ServerResponse, entry: Recorded, realm: string, url: string): void {
  const repo = repositoryOf(url);
  const scope = repo ? `,scope="repository:${repo}:pull"` : '';
  entry.status = 401;
  res.writeHead(401, {
    'content-type': 'application/json',
    'www-authenticate': `Bearer realm="${realm}",service="test-upstream"${scope}`,
  });
  res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
}

function issueToken(
  req: IncomingMessage,
  res: ServerResponse,
  entry: Recorded,
  tokens: Map<string, Set<string>>,
  credentials: ProxyOptions['tokenCredentials'],
): void {
  const expected = credentials && `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
  if (expected && req.headers.authorization !== expected) {
    entry.status = 401;
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
    return;
  }
  const url = new URL(req.url ?? '/', 'http://token');
  const token = randomBytes(16).toString('hex');
  tokens.set(token, new Set(url.searchParams.getAll('scope').flatMap(expandScope)));
  entry.status = 200;
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
}

/** `repository:a/b:pull,push` grants `repository:a/b:pull`. */
function expandScope(scope: string): string[] {
  const m = /^repository:(.+):([a-z,*]+)$/.exec(scope);
  if (!m) return [];
  return m[2]!.split(',').map((action) => `repository:${m[1]}:${action}`);
}

async function listen(server: Server): Promise<Server> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}
