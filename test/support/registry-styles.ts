import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Emulations of the registries users mirror, enforcing what the real services enforce
 * (from their public documentation): tokens bound to the issuing registry, its
 * `service`, the granted repositories and an expiry; token endpoints that check Basic
 * credentials and drop private scopes without them; signed storage URLs that refuse
 * `Authorization` (400) and expire or fail their signature (403); redirects that
 * really change origin. Each host is its own loopback address: registry 127.0.0.2,
 * token realm 127.0.0.3, storage 127.0.0.4, a redirecting front 127.0.0.5.
 */
export interface StyleSpec {
  readonly name: string;
  /** What `/v2/...` wants: nothing, a Bearer token, or Basic credentials (ECR). */
  readonly auth: 'anonymous' | 'bearer' | 'basic';
  /** Bearer: the token endpoint on the registry host, or on a host of its own. */
  readonly realmHost?: 'registry' | 'other';
  readonly realmPath?: string;
  readonly service?: string;
  /** The challenge scope when it is not `repository:<name>:pull` (ECR Public's `aws`). */
  readonly challengeScope?: string;
  /** The token JSON's field names. */
  readonly tokenFields?: 'token' | 'access_token' | 'both';
  /** Credentials the token endpoint (bearer) or the registry (basic) checks; read at each request. */
  readonly credentials?: () => { readonly username: string; readonly password: string };
  /** Bearer: without valid credentials the token endpoint refuses (ACR) or grants no scope (GitLab private). */
  readonly anonymousTokens?: 'refused' | 'unscoped' | 'granted';
  /** Blob GETs redirect to signed storage URLs valid this long. */
  readonly storage?: { readonly status: 302 | 307; readonly ttlMs: number };
  /** registry.k8s.io: a front host that 307s every /v2/ request to the registry under this prefix. */
  readonly frontPrefix?: string;
}

export interface StyleImage {
  readonly repository: string;
  readonly tag: string;
  readonly manifest: Buffer;
  readonly digest: string;
  readonly blobs: ReadonlyMap<string, Buffer>;
}

export interface Seen {
  readonly host: 'registry' | 'realm' | 'storage' | 'front';
  readonly method: string;
  readonly kind: 'base' | 'manifest' | 'blob' | 'tags' | 'token' | 'storage' | 'other';
  readonly status: number;
  readonly authorization: string | undefined;
}

export interface StyledRegistry {
  /** What the mirror's upstream url is: the front when there is one, else the registry. */
  readonly url: string;
  readonly realmOrigin: string;
  readonly seen: Seen[];
  stop(): Promise<void>;
}

const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';
const TOKEN_TTL_S = 300;

/** A single-platform Docker schema2 image of `layers` seeded layers. */
export function styleImage(repository: string, tag: string, seed: string, layerSizes: readonly number[]): StyleImage {
  const blobs = new Map<string, Buffer>();
  const add = (body: Buffer) => {
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    blobs.set(digest, body);
    return { digest, size: body.length };
  };
  const config = add(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed, rootfs: { type: 'layers', diff_ids: [] } })));
  const layers = layerSizes.map((size, i) => add(seededBuffer(`${seed}-${i}`, size)));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_TYPE,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', ...l })),
    }),
  );
  const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  return { repository, tag, manifest, digest, blobs };
}

function seededBuffer(seed: string, size: number): Buffer {
  const chunks: Buffer[] = [];
  for (let i = 0, total = 0; total < size; i++, total += 32) chunks.push(createHash('sha256').update(`${seed}/${i}`).digest());
  return Buffer.concat(chunks).subarray(0, size);
}

interface Issued {
  readonly service: string;
  readonly repositories: ReadonlySet<string>;
  readonly all: boolean;
  readonly expiresAt: number;
}

export async function startStyledRegistry(spec: StyleSpec, images: readonly StyleImage[]): Promise<StyledRegistry> {
  const seen: Seen[] = [];
  const issued = new Map<string, Issued>();
  const key = randomBytes(32);
  const servers: Server[] = [];
  const listen = async (address: string, host: Seen['host'], handle: (req: IncomingMessage, res: ServerResponse) => Seen['kind']) => {
    const server = createServer((req, res) => {
      const kind = handle(req, res);
      seen.push({ host, method: req.method ?? '', kind, status: res.statusCode, authorization: req.headers.authorization });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, address, resolve));
    return `http://${address}:${(server.address() as AddressInfo).port}`;
  };

  const storage = await listen('127.0.0.4', 'storage', (req, res) => serveSigned(req, res, key, images));
  let registryOrigin = '';
  const realmPath = spec.realmPath ?? '/token';
  const realmHandler = (req: IncomingMessage, res: ServerResponse): Seen['kind'] => issueToken(req, res, spec, issued);
  const realmOrigin = spec.realmHost === 'other' ? await listen('127.0.0.3', 'realm', realmHandler) : undefined;
  registryOrigin = await listen('127.0.0.2', 'registry', (req, res) => {
    if (realmOrigin === undefined && (req.url ?? '').startsWith(realmPath)) return realmHandler(req, res);
    return serveRegistry(req, res, { spec, images, issued, realm: `${realmOrigin ?? registryOrigin}${realmPath}`, storage, key });
  });
  const front =
    spec.frontPrefix === undefined
      ? undefined
      : await listen('127.0.0.5', 'front', (req, res) => {
          const rest = (req.url ?? '/').replace(/^\/v2\/?/, '');
          res.writeHead(307, { location: `${registryOrigin}/v2/${rest === '' ? '' : spec.frontPrefix}${rest}` }).end();
          return rest === '' ? 'base' : rest.includes('/manifests/') ? 'manifest' : rest.includes('/blobs/') ? 'blob' : 'other';
        });
  return {
    url: front ?? registryOrigin,
    realmOrigin: realmOrigin ?? registryOrigin,
    seen,
    async stop() {
      for (const server of servers) {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    },
  };
}

interface RegistryContext {
  readonly spec: StyleSpec;
  readonly images: readonly StyleImage[];
  readonly issued: Map<string, Issued>;
  readonly realm: string;
  readonly storage: string;
  readonly key: Buffer;
}

function serveRegistry(req: IncomingMessage, res: ServerResponse, ctx: RegistryContext): Seen['kind'] {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  const m = /^\/v2\/(.+)\/(manifests|blobs|tags)\/(.+)$/.exec(path);
  const kind: Seen['kind'] =
    m === null ? (path === '/v2/' ? 'base' : 'other') : m[2] === 'manifests' ? 'manifest' : m[2] === 'blobs' ? 'blob' : 'tags';
  const repository = m?.[1] ?? '';
  const refusal = authorize(req, ctx, repository);
  if (refusal !== undefined) {
    res.writeHead(401, { 'www-authenticate': refusal, 'content-type': 'application/json' });
    res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
    return kind;
  }
  const prefix = ctx.spec.frontPrefix ?? '';
  const image = repository.startsWith(prefix) ? ctx.images.find((i) => prefix + i.repository === repository) : undefined;
  if (kind === 'base') return (void res.writeHead(200).end('{}'), kind);
  if (image === undefined || m === null)
    return (void res.writeHead(404).end('{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}'), kind);
  if (kind === 'manifest' && (m[3] === image.tag || m[3] === image.digest)) {
    const headers = {
      'content-type': MANIFEST_TYPE,
      'content-length': String(image.manifest.length),
      'docker-content-digest': image.digest,
    };
    res.writeHead(200, headers).end(req.method === 'HEAD' ? undefined : image.manifest);
    return kind;
  }
  const blob = kind === 'blob' ? image.blobs.get(m[3] ?? '') : undefined;
  if (blob === undefined) return (void res.writeHead(404).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'), kind);
  if (ctx.spec.storage !== undefined && req.method === 'GET') {
    res
      .writeHead(ctx.spec.storage.status, { location: signedUrl(ctx.storage, m[3] ?? '', Date.now() + ctx.spec.storage.ttlMs, ctx.key) })
      .end();
    return kind;
  }
  res
    .writeHead(200, { 'content-length': String(blob.length), 'docker-content-digest': m[3] })
    .end(req.method === 'HEAD' ? undefined : blob);
  return kind;
}

/** undefined when `req` may read `repository`, else the WWW-Authenticate to answer with. */
function authorize(req: IncomingMessage, ctx: RegistryContext, repository: string): string | undefined {
  const { spec } = ctx;
  if (spec.auth === 'anonymous') return undefined;
  if (spec.auth === 'basic') {
    const creds = spec.credentials?.();
    const expected = creds && `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    return req.headers.authorization === expected ? undefined : `Basic realm="${ctx.realm}",service="${spec.service ?? 'registry'}"`;
  }
  const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
  const grant = token === undefined ? undefined : ctx.issued.get(token);
  const valid = grant !== undefined && grant.service === spec.service && grant.expiresAt > Date.now();
  if (valid && (repository === '' || grant.all || grant.repositories.has(repository))) return undefined;
  const scope = spec.challengeScope ?? (repository === '' ? undefined : `repository:${repository}:pull`);
  const error = valid ? ',error="insufficient_scope"' : '';
  return `Bearer realm="${ctx.realm}",service="${spec.service ?? ''}"${scope === undefined ? '' : `,scope="${scope}"`}${error}`;
}

function issueToken(req: IncomingMessage, res: ServerResponse, spec: StyleSpec, issued: Map<string, Issued>): Seen['kind'] {
  const url = new URL(req.url ?? '/', 'http://x');
  const creds = spec.credentials?.();
  const expected = creds && `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
  const authenticated = expected !== undefined && req.headers.authorization === expected;
  const policy = spec.anonymousTokens ?? 'granted';
  if (req.headers.authorization !== undefined && !authenticated)
    return (void res.writeHead(401).end('{"details":"bad credentials"}'), 'token');
  if (!authenticated && policy === 'refused') return (void res.writeHead(401).end('{"details":"credentials required"}'), 'token');
  if (url.searchParams.get('service') !== spec.service) return (void res.writeHead(400).end('{"details":"unknown service"}'), 'token');
  const scopes = url.searchParams.getAll('scope');
  const repositories = new Set(authenticated || policy === 'granted' ? scopes.map((s) => /^repository:(.+):pull$/.exec(s)?.[1] ?? '') : []);
  const all = scopes.includes('aws');
  const token = randomBytes(16).toString('hex');
  issued.set(token, { service: spec.service ?? '', repositories, all, expiresAt: Date.now() + TOKEN_TTL_S * 1000 });
  const fields = spec.tokenFields ?? 'token';
  const body = {
    ...(fields === 'access_token' ? {} : { token }),
    ...(fields === 'token' ? {} : { access_token: token }),
    expires_in: TOKEN_TTL_S,
    issued_at: new Date().toISOString(),
  };
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  return 'token';
}

function signedUrl(storage: string, digest: string, expiresAt: number, key: Buffer): string {
  const path = `/blobs/${digest}`;
  const sig = createHmac('sha256', key).update(`${path}\n${expiresAt}`).digest('hex');
  return `${storage}${path}?expires=${expiresAt}&signature=${sig}`;
}

/** S3-style: one auth mechanism only (400 with Authorization); signature over path and expiry (403). */
function serveSigned(req: IncomingMessage, res: ServerResponse, key: Buffer, images: readonly StyleImage[]): Seen['kind'] {
  const url = new URL(req.url ?? '/', 'http://x');
  if (req.headers.authorization !== undefined)
    return (void res.writeHead(400).end('<Error><Code>InvalidArgument</Code></Error>'), 'storage');
  const expiresAt = Number(url.searchParams.get('expires'));
  const sig = createHmac('sha256', key).update(`${url.pathname}\n${expiresAt}`).digest('hex');
  if (sig !== url.searchParams.get('signature') || !(expiresAt > Date.now())) {
    return (void res.writeHead(403).end('<Error><Code>AccessDenied</Code></Error>'), 'storage');
  }
  const digest = url.pathname.replace(/^\/blobs\//, '');
  const blob = images.map((i) => i.blobs.get(digest)).find((b) => b !== undefined);
  if (blob === undefined) return (void res.writeHead(404).end(), 'storage');
  res.writeHead(200, { 'content-length': String(blob.length) }).end(req.method === 'HEAD' ? undefined : blob);
  return 'storage';
}
