/**
 * Server-side redirects. Docker Hub sends blob GETs to a CDN with signed query
 * parameters, registry.k8s.io to S3 or Artifact Registry, quay.io to signed URLs:
 * the Location is followed exactly, and `Authorization` never leaves its origin.
 */
import { discard } from './body.js';
import { UpstreamError } from './failure.js';
import type { Hop } from './transport.js';

const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

export const MAX_REDIRECTS = 5;

export type SendHop = (url: URL, headers: Readonly<Record<string, string>>) => Promise<Hop>;

/**
 * Sends to `start` and follows redirects; resolves with the first response that is not
 * a redirect (or a redirect without Location). Method and other headers (Accept, Range)
 * are kept on every hop: we only send GET and HEAD, which 303 leaves as they are.
 */
export async function followRedirects(start: URL, headers: Readonly<Record<string, string>>, send: SendHop): Promise<Hop> {
  const seen = new Set([start.href]);
  let url = start;
  let hopHeaders = headers;
  for (let hops = 0; ; hops++) {
    const hop = await send(url, hopHeaders);
    const location = hop.headers['location'];
    if (!REDIRECT_STATUSES.has(hop.status) || location === undefined) return hop;
    discard(hop.body);
    if (hops === MAX_REDIRECTS) throw redirectError(`more than ${MAX_REDIRECTS} redirects`);
    const next = resolveLocation(url, location);
    if (seen.has(next.href)) throw redirectError('redirect loop');
    seen.add(next.href);
    if (next.origin !== url.origin) hopHeaders = withoutAuthorization(hopHeaders);
    url = next;
  }
}

/** A Location, relative ones resolved against the current URL; only http(s) targets. */
export function resolveLocation(current: URL, location: string): URL {
  let next: URL;
  try {
    next = new URL(location, current);
  } catch (err) {
    // The WHATWG URL parser throws a TypeError (ERR_INVALID_URL) for what it cannot parse.
    if (!(err instanceof TypeError)) throw err;
    throw redirectError('redirect to an invalid URL', err);
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw redirectError(`redirect to a ${next.protocol} URL refused`);
  }
  next.hash = '';
  return next;
}

function withoutAuthorization(headers: Readonly<Record<string, string>>): Record<string, string> {
  const rest: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() !== 'authorization') rest[name] = value;
  }
  return rest;
}

function redirectError(message: string, cause?: unknown): UpstreamError {
  return new UpstreamError('UNAVAILABLE', `upstream ${message}`, 'invalid', cause === undefined ? {} : { cause });
}
