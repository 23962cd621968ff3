/**
 * Bearer tokens of one upstream (distribution `docs/content/spec/auth/token.md`),
 * cached per (realm, service, scope) until a little before `issued_at` + `expires_in`
 * (60 s when omitted). Concurrent requests for one key share one fetch; a failed fetch
 * is not cached.
 */
import { LRUCache } from 'lru-cache';
import { getDomain } from 'tldts';
import type { Logger } from '../log.js';
import type { CredentialSource, Credentials } from './credentials.js';
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
  readonly credentials?: CredentialSource | undefined;
  /** Realm origins trusted with the credentials besides the upstream's registrable domain (`auth.realms`). */
  readonly trustedRealms?: readonly string[] | undefined;
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
const MAX_WARNED_REALMS = 64;
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
  // Realm origins warned about; the upstream names them, so the set is bounded.
  const warned = new LRUCache<string, true>({ max: MAX_WARNED_REALMS });
  const warnOnce = (origin: string): boolean => {
    if (warned.has(origin)) return false;
    warned.set(origin, true);
    return true;
  };
  const context: FetchContext = { ...options, warnOnce };

  function findToken(key: TokenKey): string | undefined {
    return cached.get(keyOf(key));
  }

  function getToken(key: TokenKey): Promise<string> {
    const token = findToken(key);
    if (token !== undefined) return Promise.resolve(token);
    const id = keyOf(key);
    const { promise } = fetches.run(id, async () => {
      const fetched = await fetchToken(key, context);
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

interface FetchContext extends TokenCacheOptions {
  /** True the first time an origin is named (one warning per untrusted realm). */
  warnOnce(origin: string): boolean;
}

/**
 * GET realm?service=…&scope=…&scope=…, with Basic credentials only inside the trust
 * boundary. A refusal of the credentials marks them stale and is tried once more with
 * what the source gives next (a rotated file, a re-run helper).
 */
async function fetchToken(key: TokenKey, context: FetchContext): Promise<Cached> {
  const realm = realmUrl(key.realm);
  const url = new URL(realm);
  if (key.service) url.searchParams.append('service', key.service);
  for (const scope of key.scope.split(' ')) if (scope) url.searchParams.append('scope', scope);
  const trusted = context.credentials !== undefined && isInTrustBoundary(realm, context.upstreamUrl, context.trustedRealms);
  if (context.credentials !== undefined && !trusted && context.warnOnce(realm.origin)) {
    const message = 'token realm outside upstream trust boundary; fetching anonymously (list it in auth.realms to send credentials)';
    context.log.warn({ realm: realm.origin }, message);
  }
  const source = trusted ? context.credentials : undefined;
  const first = await source?.get();
  try {
    return await fetchWith(url, key, first, context);
  } catch (err) {
    if (source === undefined || first === undefined || !isRefusal(err)) throw err;
    source.refused(first);
    const next = await source.get();
    if (next.password === first.password && next.username === first.username) throw err;
    return fetchWith(url, key, next, context);
  }
}

async function fetchWith(url: URL, key: TokenKey, credentials: Credentials | undefined, context: FetchContext): Promise<Cached> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (credentials !== undefined) headers['authorization'] = basicAuthorization(credentials);
  const startedAt = context.now();
  const signal = AbortSignal.timeout(context.deadlineMs);
  const body = await requestTokenBody(url, headers, signal, context.send);
  const parsed = parseTokenResponse(body);
  context.log.debug({ realm: url.host, scope: key.scope, expiresInS: parsed.expiresInS }, 'fetched token');
  // token.md: issued_at is when the token was issued; a clock ahead of ours is not trusted.
  const issuedAt = Math.min(startedAt, parsed.issuedAtMs ?? startedAt);
  const lifetimeMs = parsed.expiresInS * 1000;
  const earlyMs = Math.min(EARLY_REFRESH_MAX_MS, lifetimeMs / 2);
  return { token: parsed.token, expiresAt: issuedAt + lifetimeMs - earlyMs };
}

function isRefusal(err: unknown): boolean {
  return err instanceof UpstreamError && err.reason === 'refused';
}

async function requestTokenBody(
  url: URL,
  headers: Readonly<Record<string, string>>,
  signal: AbortSignal,
  send: SendToken,
): Promise<Buffer> {
  try {
    const hop = await followRedirects(url, headers, (hopUrl, hopHeaders) => send(hopUrl, hopHeaders, signal));
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

/** `token`, else `access_token` (OAuth2 compatibility); `expires_in` in seconds; `issued_at` RFC 3339. */
function parseTokenResponse(body: Buffer): { token: string; expiresInS: number; issuedAtMs?: number | undefined } {
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
  const issuedAt = typeof record['issued_at'] === 'string' ? Date.parse(record['issued_at']) : Number.NaN;
  return { token, expiresInS: valid ? expiresIn : DEFAULT_EXPIRES_IN_S, issuedAtMs: Number.isNaN(issuedAt) ? undefined : issuedAt };
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

export function basicAuthorization(credentials: Credentials): string {
  const pair = `${credentials.username}:${credentials.password}`;
  return `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`;
}

/**
 * Whether an upstream's credentials may go to `realm`: same scheme and port (another
 * port of a host is another origin), and the same registrable domain by the Public
 * Suffix List (auth.docker.io for registry-1.docker.io, gitlab.com for
 * registry.gitlab.com), as distribution v3.1 binds bearer realms (commit f215e513d);
 * or a realm origin the operator listed in `auth.realms`. IP addresses and single-label
 * names must match exactly.
 */
export function isInTrustBoundary(realm: URL, upstream: URL, trustedRealms: readonly string[] = []): boolean {
  if (trustedRealms.includes(realm.origin)) return true;
  if (realm.protocol !== upstream.protocol || realm.port !== upstream.port) return false;
  const realmHost = normaliseHost(realm.hostname);
  const upstreamHost = normaliseHost(upstream.hostname);
  if (realmHost === upstreamHost) return true;
  const realmDomain = registrableDomain(realmHost);
  return realmDomain !== undefined && realmDomain === registrableDomain(upstreamHost);
}

function normaliseHost(hostname: string): string {
  return hostname
    .toLowerCase()
    .replace(/\.$/, '')
    .replace(/^\[(.*)\]$/, '$1');
}

/**
 * Registry services that give each tenant a name under their own domain, where the
 * Public Suffix List does not (yet) list that domain: `myreg.azurecr.io` and
 * `attacker.azurecr.io` are different customers, as are `<region>-docker.pkg.dev` hosts
 * serving different projects.
 */
const TENANT_SUFFIXES: readonly string[] = ['azurecr.io', 'azurecr.cn', 'azurecr.us', 'pkg.dev'];

function registrableDomain(host: string): string | undefined {
  const tenant = TENANT_SUFFIXES.find((suffix) => host.endsWith(`.${suffix}`));
  if (tenant !== undefined)
    return (
      host
        .slice(0, -tenant.length - 1)
        .split('.')
        .pop() + `.${tenant}`
    );
  return getDomain(host, { allowPrivateDomains: true }) ?? undefined;
}
