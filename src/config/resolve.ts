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
import type { ConfigFile, TimeoutsFile, UpstreamFile } from './file-types.js';
import { getConfigSchema } from './schema.js';
import type { Config, UpstreamConfig, UpstreamCredentials, UpstreamPolicy, UpstreamTimeouts } from './types.js';
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
    listen: file.listen,
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
type PolicyFile = Omit<Partial<ConfigFile['upstreamDefaults']>, 'timeouts'> & { readonly timeouts?: TimeoutsFile };

function resolvePolicy(at: Problems, file: PolicyFile, path: string, base: UpstreamPolicy | undefined): UpstreamPolicy {
  const pick = <K extends keyof PolicyFile, T>(key: K, read: (value: NonNullable<(typeof file)[K]>, at: string) => T, fallback: T | undefined): T => {
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
    minBytesPerSecond: pick('minSpeed', (v, p) => toBytes(at, v, p), base?.minBytesPerSecond),
    retries: pick('retries', (v) => v, base?.retries),
    downForMs: pick('downFor', (v, p) => toMs(at, v, p, 0), base?.downForMs),
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

function resolveUpstreams(at: Problems, upstreams: ConfigFile['upstreams'], defaults: UpstreamPolicy): Record<string, UpstreamConfig> {
  const entries = Object.entries(upstreams).map(([name, file]) => [name, resolveUpstream(at, name, file, defaults)] as const);
  checkAliases(at, entries.map(([, upstream]) => upstream));
  return Object.fromEntries(entries);
}

function resolveUpstream(at: Problems, name: string, file: UpstreamFile, defaults: UpstreamPolicy): UpstreamConfig {
  const path = joinPath('upstreams', name);
  // Aliases are hosts as clients write them, so matched lowercased (the schema's keys are lowercase).
  const hostPattern = getConfigSchema().pattern('host');
  const aliases = file.aliases.map((alias, i) => {
    const host = alias.toLowerCase();
    if (!hostPattern.test(host)) at.report(`${path}.aliases[${i}]`, `expected a registry host like "index.docker.io", got ${describeValue(alias)}`);
    return host;
  });
  const credentials = file.auth === undefined ? undefined : resolveAuth(at, file.auth, joinPath(path, 'auth'));
  const repositories = file.repositories === undefined ? undefined : resolveRepositoryRules(at, file.repositories, joinPath(path, 'repositories'));
  return {
    name,
    url: resolveOrigin(at, file.url, joinPath(path, 'url')),
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
  const bare = url !== undefined && url.pathname === '/' && url.search === '' && url.hash === '' && url.username === '' && url.password === '';
  if (bare && (url.protocol === 'http:' || url.protocol === 'https:')) return url.origin;
  at.report(path, `expected an http:// or https:// URL with no path, query or credentials, got ${describeValue(text)}`);
  return '';
}

function resolveAuth(at: Problems, auth: NonNullable<UpstreamFile['auth']>, path: string): UpstreamCredentials {
  const password = at.env[auth.passwordEnv] ?? '';
  if (password === '') at.report(`${path}.passwordEnv`, `environment variable ${auth.passwordEnv} is not set or empty`);
  return { username: auth.username, password };
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
