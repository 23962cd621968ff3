import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { parseApiPath, routeName, type ApiPath, type Route } from '../oci/path.js';
import { acceptsManifest, parseAccept, parseRefused } from '../oci/media-types.js';
import { parseRange } from '../oci/range.js';
import type { BlobResult, ManifestResult } from '../mirror/mirror.js';
import type { AppDeps, Transfer } from './app.js';
import { API_VERSION_HEADER } from './headers.js';

const API_VERSION_NAME = 'docker-distribution-api-version';
/** (Accept header, media type) pairs whose answer is kept: clients send a handful of distinct lists. */
const KNOWN_ACCEPT_ANSWERS = 64;

const BLOB_HEADERS = {
  ...API_VERSION_HEADER,
  'content-type': 'application/octet-stream',
  'accept-ranges': 'bytes',
  // Content addressed: the bytes behind a digest never change.
  'cache-control': 'max-age=31536000',
} as const;

/** What the handlers use: the app's dependencies and what they keep between requests. */
interface RouteDeps extends AppDeps {
  /** Writes the access line and records the response; for blobs, when the transfer ends. */
  readonly finished: (request: FastifyRequest, reply: FastifyReply) => void;
  readonly accepts: (header: string | string[] | undefined, mediaType: string) => boolean;
}

/**
 * Whether an Accept header takes a manifest's media type. Clients send the same long
 * list on every pull, so answers are kept per (header, type), a bounded few: parsing
 * the list was a measurable share of a manifest hit (test/bench/README.md).
 */
function createAcceptCheck(): RouteDeps['accepts'] {
  const known = new LRUCache<string, boolean>({ max: KNOWN_ACCEPT_ANSWERS });
  return (header, mediaType) => {
    if (typeof header !== 'string') return acceptsManifest(parseAccept(header), mediaType, parseRefused(header));
    const key = `${mediaType}\n${header}`;
    let accepted = known.get(key);
    if (accepted === undefined) {
      accepted = acceptsManifest(parseAccept(header), mediaType, parseRefused(header));
      known.set(key, accepted);
    }
    return accepted;
  };
}

/** The pull side of the distribution API under /v2/; push and delete answer 405. */
export function registerRegistryRoutes(app: FastifyInstance, appDeps: AppDeps, finished: RouteDeps['finished']): void {
  const deps: RouteDeps = { ...appDeps, finished, accepts: createAcceptCheck() };
  const handle = (request: FastifyRequest, reply: FastifyReply) => serve(deps, request, reply);
  app.route({ method: ['GET', 'HEAD'], url: '/v2', handler: handle });
  app.route({ method: ['GET', 'HEAD'], url: '/v2/*', handler: handle });
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v2/*',
    handler: () => {
      throw unsupported();
    },
  });
}

async function serve(deps: RouteDeps, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const [pathname = '', query] = splitUrl(request.raw.url ?? '');
  const api = parseApiPath(pathname);
  request.facts.kind = api.kind;
  const method = request.method === 'HEAD' ? 'HEAD' : 'GET';
  switch (api.kind) {
    case 'base':
      return reply
        .headers(API_VERSION_HEADER)
        .type('application/json')
        .send(method === 'HEAD' ? undefined : '{}');
    case 'push':
      throw unsupported();
    case 'catalog':
      // A mirror knows only what clients happened to pull, not what its upstreams hold.
      throw new RegistryError('UNSUPPORTED', 'this is a pull-through mirror: it has no catalog of repositories');
    default:
      break;
  }
  const route = routeName(api.name, new URLSearchParams(query ?? '').get('ns') ?? undefined, deps.table);
  request.facts.upstream = route.upstream;
  return serveContent(deps, request, reply, api, route, method, query);
}

async function serveContent(
  deps: RouteDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  api: Exclude<ApiPath, { kind: 'base' | 'push' | 'catalog' }>,
  route: Route,
  method: 'GET' | 'HEAD',
  query: string | undefined,
): Promise<FastifyReply> {
  const { mirror } = deps;
  switch (api.kind) {
    case 'manifest': {
      const result = await mirror.getManifest(route, api.reference, method);
      request.facts.outcome = result.outcome;
      // Distribution answers a stored type the client does not accept with MANIFEST_UNKNOWN
      // (registry/handlers/manifests.go, GetManifest: "OCI manifest found, but accept header
      // does not support OCI manifests"); so do we, for unlisted and `q=0` types alike.
      if (!deps.accepts(request.headers.accept, result.mediaType)) {
        throw new RegistryError('MANIFEST_UNKNOWN', `manifest is ${result.mediaType}, which the request does not accept`);
      }
      return sendManifest(reply, result, method);
    }
    case 'blob': {
      if (method === 'HEAD') {
        const head = await mirror.headBlob(route, api.digest);
        request.facts.outcome = head.outcome;
        return reply.headers({ ...BLOB_HEADERS, ...digestHeaders(head.digest), 'content-length': String(head.sizeBytes) }).send();
      }
      const front = deps.front.mode === 'nginx';
      const range = parseRange(headerValue(request.headers.range));
      const result = await mirror.getBlob(route, api.digest, range, { handOff: front });
      request.facts.outcome = result.outcome;
      if (result.handedOff !== undefined) return redirectToFront(reply, result, deps.front.internalPrefix);
      return sendBlob(deps, request, reply, result);
    }
    case 'tags':
    case 'referrers': {
      if (method === 'HEAD') throw unsupported();
      const path = api.kind === 'tags' ? 'tags/list' : `referrers/${api.digest}`;
      const result = await mirror.passThrough(route, api.kind, path, withoutNs(query));
      request.facts.outcome = result.outcome;
      return reply
        .code(result.status)
        .headers({ ...API_VERSION_HEADER, ...result.headers })
        .send(result.body);
    }
  }
}

/** One header at a time: spreading header objects per request was a measurable share of a manifest hit. */
function sendManifest(reply: FastifyReply, result: ManifestResult, method: 'GET' | 'HEAD'): FastifyReply {
  reply
    .header(API_VERSION_NAME, API_VERSION_HEADER[API_VERSION_NAME])
    .header('docker-content-digest', result.digest)
    .header('etag', `"${result.digest}"`)
    .header('content-type', result.mediaType)
    .header('content-length', String(result.sizeBytes));
  return method === 'HEAD' ? reply.send() : reply.send(result.body);
}

/**
 * Blob bodies bypass fastify's send path: headers are flushed at once, before the first
 * byte exists (containerd ≥ 2.3 gives up after 30 s without headers), and the body is
 * written with backpressure. After the headers, a failure can only break the transfer:
 * the socket is destroyed, so a client never sees a clean short body. The access line is
 * written when the response closes, with the bytes the socket took (`Transfer`).
 */
function sendBlob(deps: RouteDeps, request: FastifyRequest, reply: FastifyReply, result: BlobResult): FastifyReply {
  const headers: Record<string, string> = { ...BLOB_HEADERS, ...digestHeaders(result.digest) };
  // Behind nginx, a body still being fetched must reach the client as it arrives, not once
  // nginx has buffered it (ngx_http_proxy_module, "X-Accel-Buffering").
  if (deps.front.mode === 'nginx') headers['x-accel-buffering'] = 'no';
  const { range, sizeBytes } = result;
  if (range) {
    headers['content-range'] = `bytes ${range.start}-${range.end}/${sizeBytes ?? '*'}`;
    headers['content-length'] = String(range.end - range.start + 1);
  } else if (sizeBytes !== undefined) {
    headers['content-length'] = String(sizeBytes);
  }
  const transfer: Transfer = { bytes: 0, completed: false };
  request.facts.transfer = transfer;
  reply.hijack();
  const res = reply.raw;
  res.once('close', () => {
    transfer.completed = res.writableFinished;
    if (!transfer.completed) transfer.reason ??= request.server.server.listening ? 'client' : 'shutdown';
    // A client that leaves lets go of its reader at once, not at the next chunk.
    result.body.destroy();
    deps.finished(request, reply);
  });
  res.writeHead(range ? 206 : 200, headers);
  res.flushHeaders();
  writeBody(result, res, transfer).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') {
      deps.log.warn({ err, digest: result.digest }, 'blob transfer broken');
    }
  });
  return reply;
}

/**
 * A stored blob, sent by nginx: an empty 200 whose X-Accel-Redirect names the file under
 * the internal location over the store's blobs/sha256/ directory. nginx keeps
 * Content-Type and Cache-Control from this answer, sets Content-Length and answers Range
 * from the file (deploy/nginx/front.conf); the digest headers are copied there from
 * $upstream_http_*. The access line records the hand-off with zero bytes: nginx's log has them.
 */
function redirectToFront(reply: FastifyReply, result: BlobResult, internalPrefix: string): FastifyReply {
  reply.request.facts.front = 'redirect';
  return reply
    .headers({ ...BLOB_HEADERS, ...digestHeaders(result.digest) })
    .header('x-accel-redirect', `${internalPrefix}${result.handedOff ?? ''}`)
    .header('content-length', '0')
    .send();
}

/**
 * pipeline() with two differences: bytes are counted as the socket takes them (each
 * write's callback), and each chunk is handed back (`recycle`) then, so the reader can
 * read the next one into the same memory. Backpressure as pipeline: wait for 'drain'.
 * A failure on either side destroys both; one of the body's own is the source's fault.
 */
async function writeBody(result: BlobResult, res: ServerResponse, transfer: Transfer): Promise<void> {
  const { body, recycle, served } = result;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (res.destroyed) throw Object.assign(new Error('client went away'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      const taken = (err: Error | null | undefined): void => {
        if (err) return;
        transfer.bytes += chunk.length;
        served(chunk.length);
        recycle?.(chunk);
      };
      if (!res.write(chunk, taken)) await drained(res);
    }
    res.end();
  } catch (err) {
    if (!res.destroyed) transfer.reason ??= result.outcome === 'hit' ? 'store' : 'upstream';
    body.destroy();
    res.destroy();
    throw err;
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function digestHeaders(digest: string): Record<string, string> {
  return { 'docker-content-digest': digest, etag: `"${digest}"` };
}

function unsupported(): RegistryError {
  return new RegistryError('UNSUPPORTED', 'this is a pull-through mirror: push and delete are not supported');
}

function splitUrl(url: string): [string, string | undefined] {
  const q = url.indexOf('?');
  return q === -1 ? [url, undefined] : [url.slice(0, q), url.slice(q + 1)];
}

/** `ns` is ours (containerd's routing hint) and never goes upstream or into a cache key. */
function withoutNs(query: string | undefined): string | undefined {
  if (!query) return undefined;
  const params = new URLSearchParams(query);
  params.delete('ns');
  const rest = params.toString();
  return rest === '' ? undefined : rest;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(',') : value;
}
