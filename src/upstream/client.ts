import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { UpstreamConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { RegistryError } from '../oci/errors.js';
import { createCredentialSource } from './credentials.js';
import { discard } from './body.js';
import { createEndpoints, reachabilityOf, type Endpoint } from './endpoints.js';
import { isServerFailure, isUpstreamFailure, networkError, statusError } from './failure.js';
import { followRedirects } from './redirect.js';
import { guardSpeed } from './speed-guard.js';
import type { Resolve } from './local-address.js';
import { createThrottle, parseRetryAfterMs, throttleHint, type Throttle } from './throttle.js';
import { createTransport, type Hop } from './transport.js';

export { isUpstreamFailure, UpstreamError, type FailureReason } from './failure.js';
export { parseRetryAfterMs } from './throttle.js';

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
  /** True while the breaker of every endpoint is open. */
  isDown(): boolean;
  /** True while the upstream is left alone after a 429. */
  isThrottled(): boolean;
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

/** A Retry-After longer than this is not waited out (503 only; a 429 is never retried). */
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
  { readonly hop: Hop } | { readonly error: RegistryError; readonly retryable: boolean; readonly retryAfterMs?: number | undefined };

export function createUpstream(config: UpstreamConfig, deps: UpstreamDeps): Upstream {
  const now = deps.now ?? Date.now;
  const log = deps.log.child({ upstream: config.name });
  const transport = createTransport(config, deps);
  if (config.tls?.insecureSkipVerify) log.warn('TLS certificates of this upstream are not verified (tls.insecureSkipVerify)');
  const credentials = config.credentials && createCredentialSource(config.credentials, { host: new URL(config.url).host, now });
  const endpoints = createEndpoints(config, { transport, metrics: deps.metrics, log, now, credentials });
  const throttle = throttleFor(config, deps.metrics, log, now);

  async function request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const probe = throttle.enter();
    try {
      const hop = await viaEndpoints(req, probe);
      const body = guardSpeed(hop.body, { minBytesPerSecond: config.minBytesPerSecond, windowMs: config.timeouts.bodyMs, now });
      return { status: hop.status, headers: hop.headers, body, url: hop.url.href };
    } finally {
      throttle.release(probe);
    }
  }

  /** The first endpoint whose breaker is closed and that answers; an HTTP answer is final. */
  async function viaEndpoints(req: UpstreamRequest, throttleProbe: boolean): Promise<Hop> {
    let last: unknown;
    for (const endpoint of endpoints) {
      let probe: boolean;
      try {
        probe = endpoint.breaker.enter();
      } catch (err) {
        if (!isUpstreamFailure(err)) throw err;
        last = err;
        continue;
      }
      try {
        const hop = await withRetries(req, endpoint, throttleProbe);
        endpoint.breaker.settle('reachable', probe);
        return hop;
      } catch (err) {
        const reachability = reachabilityOf(err, req.signal);
        endpoint.breaker.settle(reachability, probe);
        if (reachability !== 'unreachable') throw err;
        last = err;
      }
    }
    throw last;
  }

  async function withRetries(req: UpstreamRequest, endpoint: Endpoint, throttleProbe: boolean): Promise<Hop> {
    for (let retry = 0; ; retry++) {
      const attempt = await attemptOnce(req, endpoint, throttleProbe);
      if ('hop' in attempt) return attempt.hop;
      const delayMs = attempt.retryAfterMs ?? backoffMs(retry);
      if (!attempt.retryable || retry >= config.retries || delayMs > RETRY_AFTER_CAP_MS) throw attempt.error;
      // Each failed attempt counts towards the breaker; once it opens, the next endpoint is tried.
      if (reachabilityOf(attempt.error, req.signal) === 'unreachable') {
        endpoint.breaker.settle('unreachable', false);
        if (endpoint.breaker.isOpen()) throw attempt.error;
      }
      log.debug({ retry: retry + 1, delayMs, reason: attempt.error.message }, 'retry upstream request');
      await sleep(delayMs, undefined, req.signal ? { signal: req.signal } : {});
    }
  }

  async function attemptOnce(req: UpstreamRequest, endpoint: Endpoint, throttleProbe: boolean): Promise<Attempt> {
    try {
      const hop = await exchange(req, endpoint);
      if (hop.status === 429) return rateLimited(req, hop);
      throttle.answered(throttleProbe);
      if (hop.status === 200 || hop.status === 206 || (hop.status === 416 && hasRange(req))) return { hop };
      discard(hop.body);
      const retryAfterMs = hop.status === 503 ? parseRetryAfterMs(hop.headers['retry-after'], now()) : undefined;
      return { error: statusError(hop.status, req.notFound, retryAfterMs), retryable: isServerFailure(hop.status), retryAfterMs };
    } catch (err) {
      if (req.signal?.aborted) throw err;
      const error = err instanceof RegistryError ? err : networkError(err, `${req.method} ${req.path}`);
      return { error, retryable: isUpstreamFailure(error) && error.reason === 'unreachable' };
    }
  }

  /** A 429 is never retried: it throttles the whole upstream, and the client hears when to come back. */
  function rateLimited(req: UpstreamRequest, hop: Hop): Attempt {
    discard(hop.body);
    const hint = throttleHint(hop.headers, now()) ?? { forMs: config.throttleMs, exact: false };
    const waitMs = throttle.limited(hint);
    log.warn({ throttleMs: hint.forMs, path: req.path }, 'upstream rate limited');
    return { error: statusError(429, req.notFound, waitMs), retryable: false };
  }

  /** One exchange: redirects followed, each hop authenticated for its own origin. */
  function exchange(req: UpstreamRequest, endpoint: Endpoint): Promise<Hop> {
    return followRedirects(urlFor(endpoint.base, req), requestHeaders(req), (url, headers) =>
      sendAuthenticated(req, endpoint, url, headers),
    );
  }

  /** One hop: sent with what its origin asked for before; a 401 is answered once from its own challenge. */
  async function sendAuthenticated(
    req: UpstreamRequest,
    endpoint: Endpoint,
    url: URL,
    headers: Readonly<Record<string, string>>,
  ): Promise<Hop> {
    const { auth } = endpoint;
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
    isDown: () => endpoints.every((endpoint) => endpoint.breaker.isOpen()),
    isThrottled: () => throttle.isThrottled(),
    close: async () => {
      for (const endpoint of endpoints) endpoint.breaker.close();
      throttle.close();
      await transport.close();
    },
  };
}

function throttleFor(config: UpstreamConfig, metrics: Metrics, log: Logger, now: () => number): Throttle {
  const labels = { upstream: config.name };
  return createThrottle({
    name: config.name,
    throttleMs: config.throttleMs,
    now,
    onChange: (throttled) => {
      metrics.upstreamThrottled.set(labels, throttled ? 1 : 0);
      if (!throttled) log.info('upstream rate limit over');
    },
    onRefused: () => metrics.upstreamThrottledRefusals.inc(labels),
  });
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
