import { RegistryError, type ErrorCode, type RegistryErrorOptions } from '../oci/errors.js';

/**
 * Why an upstream failed. `unreachable` (network error, connect or headers timeout) is
 * retried and, repeated, opens the breaker; `tls` (the upstream's certificate was not
 * trusted, or ours refused) opens it without a retry; `server` (a 5xx for one path) is
 * retried but is that request's error, not the upstream's; the others mean the upstream
 * answered.
 */
export type FailureReason = 'unreachable' | 'tls' | 'server' | 'refused' | 'rate-limited' | 'invalid' | 'down';

/**
 * A RegistryError that means "the upstream failed", as opposed to "the upstream says
 * there is no such thing" (a plain RegistryError with a *_UNKNOWN code). The mirror
 * serves stale tags on these.
 */
export class UpstreamError extends RegistryError {
  readonly upstreamFailure = true;
  readonly reason: FailureReason;

  constructor(code: ErrorCode, message: string, reason: FailureReason, options: RegistryErrorOptions = {}) {
    super(code, message, options);
    this.name = 'UpstreamError';
    this.reason = reason;
  }
}

export function isUpstreamFailure(err: unknown): err is UpstreamError {
  return err instanceof UpstreamError;
}

/** Node/undici error codes worth a retry: the next connection may well succeed. */
const TRANSIENT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_SOCKET',
]);

/** `err.code`, else the code of its cause or of the first error of an AggregateError (happy eyeballs). */
export function errorCode(err: unknown): string | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const record = err as { code?: unknown; cause?: unknown; errors?: unknown; name?: unknown };
  if (typeof record.code === 'string') return record.code;
  if (record.name === 'TimeoutError') return 'ETIMEDOUT';
  if (Array.isArray(record.errors)) return errorCode(record.errors[0]);
  return record.cause === undefined ? undefined : errorCode(record.cause);
}

/** OpenSSL's certificate verdicts (`err.code` of a failed handshake) and Node's own TLS codes. */
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|CERT_|ERR_OSSL_)/;

/** Maps a thrown network-layer error; `what` names the step for the message. */
export function networkError(err: unknown, what: string): UpstreamError {
  const code = errorCode(err) ?? 'unknown error';
  if (TLS_CODE.test(code)) {
    const hint = "check the upstream's tls.caFile, tls.certFile and tls.keyFile";
    return new UpstreamError('UNAVAILABLE', `${what} failed: TLS handshake with the upstream failed (${code}); ${hint}`, 'tls', {
      cause: err,
    });
  }
  const reason = TRANSIENT_CODES.has(code) ? 'unreachable' : 'invalid';
  return new UpstreamError('UNAVAILABLE', `${what} failed: ${code}`, reason, { cause: err });
}

/**
 * Maps a final upstream status that is not a success. 404 is the caller's *_UNKNOWN
 * code (not an upstream failure); everything else is an UpstreamError.
 */
export function statusError(status: number, notFound: ErrorCode, retryAfterMs?: number): RegistryError {
  const headers = retryAfterMs === undefined ? {} : { 'retry-after': String(Math.ceil(retryAfterMs / 1000)) };
  if (status === 404) return new RegistryError(notFound, 'not found upstream', { statusCode: 404 });
  if (status === 401 || status === 403) {
    return new UpstreamError('DENIED', `upstream refused access (${status})`, 'refused', { statusCode: 403 });
  }
  if (status === 429) {
    return new UpstreamError('TOOMANYREQUESTS', 'upstream rate limit reached', 'rate-limited', { headers });
  }
  const reason = isServerFailure(status) ? 'server' : 'invalid';
  return new UpstreamError('UNAVAILABLE', `upstream answered ${status}`, reason, { headers });
}

/** 5xx but 501: "not implemented" is an answer about one endpoint, not an outage. */
export function isServerFailure(status: number): boolean {
  return status >= 500 && status !== 501;
}
