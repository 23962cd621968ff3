/**
 * Who may use the mirror (config `clientAuth`; off by default for a public cache).
 *
 * The registry API (`/v2`, `/v2/*`) takes HTTP Basic, checked against an htpasswd file
 * of bcrypt entries or, with any user name, a static token as the password (how Docker
 * and containerd send registry credentials), or `Authorization: Bearer <token>`.
 * `/metrics` may want its own bearer token. `/healthz` and `/readyz` stay open for probes.
 *
 * bcrypt costs tens of milliseconds in JavaScript, so each distinct Authorization value
 * is verified once (concurrent requests share the verification) and its verdict kept
 * for a while, keyed by a hash: the cache never holds a credential. Credentials are
 * compared in constant time and never logged, counted or echoed.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { ClientAuthConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { RegistryError } from '../oci/errors.js';
import { createSingleFlight } from '../single-flight.js';

export interface ClientAuth {
  /** The registry API wants credentials. */
  readonly protectsRegistry: boolean;
  /** `/metrics` wants its token. */
  readonly protectsMetrics: boolean;
  allowsRegistry(authorization: string | undefined): Promise<boolean>;
  allowsMetrics(authorization: string | undefined): boolean;
  /** The `WWW-Authenticate` of a 401 from the registry API. */
  readonly challenge: string;
}

const VERDICT_TTL_MS = 5 * 60_000;
const MAX_VERDICTS = 4096;
const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

/** Reads the htpasswd file (if any) and builds the checks; throws naming the problem, never a secret. */
export async function loadClientAuth(config: ClientAuthConfig | undefined, now: () => number = Date.now): Promise<ClientAuth> {
  const users = config?.htpasswdFile === undefined ? new Map<string, string>() : await readHtpasswd(config.htpasswdFile);
  const tokens = (config?.tokens ?? []).map(fingerprint);
  const metricsToken = config?.metricsToken === undefined ? undefined : fingerprint(config.metricsToken);
  // ttlResolution 0: ask `now` on every lookup, no cached reading.
  const verdicts = new LRUCache<string, boolean>({ max: MAX_VERDICTS, ttl: VERDICT_TTL_MS, ttlResolution: 0, perf: { now } });
  const verifications = createSingleFlight<boolean>();
  const isToken = (candidate: string): boolean => {
    const print = fingerprint(candidate);
    // Every token is compared, so the time taken says nothing about which one came close.
    return tokens.reduce((found, token) => timingSafeEqual(token, print) || found, false);
  };

  async function verify(authorization: string): Promise<boolean> {
    const [scheme = '', value = ''] = authorization.trim().split(/\s+/, 2);
    if (scheme.toLowerCase() === 'bearer') return isToken(value);
    if (scheme.toLowerCase() !== 'basic') return false;
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const password = decoded.slice(colon + 1);
    const hash = users.get(decoded.slice(0, colon));
    if (hash !== undefined && (await bcrypt.compare(password, hash))) return true;
    return isToken(password);
  }

  function allowsRegistry(authorization: string | undefined): Promise<boolean> {
    if (authorization === undefined || authorization === '') return Promise.resolve(false);
    const key = fingerprint(authorization).toString('hex');
    const known = verdicts.get(key);
    if (known !== undefined) return Promise.resolve(known);
    const { promise } = verifications.run(key, async () => {
      const ok = await verify(authorization);
      verdicts.set(key, ok);
      return ok;
    });
    return promise;
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
  };
}

/**
 * Asks for credentials before any route runs. `onRequest` runs after routing, so the
 * route pattern (not the raw URL, which may be absolute-form or `//v2/…`) decides.
 */
export function registerClientAuth(app: FastifyInstance, auth: ClientAuth): void {
  if (!auth.protectsRegistry && !auth.protectsMetrics) return;
  app.addHook('onRequest', async (request: FastifyRequest) => {
    const route = request.routeOptions.url;
    const authorization = request.headers.authorization;
    if (route === '/metrics' && auth.protectsMetrics && !auth.allowsMetrics(authorization)) {
      throw new RegistryError('UNAUTHORIZED', 'a metrics token is required', { headers: { 'www-authenticate': 'Bearer realm="metrics"' } });
    }
    if ((route === '/v2' || route === '/v2/*') && auth.protectsRegistry && !(await auth.allowsRegistry(authorization))) {
      throw new RegistryError('UNAUTHORIZED', 'authentication required', { headers: { 'www-authenticate': auth.challenge } });
    }
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

function fingerprint(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
