import { readFile } from 'node:fs/promises';
import type { ServerOptions as TlsServerOptions } from 'node:https';
import { fastify, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import type { UpstreamTable } from '../oci/path.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Mirror } from '../mirror/mirror.js';
import { API_VERSION_HEADER } from './headers.js';
import { registerLimits, type ClientLimits } from './limits.js';
import { recordResponse, registerOps, type Readiness } from './ops.js';
import { answerClientError, answerFrameworkError, unrouted } from './protocol-errors.js';
import { loadClientAuth, registerClientAuth, warnIfAnonymous } from './client-auth.js';
import type { ClientAuthConfig, FrontConfig } from '../config/types.js';
import { registerRegistryRoutes } from './routes.js';

/** The built HTTP app, for callers outside http/ (fastify lives here only). */
export type App = FastifyInstance;

export interface AppDeps {
  readonly mirror: Mirror;
  readonly table: UpstreamTable;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly readiness: () => Readiness;
  /** Who may use the mirror; undefined: anyone (config `clientAuth`). */
  readonly clientAuth: ClientAuthConfig | undefined;
  /** Upstreams configured with credentials (a start-up warning when clients are anonymous). */
  readonly upstreamsWithCredentials: readonly string[];
  /** PEM files to serve HTTPS from; plain HTTP when undefined. */
  readonly tls: { readonly certFile: string; readonly keyFile: string } | undefined;
  readonly limits: ClientLimits;
  /** Time a connection has to send a request head (config `listen.headersTimeout`). */
  readonly headersTimeoutMs: number;
  /** With mode "nginx", stored blobs are answered with X-Accel-Redirect (config `front`). */
  readonly front: FrontConfig;
}

/** What the handlers learn about a request, for its one access-log line. */
export interface RequestFacts {
  kind?: string;
  upstream?: string;
  outcome?: string;
  /** `redirect`: a stored blob handed to the front proxy (config `front`), sent by it. */
  front?: 'redirect';
  /** A blob body in transit: its access line waits for the end of the transfer. */
  transfer?: Transfer;
}

/** How a blob transfer went, filled in as it goes. */
export interface Transfer {
  /** Body bytes the client's socket took. */
  bytes: number;
  /** The whole body was sent. */
  completed: boolean;
  /** Why a transfer broke: the client left, the upstream or store failed, the server shut down. */
  reason?: 'client' | 'upstream' | 'store' | 'shutdown';
}

declare module 'fastify' {
  interface FastifyRequest {
    facts: RequestFacts;
  }
}

/** Builds the HTTP app; `listen()` is the serve command's business. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const timeouts = serverTimeouts(deps.headersTimeoutMs);
  const tls = await readTls(deps.tls);
  const app = fastify({
    // HTTPS when configured, else plain HTTP; HTTP/1.1 either way, with fastify's
    // keep-alive (72 s idle). Not HTTP/2: a failed blob transfer is signalled by
    // destroying its socket, which under HTTP/2 would end every stream on the connection.
    https: tls === null ? null : { ...tls, ...timeouts },
    // Plain HTTP's server options (fastify's `http`, not in the type of its HTTPS overload).
    ...(tls === null ? { http: timeouts } : {}),
    requestTimeout: timeouts.requestTimeout,
    // request.ip (per-client limits, login throttle): the address the outermost
    // of `trustedProxies` proxies saw, from the X-Forwarded-For entries they appended.
    trustProxy: deps.limits.trustedProxies > 0 ? (_address: string, hop: number) => hop < deps.limits.trustedProxies : false,
    // Access lines are ours (one per request, with cache facts); fastify's own are off.
    logger: false,
    exposeHeadRoutes: false,
    // Registry clients send their own request IDs nowhere; keep ours short.
    requestIdHeader: false,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    clientErrorHandler: answerClientError,
    frameworkErrors: answerFrameworkError,
  });
  app.decorateRequest('facts', null as unknown as RequestFacts);
  app.addHook('onRequest', (request, _reply, done) => {
    request.facts = {};
    done();
  });
  // The access line is made of fixed scalar fields (never headers, errors or URLs with
  // queries), so it skips pino's redaction, which cost more than the rest of the line:
  // 12 → 4.7 µs a line, +30 % manifest hits/s once manifests are served from memory.
  const accessLog = deps.log.child({}, { redact: { paths: [] } });
  const finished = (request: FastifyRequest, reply: FastifyReply): void => {
    logAccess(accessLog, request, reply);
    recordResponse(deps.metrics, request, reply);
  };
  app.addHook('onResponse', (request, reply, done) => {
    // A blob transfer is finished when its response closes, however it ended (routes.ts).
    if (request.facts.transfer === undefined) finished(request, reply);
    done();
  });
  app.setErrorHandler((err: FastifyError | RegistryError, request, reply) => sendError(err, request, reply, deps.log));
  app.setNotFoundHandler((request, reply) => sendError(unrouted(request.method), request, reply, deps.log));
  registerLimits(app, deps.limits, deps.metrics);
  const auth = await loadClientAuth(deps.clientAuth);
  warnIfAnonymous(auth, deps.upstreamsWithCredentials, deps.log);
  registerClientAuth(app, auth, deps.metrics);
  registerOps(app, deps);
  registerRegistryRoutes(app, deps, finished);
  await app.ready();
  return app;
}

/**
 * Node's limits on a request's arrival: the head within `headersTimeout` (slowloris
 * connections, which trickle header bytes to hold a socket, are closed with 408), the
 * whole request within twice that (the API takes no request bodies). Node checks for
 * expired requests every `connectionsCheckingInterval` (30 s by default, which would let
 * a slow head live 30 s past its limit), so here at most every second.
 */
function serverTimeouts(headersTimeoutMs: number) {
  return {
    headersTimeout: headersTimeoutMs,
    requestTimeout: 2 * headersTimeoutMs,
    connectionsCheckingInterval: Math.min(headersTimeoutMs, 1000),
  } as const;
}

/** The PEM pair, read once at start-up: a missing or unreadable file fails the start, not a request. */
async function readTls(tls: AppDeps['tls']): Promise<TlsServerOptions | null> {
  if (tls === undefined) return null;
  const read = (path: string, key: string): Promise<Buffer> =>
    readFile(path).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`listen.tls.${key}: cannot read ${path} (${err.code ?? err.message})`, { cause: err });
    });
  const [cert, key] = await Promise.all([read(tls.certFile, 'certFile'), read(tls.keyFile, 'keyFile')]);
  return { cert, key };
}

function sendError(err: FastifyError | RegistryError, request: FastifyRequest, reply: FastifyReply, log: Logger): FastifyReply {
  const error = toRegistryError(err);
  request.facts.outcome ??= 'error';
  if (error.statusCode >= 500) log.warn({ err, url: request.url }, 'request failed');
  if (reply.sent || reply.raw.headersSent) {
    // Headers are out: the only honest signal left is a broken transfer.
    reply.raw.destroy();
    return reply;
  }
  reply
    .code(error.statusCode)
    .headers({ ...API_VERSION_HEADER, ...error.headers })
    .type('application/json');
  return request.method === 'HEAD' ? reply.send() : reply.send(JSON.stringify(error.toJSON()));
}

function toRegistryError(err: FastifyError | RegistryError): RegistryError {
  if (err instanceof RegistryError) return err;
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    return new RegistryError('UNSUPPORTED', err.message, { statusCode: status, cause: err });
  }
  return new RegistryError('UNAVAILABLE', 'internal error', { statusCode: 500, cause: err });
}

function logAccess(log: Logger, request: FastifyRequest, reply: FastifyReply): void {
  const { kind, upstream, outcome, transfer, front } = request.facts;
  const length = reply.getHeader('content-length');
  log.info(
    {
      method: request.method,
      path: request.url.split('?', 1)[0],
      kind,
      upstream,
      outcome,
      ...(front === undefined ? {} : { front }),
      status: reply.statusCode,
      bytes: transfer?.bytes ?? (request.method === 'HEAD' ? 0 : Number(length ?? 0)),
      // To the last byte, or to the break, for a blob.
      durationMs: Math.round(reply.elapsedTime),
      completed: transfer?.completed,
      reason: transfer?.reason,
    },
    'request',
  );
}
