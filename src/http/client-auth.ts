/**
 * Who may use the mirror (config `clientAuth`; off by default for a public cache).
 *
 * The registry API (`/v2`, `/v2/*`) takes HTTP Basic, checked against an htpasswd file
 * of bcrypt entries or, with any user name, a static token as the password (how Docker
 * and containerd send registry credentials), or `Authorization: Bearer <token>`.
 * `/metrics` may want its own bearer token. `/healthz` and `/readyz` stay open for probes.
 *
 * bcrypt costs tens of milliseconds in JavaScript, so it runs on worker threads
 * (password-pool.ts), and a failed Basic login always costs one comparison: an unknown
 * user is compared against a dummy hash of the same cost, so timing does not tell which
 * users exist. Only successes are kept (keyed by a hash: the cache never holds a
 * credential); concurrent checks of one credential share the work. An address with too
 * many recent failures is answered 429 before its credentials cost anything
 * (auth-throttle.ts). Credentials are compared in constant time and never logged,
 * counted or echoed.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { ClientAuthConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import type { AuthFailureReason, Metrics } from '../metrics.js';
import { RegistryError } from '../oci/errors.js';
import { createSingleFlight } from '../single-flight.js';
import { createAuthThrottle } from './auth-throttle.js';
import { createPasswordPool } from './password-pool.js';

/** A login's verdict; `anonymous` (no credentials: the first step of every client) is no failure. */
export type Verdict =
  { readonly ok: true } | { readonly ok: false; readonly reason: AuthFailureReason | 'anonymous'; readonly retryAfterSeconds?: number };

export interface ClientAuth {
  /** The registry API wants credentials. */
  readonly protectsRegistry: boolean;
  /** `/metrics` wants its token. */
  readonly protectsMetrics: boolean;
  /** Checks the credentials a request from `address` sent. */
  allowsRegistry(authorization: string | undefined, address: string): Promise<Verdict>;
  allowsMetrics(authorization: string | undefined): boolean;
  /** The `WWW-Authenticate` of a 401 from the registry API. */
  readonly challenge: string;
  /** Stops the worker threads. */
  close(): Promise<void>;
}

export interface ClientAuthOptions {
  readonly now?: () => number;
  /** The bcrypt comparison; worker threads unless a test counts the calls. */
  readonly compare?: (password: string, hash: string) => Promise<boolean>;
}

const SUCCESS_TTL_MS = 5 * 60_000;
const MAX_SUCCESSES = 4096;
const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
const OK: Verdict = { ok: true };

/** Reads the htpasswd file (if any) and builds the checks; throws naming the problem, never a secret. */
export async function loadClientAuth(config: ClientAuthConfig | undefined, options: ClientAuthOptions = {}): Promise<ClientAuth> {
  const now = options.now ?? Date.now;
  const users = config?.htpasswdFile === undefined ? new Map<string, string>() : await readHtpasswd(config.htpasswdFile);
  const tokens = (config?.tokens ?? []).map(fingerprint);
  const metricsToken = config?.metricsToken === undefined ? undefined : fingerprint(config.metricsToken);
  const pool = options.compare === undefined && users.size > 0 ? createPasswordPool() : undefined;
  const compare = options.compare ?? ((password: string, hash: string) => (pool ? pool.compare(password, hash) : Promise.resolve(false)));
  const dummy = dummyHash(users);
  // ttlResolution 0: ask `now` on every lookup, no cached reading.
  const successes = new LRUCache<string, true>({ max: MAX_SUCCESSES, ttl: SUCCESS_TTL_MS, ttlResolution: 0, perf: { now } });
  const throttle = createAuthThrottle(config?.failedLoginsPerMinute ?? 10, now);
  const verifications = createSingleFlight<Verdict>();
  const isToken = (candidate: string): boolean => {
    const print = fingerprint(candidate);
    // Every token is compared, so the time taken says nothing about which one came close.
    return tokens.reduce((found, token) => timingSafeEqual(token, print) || found, false);
  };

  async function verifyBasic(value: string): Promise<Verdict> {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return { ok: false, reason: 'malformed' };
    const password = decoded.slice(colon + 1);
    if (isToken(password)) return OK;
    const user = decoded.slice(0, colon);
    // An unknown user costs what a known one does: one comparison, against a hash that never matches.
    const hash = users.get(user) ?? dummy;
    if (hash === undefined) return { ok: false, reason: 'unknown_user' }; // no htpasswd: no users to tell apart
    if ((await compare(password, hash)) && users.has(user)) return OK;
    return { ok: false, reason: users.has(user) ? 'bad_password' : 'unknown_user' };
  }

  function verify(authorization: string): Promise<Verdict> {
    const [scheme = '', value = ''] = authorization.trim().split(/\s+/, 2);
    if (scheme.toLowerCase() === 'bearer') return Promise.resolve(isToken(value) ? OK : { ok: false, reason: 'bad_password' });
    if (scheme.toLowerCase() !== 'basic') return Promise.resolve({ ok: false, reason: 'malformed' });
    return verifyBasic(value);
  }

  async function allowsRegistry(authorization: string | undefined, address: string): Promise<Verdict> {
    if (authorization === undefined || authorization === '') return { ok: false, reason: 'anonymous' };
    const key = fingerprint(authorization).toString('hex');
    if (successes.get(key) === true) return OK;
    const retryAfterSeconds = throttle.retryAfter(address);
    if (retryAfterSeconds > 0) return { ok: false, reason: 'throttled', retryAfterSeconds };
    const settle = throttle.begin(address);
    const verdict = await verifications
      .run(key, async () => {
        const found = await verify(authorization);
        if (found.ok) successes.set(key, true);
        return found;
      })
      .promise.catch((err: unknown) => {
        settle(false);
        throw err;
      });
    settle(!verdict.ok);
    return verdict;
  }

  return {
    protectsRegistry: users.size > 0 || tokens.length > 0,
    protectsMetrics: metricsToken !== undefined,
    allowsRegistry,
    allowsMetrics(authorization) {
      const [scheme = '', value = ''] = (authorization ?? '').trim().split(/\s+/, 2);
      return metricsToken !== undefined && scheme.toLowerCase() === 'bearer' && timingSafeEqual(metricsToken, fingerprint(value));
    },
    challenge: `Basic realm="${config?.realm ?? 'oci-mirror'}", charset="UTF-8"`,
    close: async () => pool?.close(),
  };
}

/**
 * Asks for credentials before any route runs. `onRequest` runs after routing, so the
 * route pattern (not the raw URL, which may be absolute-form or `//v2/…`) decides.
 */
export function registerClientAuth(app: FastifyInstance, auth: ClientAuth, metrics: Metrics): void {
  app.addHook('onClose', () => auth.close());
  if (!auth.protectsRegistry && !auth.protectsMetrics) return;
  app.addHook('onRequest', async (request: FastifyRequest) => {
    const route = request.routeOptions.url;
    const authorization = request.headers.authorization;
    if (route === '/metrics' && auth.protectsMetrics && !auth.allowsMetrics(authorization)) {
      throw new RegistryError('UNAUTHORIZED', 'a metrics token is required', { headers: { 'www-authenticate': 'Bearer realm="metrics"' } });
    }
    if ((route !== '/v2' && route !== '/v2/*') || !auth.protectsRegistry) return;
    const verdict = await auth.allowsRegistry(authorization, request.ip);
    if (verdict.ok) return;
    if (verdict.reason !== 'anonymous') metrics.authFailures.inc({ reason: verdict.reason });
    if (verdict.reason === 'throttled') {
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins from this address', {
        headers: { 'retry-after': String(verdict.retryAfterSeconds ?? 60) },
      });
    }
    throw new RegistryError('UNAUTHORIZED', 'authentication required', { headers: { 'www-authenticate': auth.challenge } });
  });
}

/**
 * A mirror pulls with its own upstream credentials, whoever asks: with anonymous clients
 * it hands the private images those credentials can read to anyone who reaches it.
 */
export function warnIfAnonymous(auth: ClientAuth, upstreamsWithCredentials: readonly string[], log: Logger): void {
  if (auth.protectsRegistry || upstreamsWithCredentials.length === 0) return;
  log.warn(
    { upstreams: upstreamsWithCredentials },
    'upstreams have credentials but clients are anonymous: anyone who reaches the mirror can pull what those credentials can; set clientAuth',
  );
}

async function readHtpasswd(file: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`clientAuth.htpasswdFile: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1).trim();
    const where = `clientAuth.htpasswdFile: ${file} line ${i + 1}`;
    if (colon <= 0) throw new Error(`${where}: expected user:hash`);
    if (!BCRYPT.test(hash)) throw new Error(`${where}: only bcrypt entries are accepted (htpasswd -B)`);
    if (users.has(user)) throw new Error(`${where}: user ${JSON.stringify(user)} appears twice`);
    users.set(user, hash);
  });
  if (users.size === 0) throw new Error(`clientAuth.htpasswdFile: ${file} has no users`);
  return users;
}

/**
 * A well-formed bcrypt hash no password matches, at the highest cost in the file, for
 * unknown users. bcrypt's cost is in the hash, so comparing against it costs as much.
 */
function dummyHash(users: ReadonlyMap<string, string>): string | undefined {
  const costs = [...users.values()].map((hash) => hash.slice(4, 6));
  if (costs.length === 0) return undefined;
  return `$2b$${costs.sort().at(-1)}$${'.'.repeat(53)}`;
}

function fingerprint(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
