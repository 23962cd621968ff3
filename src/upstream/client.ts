import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { UpstreamConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { RegistryError } from '../oci/errors.js';
import { createAuthenticator, createTokenCache } from './auth.js';
import { createCredentialSource } from './credentials.js';
import { discard } from './body.js';
import { createBreaker, type Breaker, type Reachability } from './breaker.js';
import { isServerFailure, isUpstreamFailure, networkError, statusError } from './failure.js';
import { followRedirects } from './redirect.js';
import { guardSpeed } from './speed-guard.js';
import type { Resolve } from './local-address.js';
import { createTransport, type Hop } from './transport.js';

export { isUpstreamFailure, UpstreamError, type FailureReason } from './failure.js';

export interface UpstreamRequest {
  readonly method: 'GET' | 'HEAD';
  /** Already normalised, e.g. `library/alpine`. */
  readonly repository: string;
  /** After `/v2/<repository>/`, e.g. `manifests/latest`, `blobs/sha256:…`, `tags/list`. */
  readonly path: string;
  /** Raw query string without `?`, e.g. `n=10&last=a`. */
  readonly query?: string;
  /** Sent as one comma-joined Accept header. */
  readonly accept?: readonly string[];
  /**
   * Extra request headers, e.g. `{ range: 'bytes=1024-', 'if-range': '"sha256:…"' }` to resume a
   * body; they go to every hop. Authorization is never taken from here.
   */
  readonly headers?: Readonly<Record<string, string>>;
  readonly notFound: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN';
  readonly signal?: AbortSignal;
}

export interface UpstreamResponse {
  /** 200 or 206; 416 too when the request carried a Range (the caller decides what it means). */
  readonly status: number;
  /** Lower-case names, single string values. */
  readonly headers: Readonly<Record<string, string>>;
  /** The caller must consume or destroy it. */
  readonly body: Readable;
  /** Final URL after redirects (for logs; may hold signed query parameters). */
  readonly url: string;
}

export interface Upstream {
  readonly name: string;
  readonly hasCredentials: boolean;
  /**
   * Resolves with a 200/206 response; rejects with a RegistryError: `req.notFound` on
   * 404, else an UpstreamError (see isUpstreamFailure). Retries happen in here, before
   * any byte reaches a client.
   */
  request(req: UpstreamRequest): Promise<UpstreamResponse>;
  /** True while the breaker is open. */
  isDown(): boolean;
  close(): Promise<void>;
}

export interface UpstreamDeps {
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now?: () => number;
  readonly dispatcher?: Dispatcher;
  /** DNS for the connect-time lookup (tests inject one); node:dns by default. */
  readonly resolve?: Resolve;
}

/** A Retry-After longer than this is not waited out: the client gets it instead. */
const RETRY_AFTER_CAP_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_CAP_MS = 2_000;

/** Headers a caller may not set: credentials are ours, framing is undici's. */
const CALLER_HEADER_DENYLIST: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'upgrade',
  'expect',
  'te',
  'trailer',
]);

type Attempt =
  | { readonly hop: Hop }
  | { readonly error: RegistryError; readonly retryable: boolean; readonly retryAfterMs?: number | undefined };

export function createUpstream(config: UpstreamConfig, deps: UpstreamDeps): Upstream {
  const now = deps.now ?? Date.now;
  const log = deps.log.child({ upstream: config.name });
  const base = new URL(config.url);
  const transport = createTransport(config, deps);
  const { connectMs, headersMs, bodyMs } = config.timeouts;
  const credentials = config.credentials && createCredentialSource(config.credentials, { host: base.host, now });
  const tokens = createTokenCache({
    upstreamUrl: base,
    credentials,
    trustedRealms: config.credentials?.realms,
    send: (url, headers, signal) => transport.send('GET', url, headers, signal, 'TOKEN'),
    deadlineMs: connectMs + headersMs + bodyMs,
    now,
    log,
  });
  const auth = createAuthenticator({ tokens, origin: base.origin, credentials });
  const breaker = breakerFor(config, deps.metrics, log, now);

  async function request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const probe = breaker.enter();
    try {
      const hop = await withRetries(req);
      breaker.settle('reachable', probe);
      const body = guardSpeed(hop.body, { minBytesPerSecond: config.minBytesPerSecond, windowMs: bodyMs, now });
      return { status: hop.status, headers: hop.headers, body, url: hop.url.href };
    } catch (err) {
      breaker.settle(reachabilityOf(err, req.signal), probe);
      throw err;
    }
  }

  async function withRetries(req: UpstreamRequest): Promise<Hop> {
    for (let retry = 0; ; retry++) {
      const attempt = await attemptOnce(req);
      if ('hop' in attempt) return attempt.hop;
      const delayMs = attempt.retryAfterMs ?? backoffMs(retry);
      if (!attempt.retryable || retry >= config.retries || delayMs > RETRY_AFTER_CAP_MS) throw attempt.error;
      log.debug({ retry: retry + 1, delayMs, reason: attempt.error.message }, 'retry upstream request');
      await sleep(delayMs, undefined, req.signal ? { signal: req.signal } : {});
    }
  }

  async function attemptOnce(req: UpstreamRequest): Promise<Attempt> {
    try {
      const hop = await exchange(req);
      if (hop.status === 200 || hop.status === 206 || (hop.status === 416 && hasRange(req))) return { hop };
      discard(hop.body);
      const retryAfterMs = retryAfterFor(hop, now());
      const retryable = hop.status === 429 || isServerFailure(hop.status);
      return { error: statusError(hop.status, req.notFound, retryAfterMs), retryable, retryAfterMs };
    } catch (err) {
      if (req.signal?.aborted) throw err;
      const error = err instanceof RegistryError ? err : networkError(err, `${req.method} ${req.path}`);
      return { error, retryable: isUpstreamFailure(error) && error.reason === 'unreachable' };
    }
  }

  /** One exchange: redirects followed, each hop authenticated for its own origin. */
  function exchange(req: UpstreamRequest): Promise<Hop> {
    return followRedirects(urlFor(base, req), requestHeaders(req), (url, headers) => sendAuthenticated(req, url, headers));
  }

  /** One hop: sent with what its origin asked for before; a 401 is answered once from its own challenge. */
  async function sendAuthenticated(req: UpstreamRequest, url: URL, headers: Readonly<Record<string, string>>): Promise<Hop> {
    const send = (authorization: string | undefined) =>
      transport.send(req.method, url, withAuthorization(headers, authorization), req.signal);
    const sent = await auth.authorizationFor(url, req.repository);
    const first = await send(sent);
    if (first.status !== 401) return first;
    const answer = await auth.answer(url, req.repository, first.headers['www-authenticate'], sent);
    if (answer === undefined) return first;
    discard(first.body);
    log.debug({ origin: url.origin, scheme: answer.split(' ', 1)[0] }, 'authenticate upstream request');
    return send(answer);
  }

  return {
    name: config.name,
    hasCredentials: config.credentials !== undefined,
    request,
    isDown: () => breaker.isOpen(),
    close: () => transport.close(),
  };
}

/** The breaker, reported as the upstreamDown gauge and a warning on each change. */
function breakerFor(config: UpstreamConfig, metrics: Metrics, log: Logger, now: () => number): Breaker {
  const labels = { upstream: config.name };
  return createBreaker({
    name: config.name,
    downForMs: config.downForMs,
    now,
    onOpen: () => {
      metrics.upstreamDown.set(labels, 1);
      log.warn({ downForMs: config.downForMs }, 'upstream down');
    },
    onClose: () => {
      metrics.upstreamDown.set(labels, 0);
      log.warn('upstream up');
    },
  });
}

function reachabilityOf(err: unknown, signal: AbortSignal | undefined): Reachability {
  if (signal?.aborted) return 'aborted';
  return isUpstreamFailure(err) && err.reason === 'unreachable' ? 'unreachable' : 'reachable';
}

function urlFor(base: URL, req: UpstreamRequest): URL {
  const root = base.href.replace(/\/+$/, '');
  const query = req.query ? `?${req.query}` : '';
  return new URL(`${root}/v2/${req.repository}/${req.path}${query}`);
}

function requestHeaders(req: UpstreamRequest): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers ?? {})) {
    const lower = name.toLowerCase();
    if (!CALLER_HEADER_DENYLIST.has(lower)) headers[lower] = value;
  }
  if (req.accept && req.accept.length > 0) headers['accept'] = req.accept.join(', ');
  return headers;
}

function hasRange(req: UpstreamRequest): boolean {
  return Object.keys(req.headers ?? {}).some((name) => name.toLowerCase() === 'range');
}

function withAuthorization(headers: Readonly<Record<string, string>>, authorization: string | undefined): Readonly<Record<string, string>> {
  return authorization === undefined ? headers : { ...headers, authorization };
}

/** 100 ms, 400 ms, 1.6 s, then 2 s. */
function backoffMs(retry: number): number {
  return Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 4 ** retry);
}

/** Retry-After (RFC 9110 §10.2.3) on 429 and 503: delay-seconds or an HTTP-date. */
function retryAfterFor(hop: Hop, nowMs: number): number | undefined {
  if (hop.status !== 429 && hop.status !== 503) return undefined;
  return parseRetryAfterMs(hop.headers['retry-after'], nowMs);
}

export function parseRetryAfterMs(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}
