/**
 * The semantic pass over a file the schema accepted (defaults filled in): human units
 * become milliseconds and bytes, environment variables are read, upstream policy falls
 * back to `upstreamDefaults`, and the rules that span keys are checked (aliases unique,
 * `defaultUpstream` configured, pins routable). Problems are collected, not thrown.
 */
import { RegistryError } from '../oci/errors.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { createUpstreamTable } from '../oci/upstream-table.js';
import { resolveClientAuth, resolveRepositoryRules, type Env, type Problems } from './access.js';
import { describeValue, joinPath, type ConfigProblem } from './errors.js';
import type { ConfigFile, ResumeFile, TimeoutsFile, UpstreamFile } from './file-types.js';
import { getConfigSchema } from './schema.js';
import type {
  Config,
  EnvProxyConfig,
  ProxyConfig,
  ResumePolicy,
  UpstreamConfig,
  UpstreamCredentials,
  UpstreamPolicy,
  UpstreamTimeouts,
} from './types.js';
import { parseDuration, parseSize } from './units.js';

export function resolveConfig(file: ConfigFile, env: Env): { readonly config: Config } | { readonly problems: readonly ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const at: Problems = { env, report: (path, message) => problems.push({ path, message }) };
  const defaults = resolvePolicy(at, file.upstreamDefaults, 'upstreamDefaults', undefined);
  const upstreams = resolveUpstreams(at, file.upstreams, defaults);
  if (!Object.hasOwn(upstreams, file.defaultUpstream)) {
    const known = Object.keys(upstreams).join(', ') || 'none';
    at.report('defaultUpstream', `${JSON.stringify(file.defaultUpstream)} is not a key of upstreams (${known})`);
  }
  const clientAuth = file.clientAuth === undefined ? undefined : resolveClientAuth(at, file.clientAuth);
  const pins = resolvePins(at, file.store.pins, { upstreams, defaultUpstream: file.defaultUpstream });
  const config: Config = {
    listen: resolveListen(at, file.listen),
    store: {
      path: file.store.path,
      maxSizeBytes: toBytes(at, file.store.maxSize, 'store.maxSize'),
      idleTtlMs: toMs(at, file.store.idleTtl, 'store.idleTtl', 1),
      pins,
    },
    defaultUpstream: file.defaultUpstream,
    upstreams,
    offline: file.offline,
    front: file.front,
    ...(clientAuth === undefined ? {} : { clientAuth }),
    log: file.log,
  };
  return problems.length > 0 ? { problems } : { config };
}

function resolveListen(at: Problems, listen: ConfigFile['listen']): Config['listen'] {
  const { drainTimeout, headersTimeout, ...rest } = listen;
  return {
    ...rest,
    drainTimeoutMs: toMs(at, drainTimeout, 'listen.drainTimeout', 0),
    headersTimeoutMs: toMs(at, headersTimeout, 'listen.headersTimeout', 1),
  };
}

/** Units are checked by the schema's patterns; what is left is a value too large, or rounded to 0. */
function toMs(at: Problems, text: string, path: string, minMs: number): number {
  return convert(at, () => parseDuration(text), path, minMs, `a duration greater than zero, got ${describeValue(text)}`);
}

function toBytes(at: Problems, text: string, path: string): number {
  return convert(at, () => parseSize(text), path, 1, `a size greater than zero, got ${describeValue(text)}`);
}

function convert(at: Problems, parse: () => number, path: string, min: number, tooSmall: string): number {
  let value: number;
  try {
    value = parse();
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    at.report(path, err.message);
    return 0;
  }
  if (value < min) at.report(path, `expected ${tooSmall}`);
  return value;
}

/** `upstreamDefaults` has every key (the schema's defaults); an upstream any of them. */
type PolicyFile = Omit<Partial<ConfigFile['upstreamDefaults']>, 'timeouts' | 'resume'> & {
  readonly timeouts?: TimeoutsFile;
  readonly resume?: ResumeFile;
};

function resolvePolicy(at: Problems, file: PolicyFile, path: string, base: UpstreamPolicy | undefined): UpstreamPolicy {
  const pick = <K extends keyof PolicyFile, T>(
    key: K,
    read: (value: NonNullable<(typeof file)[K]>, at: string) => T,
    fallback: T | undefined,
  ): T => {
    const value = file[key];
    if (value === undefined) {
      if (fallback === undefined) throw new Error(`upstreamDefaults.${key} has no default in the schema`);
      return fallback;
    }
    return read(value, joinPath(path, key));
  };
  return {
    freshForMs: pick('freshFor', (v, p) => toMs(at, v, p, 0), base?.freshForMs),
    maxStaleMs: pick('maxStale', (v, p) => toMs(at, v, p, 0), base?.maxStaleMs),
    timeouts: pick('timeouts', (v, p) => resolveTimeouts(at, v, p, base?.timeouts), base?.timeouts),
    resume: pick('resume', (v, p) => resolveResume(at, v, p, base?.resume), base?.resume),
    minBytesPerSecond: pick('minSpeed', (v, p) => toBytes(at, v, p), base?.minBytesPerSecond),
    retries: pick('retries', (v) => v, base?.retries),
    downForMs: pick('downFor', (v, p) => toMs(at, v, p, 0), base?.downForMs),
    throttleMs: pick('throttle', (v, p) => toMs(at, v, p, 1), base?.throttleMs),
    maxConnections: pick('maxConnections', (v) => v, base?.maxConnections),
  };
}

function resolveTimeouts(at: Problems, file: TimeoutsFile, path: string, base: UpstreamTimeouts | undefined): UpstreamTimeouts {
  const read = (key: keyof typeof file, fallback: number | undefined): number => {
    const value = file[key];
    return value === undefined ? (fallback ?? 0) : toMs(at, value, joinPath(path, key), 1);
  };
  return { connectMs: read('connect', base?.connectMs), headersMs: read('headers', base?.headersMs), bodyMs: read('body', base?.bodyMs) };
}

function resolveResume(at: Problems, file: ResumeFile, path: string, base: ResumePolicy | undefined): ResumePolicy {
  return {
    maxResumes: file.maxResumes ?? base?.maxResumes ?? 0,
    backoffMs: file.backoff === undefined ? (base?.backoffMs ?? 0) : toMs(at, file.backoff, joinPath(path, 'backoff'), 0),
    withinMs: file.within === undefined ? (base?.withinMs ?? 0) : toMs(at, file.within, joinPath(path, 'within'), 1),
  };
}

function resolveUpstreams(at: Problems, upstreams: ConfigFile['upstreams'], defaults: UpstreamPolicy): Record<string, UpstreamConfig> {
  const entries = Object.entries(upstreams).map(([name, file]) => [name, resolveUpstream(at, name, file, defaults)] as const);
  checkAliases(
    at,
    entries.map(([, upstream]) => upstream),
  );
  return Object.fromEntries(entries);
}

function resolveUpstream(at: Problems, name: string, file: UpstreamFile, defaults: UpstreamPolicy): UpstreamConfig {
  const path = joinPath('upstreams', name);
  // Aliases are hosts as clients write them, so matched lowercased (the schema's keys are lowercase).
  const hostPattern = getConfigSchema().pattern('host');
  const aliases = file.aliases.map((alias, i) => {
    const host = alias.toLowerCase();
    if (!hostPattern.test(host))
      at.report(`${path}.aliases[${i}]`, `expected a registry host like "index.docker.io", got ${describeValue(alias)}`);
    return host;
  });
  const credentials = file.auth === undefined ? undefined : resolveAuth(at, file.auth, joinPath(path, 'auth'));
  const repositories =
    file.repositories === undefined ? undefined : resolveRepositoryRules(at, file.repositories, joinPath(path, 'repositories'));
  const proxy = file.proxy === undefined ? undefined : resolveProxy(at, file.proxy, joinPath(path, 'proxy'));
  const envProxy = proxy === undefined ? resolveEnvProxy(at.env) : undefined;
  return {
    name,
    url: resolveOrigin(at, file.url, joinPath(path, 'url')),
    urls: file.urls.map((url, i) => resolveOrigin(at, url, `${joinPath(path, 'urls')}[${i}]`)),
    ...(proxy === undefined ? {} : { proxy }),
    ...(envProxy === undefined ? {} : { envProxy }),
    ...(file.tls === undefined ? {} : { tls: file.tls }),
    // An alias equal to the upstream's own key says nothing; repeats are dropped too.
    aliases: [...new Set(aliases.filter((alias) => alias !== name))],
    library: file.library,
    ...(credentials === undefined ? {} : { credentials }),
    ...(repositories === undefined ? {} : { repositories }),
    ...(file.allowLocalRedirects === undefined ? {} : { allowLocalRedirects: file.allowLocalRedirects }),
    ...resolvePolicy(at, file, path, defaults),
  };
}

/** `https://host[:port]`: an http(s) URL with nothing after the host. */
function resolveOrigin(at: Problems, text: string, path: string): string {
  const url = URL.canParse(text) ? new URL(text) : undefined;
  const bare =
    url !== undefined && url.pathname === '/' && url.search === '' && url.hash === '' && url.username === '' && url.password === '';
  if (bare && (url.protocol === 'http:' || url.protocol === 'https:')) return url.origin;
  at.report(path, `expected an http:// or https:// URL with no path, query or credentials, got ${describeValue(text)}`);
  return '';
}

/** Exactly one of passwordEnv, passwordFile, helper; a user name unless the helper gives one. */
function resolveAuth(at: Problems, auth: NonNullable<UpstreamFile['auth']>, path: string): UpstreamCredentials {
  const sources = (['passwordEnv', 'passwordFile', 'helper'] as const).filter((key) => auth[key] !== undefined);
  if (sources.length !== 1) {
    const found = sources.length === 0 ? 'none' : sources.join(' and ');
    at.report(path, `expected exactly one of passwordEnv, passwordFile or helper, got ${found}`);
  }
  // Compared with a realm URL's origin: `https://GitLab.example.com:443` is `https://gitlab.example.com`.
  const realms = auth.realms.map((realm) => (URL.canParse(realm) ? new URL(realm).origin : realm));
  const common = { username: auth.username ?? '', ...(realms.length === 0 ? {} : { realms }) };
  if (auth.helper !== undefined) {
    const helperTtlMs = toMs(at, auth.helperTtl, `${path}.helperTtl`, 1);
    return { ...common, helper: auth.helper, helperTtlMs };
  }
  if (auth.passwordFile !== undefined) {
    return { ...common, passwordFile: auth.passwordFile };
  }
  const password = auth.passwordEnv === undefined ? '' : (at.env[auth.passwordEnv] ?? '');
  if (auth.passwordEnv !== undefined && password === '')
    at.report(`${path}.passwordEnv`, `environment variable ${auth.passwordEnv} is not set or empty`);
  return { ...common, password };
}

function resolveProxy(at: Problems, proxy: NonNullable<UpstreamFile['proxy']>, path: string): ProxyConfig {
  const url = resolveOrigin(at, proxy.url, joinPath(path, 'url'));
  if (proxy.usernameEnv === undefined || proxy.passwordEnv === undefined) return { url };
  const read = (name: string, key: string): string => {
    const value = at.env[name] ?? '';
    if (value === '') at.report(joinPath(path, key), `environment variable ${name} is not set or empty`);
    return value;
  };
  return { url, username: read(proxy.usernameEnv, 'usernameEnv'), password: read(proxy.passwordEnv, 'passwordEnv') };
}

/** The conventional proxy variables, lower case first (curl's order); undefined when none is set. */
function resolveEnvProxy(env: Env): EnvProxyConfig | undefined {
  const read = (name: string): string | undefined => env[name.toLowerCase()] || env[name] || undefined;
  const httpProxy = read('HTTP_PROXY');
  const httpsProxy = read('HTTPS_PROXY');
  const noProxy = read('NO_PROXY');
  if (httpProxy === undefined && httpsProxy === undefined) return undefined;
  return {
    ...(httpProxy === undefined ? {} : { httpProxy }),
    ...(httpsProxy === undefined ? {} : { httpsProxy }),
    ...(noProxy === undefined ? {} : { noProxy }),
  };
}

/** An alias must mean one upstream: it may not repeat another upstream's key or alias. */
function checkAliases(at: Problems, upstreams: readonly UpstreamConfig[]): void {
  const owners = new Map<string, string>(upstreams.map((u) => [u.name, `the key of upstream "${u.name}"`]));
  for (const upstream of upstreams) {
    for (const alias of upstream.aliases) {
      const owner = owners.get(alias);
      if (owner !== undefined) at.report(`${joinPath('upstreams', upstream.name)}.aliases`, `alias "${alias}" is already ${owner}`);
      else owners.set(alias, `an alias of upstream "${upstream.name}"`);
    }
  }
}

/** Pins name images the way users write them; the upstream must be configured. */
function resolvePins(at: Problems, pins: readonly string[], upstreams: Pick<Config, 'upstreams' | 'defaultUpstream'>): ImageRef[] {
  const table = createUpstreamTable(upstreams);
  return pins.flatMap((text, i) => {
    try {
      return [parseImageRef(text, table)];
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      at.report(`store.pins[${i}]`, `${JSON.stringify(text)} is not an image reference here: ${err.message}`);
      return [];
    }
  });
}
