/**
 * Bearer tokens of one upstream (distribution `docs/content/spec/auth/token.md`),
 * cached per (realm, service, scope) until a little before `expires_in` (60 s when
 * omitted). Concurrent requests for one key share one fetch; a failed fetch is not
 * cached.
 */
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { UpstreamCredentials } from '../config/types.js';
import type { Logger } from '../log.js';
import { createSingleFlight } from '../single-flight.js';
import { discard, readCapped } from './body.js';
import { networkError, UpstreamError } from './failure.js';
import { followRedirects } from './redirect.js';
import type { Hop } from './transport.js';

export interface TokenKey {
  readonly realm: string;
  readonly service?: string | undefined;
  /** One scope or several separated by spaces, as in a challenge. */
  readonly scope: string;
}

export interface TokenCache {
  /** A fresh cached token; never fetches. */
  findToken(key: TokenKey): string | undefined;
  /** A fresh cached token, else one fetched (shared with concurrent callers). */
  getToken(key: TokenKey): Promise<string>;
  /** Forgets `token` for `key` (the upstream refused it), unless it was replaced already. */
  invalidate(key: TokenKey, token: string): void;
}

export type SendToken = (url: URL, headers: Readonly<Record<string, string>>, signal: AbortSignal) => Promise<Hop>;

export interface TokenCacheOptions {
  readonly upstreamUrl: URL;
  readonly credentials?: UpstreamCredentials | undefined;
  /** Sends one GET round trip (redirects are followed here). */
  readonly send: SendToken;
  /** Longest a whole token fetch (connect, headers, body) may take. */
  readonly deadlineMs: number;
  readonly now: () => number;
  readonly log: Logger;
}

const DEFAULT_EXPIRES_IN_S = 60; // token.md: "defaults to 60 seconds"
const EARLY_REFRESH_MAX_MS = 10_000;
const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;
const MAX_CACHED_TOKENS = 1024;
/** A token goes into a header: visible ASCII only. */
const TOKEN_SYNTAX = /^[\x21-\x7e]+$/;

interface Cached {
  readonly token: string;
  readonly expiresAt: number;
}

export function createTokenCache(options: TokenCacheOptions): TokenCache {
  const { now } = options;
  // Each token keeps its own lifetime (a per-entry ttl); past MAX_CACHED_TOKENS the least
  // recently used goes. ttlResolution 0: ask `now` on every lookup, no cached reading.
  const cached = new LRUCache<string, string>({ max: MAX_CACHED_TOKENS, ttlResolution: 0, perf: { now } });
  const fetches = createSingleFlight<string>();

  function findToken(key: TokenKey): string | undefined {
    return cached.get(keyOf(key));
  }

  function getToken(key: TokenKey): Promise<string> {
    const token = findToken(key);
    if (token !== undefined) return Promise.resolve(token);
    const id = keyOf(key);
    const { promise } = fetches.run(id, async () => {
      const fetched = await fetchToken(key, options);
      const ttlMs = fetched.expiresAt - now();
      if (ttlMs > 0) cached.set(id, fetched.token, { ttl: ttlMs });
      return fetched.token;
    });
    return promise;
  }

  function invalidate(key: TokenKey, token: string): void {
    const id = keyOf(key);
    if (cached.peek(id) === token) cached.delete(id);
  }

  return { findToken, getToken, invalidate };
}

function keyOf(key: TokenKey): string {
  return JSON.stringify([key.realm, key.service ?? '', key.scope]);
}

/** GET realm?service=…&scope=…&scope=…, with Basic credentials only inside the trust boundary. */
async function fetchToken(key: TokenKey, options: TokenCacheOptions): Promise<Cached> {
  const realm = realmUrl(key.realm);
  const url = new URL(realm);
  if (key.service) url.searchParams.append('service', key.service);
  for (const scope of key.scope.split(' ')) if (scope) url.searchParams.append('scope', scope);
  const headers: Record<string, string> = { accept: 'application/json' };
  const { credentials, log } = options;
  if (credentials && isInTrustBoundary(realm, options.upstreamUrl)) {
    headers['authorization'] = basicAuthorization(credentials);
  } else if (credentials) {
    log.warn({ realm: realm.host }, 'token realm outside upstream trust boundary; fetching anonymously');
  }
  const startedAt = options.now();
  const signal = AbortSignal.timeout(options.deadlineMs);
  const body = await requestTokenBody(url, headers, signal, options.send);
  const parsed = parseTokenResponse(body);
  log.debug({ realm: realm.host, scope: key.scope, expiresInS: parsed.expiresInS }, 'fetched token');
  const lifetimeMs = parsed.expiresInS * 1000;
  const earlyMs = Math.min(EARLY_REFRESH_MAX_MS, lifetimeMs / 2);
  return { token: parsed.token, expiresAt: startedAt + lifetimeMs - earlyMs };
}

async function requestTokenBody(
  url: URL,
  headers: Readonly<Record<string, string>>,
  signal: AbortSignal,
  send: SendToken,
): Promise<Buffer> {
  try {
    const hop = await followRedirects(url, headers, (hopUrl, hopHeaders) =>
      send(hopUrl, hopHeaders, signal),
    );
    if (hop.status < 200 || hop.status > 299) {
      discard(hop.body);
      throw tokenStatusError(hop.status);
    }
    return await readCapped(hop.body, MAX_TOKEN_RESPONSE_BYTES, () => garbage('response too large'));
  } catch (err) {
    throw err instanceof UpstreamError ? err : networkError(err, 'token request');
  }
}

function tokenStatusError(status: number): UpstreamError {
  if (status === 400 || status === 401 || status === 403) {
    return new UpstreamError('DENIED', `upstream token endpoint refused (${status})`, 'refused');
  }
  if (status === 429) {
    return new UpstreamError('TOOMANYREQUESTS', 'upstream token endpoint rate limit reached', 'rate-limited');
  }
  const reason = status >= 500 ? 'unreachable' : 'invalid';
  return new UpstreamError('UNAVAILABLE', `upstream token endpoint answered ${status}`, reason);
}

/** `token`, else `access_token` (OAuth2 compatibility); `expires_in` in seconds. */
function parseTokenResponse(body: Buffer): { token: string; expiresInS: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    throw garbage('response is not JSON', err);
  }
  if (parsed === null || typeof parsed !== 'object') throw garbage('response is not an object');
  const record = parsed as Record<string, unknown>;
  const token = nonEmptyString(record['token']) ?? nonEmptyString(record['access_token']);
  if (token === undefined || !TOKEN_SYNTAX.test(token)) throw garbage('response has no usable token');
  const expiresIn = record['expires_in'];
  const valid = typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0;
  return { token, expiresInS: valid ? expiresIn : DEFAULT_EXPIRES_IN_S };
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function garbage(what: string, cause?: unknown): UpstreamError {
  const options = cause === undefined ? {} : { cause };
  return new UpstreamError('UNAVAILABLE', `upstream token endpoint ${what}`, 'invalid', options);
}

function realmUrl(realm: string): URL {
  let url: URL;
  try {
    url = new URL(realm);
  } catch (err) {
    // The WHATWG URL parser throws a TypeError (ERR_INVALID_URL) for what it cannot parse.
    if (!(err instanceof TypeError)) throw err;
    throw new UpstreamError('UNAVAILABLE', 'upstream sent an invalid token realm', 'invalid', { cause: err });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UpstreamError('UNAVAILABLE', `upstream sent a ${url.protocol} token realm`, 'invalid');
  }
  return url;
}

export function basicAuthorization(credentials: UpstreamCredentials): string {
  const pair = `${credentials.username}:${credentials.password}`;
  return `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`;
}

/**
 * Whether credentials may go to `realm`: the upstream's own host, or the same
 * registrable domain (auth.docker.io for registry-1.docker.io), as distribution v3.1
 * binds bearer realms (commit f215e513d). The registrable domain is approximated as the
 * last two labels, three under a two-level public suffix such as `co.uk`; IP addresses
 * and single-label names (localhost) must match exactly. Never from https down to http.
 */
export function isInTrustBoundary(realm: URL, upstream: URL): boolean {
  if (upstream.protocol === 'https:' && realm.protocol !== 'https:') return false;
  const realmHost = normaliseHost(realm.hostname);
  const upstreamHost = normaliseHost(upstream.hostname);
  if (realmHost === upstreamHost) return true;
  const realmDomain = registrableDomain(realmHost);
  return realmDomain !== undefined && realmDomain === registrableDomain(upstreamHost);
}

function normaliseHost(hostname: string): string {
  return hostname.toLowerCase().replace(/\.$/, '').replace(/^\[(.*)\]$/, '$1');
}

/** Second-level labels under which ccTLDs hand out names (co.uk, com.au, ne.jp…). */
const SECOND_LEVEL_SUFFIXES: ReadonlySet<string> = new Set(['co', 'com', 'net', 'org', 'gov', 'edu', 'ac', 'ne', 'or', 'go']);

function registrableDomain(host: string): string | undefined {
  if (isIP(host) !== 0) return undefined;
  const labels = host.split('.');
  const tld = labels[labels.length - 1] ?? '';
  const second = labels[labels.length - 2] ?? '';
  const count = tld.length === 2 && SECOND_LEVEL_SUFFIXES.has(second) ? 3 : 2;
  return labels.length >= count ? labels.slice(-count).join('.') : undefined;
}
