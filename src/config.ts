/**
 * `mirror.config.json` → parse once → merge onto the defaults → validate (every problem
 * collected with its JSON path; unknown keys are errors) → deep-freeze. The file speaks
 * human units (`"5m"`, `"50GiB"`); the `Config` it yields speaks milliseconds and bytes.
 * Secrets travel by indirection: `auth.passwordEnv` names an environment variable.
 * Relative paths (`store.path`, TLS files) are kept as written: relative to the working
 * directory, not to the config file.
 */
import { readFile } from 'node:fs/promises';
import type { Config, UpstreamConfig, UpstreamCredentials, UpstreamTimeouts } from './config-types.js';
import {
  ConfigError,
  createReader,
  describeValue,
  isPlainObject,
  joinPath,
  type ConfigProblem,
  type Env,
  type Obj,
  type Reader,
} from './config-reader.js';
import {
  CLIENT_AUTH_KEYS,
  readClientAuth,
  readRepositoryRules,
  REPOSITORIES_KEYS,
  type ClientAuthFile,
  type RepositoriesFile,
} from './config-access.js';
import type { LogLevel } from './log.js';
import { parseImageRef, type ImageRef } from './oci/image-ref.js';
import { createRepositoryFilter } from './oci/repository-pattern.js';
import type { UpstreamTable } from './oci/path.js';

export type { Config } from './config-types.js';
export { ConfigError, type ConfigProblem, type Env } from './config-reader.js';

export interface TimeoutsFile {
  readonly connect: string;
  readonly headers: string;
  readonly body: string;
}

/** Per-upstream policy; `upstreamDefaults` holds all of it, an upstream any part. */
export interface UpstreamPolicyFile {
  readonly freshFor: string;
  readonly maxStale: string;
  readonly timeouts: TimeoutsFile;
  readonly minSpeed: string;
  readonly retries: number;
  readonly downFor: string;
  readonly maxConnections: number;
}

export interface UpstreamFile extends Partial<Omit<UpstreamPolicyFile, 'timeouts'>> {
  readonly url: string;
  readonly aliases?: readonly string[];
  readonly library?: boolean;
  readonly auth?: { readonly username: string; readonly passwordEnv: string };
  readonly repositories?: RepositoriesFile;
  readonly allowLocalRedirects?: boolean;
  readonly timeouts?: Partial<TimeoutsFile>;
}

/** The config file's shape, in human units. */
export interface ConfigFile {
  readonly $schema?: string;
  readonly listen: { readonly host: string; readonly port: number; readonly tls?: { readonly certFile: string; readonly keyFile: string } };
  readonly store: { readonly path: string; readonly maxSize: string; readonly idleTtl: string; readonly pins: readonly string[] };
  readonly defaultUpstream: string;
  readonly upstreamDefaults: UpstreamPolicyFile;
  readonly upstreams: Readonly<Record<string, UpstreamFile>>;
  readonly offline: boolean;
  readonly clientAuth?: ClientAuthFile;
  readonly log: { readonly level: LogLevel };
}

/** The built-in configuration in file form; `mirror.config.json` ships exactly this. */
export const DEFAULT_CONFIG_FILE: ConfigFile = deepFreeze({
  listen: { host: '0.0.0.0', port: 5000 },
  store: { path: './data', maxSize: '50GiB', idleTtl: '30d', pins: [] },
  defaultUpstream: 'docker.io',
  upstreamDefaults: {
    freshFor: '5m',
    maxStale: '7d',
    timeouts: { connect: '5s', headers: '30s', body: '30s' },
    minSpeed: '1KiB',
    retries: 2,
    downFor: '15s',
    maxConnections: 32,
  },
  upstreams: {
    'docker.io': { url: 'https://registry-1.docker.io', aliases: ['index.docker.io', 'registry-1.docker.io'], library: true },
    'ghcr.io': { url: 'https://ghcr.io' },
    'quay.io': { url: 'https://quay.io' },
    'registry.k8s.io': { url: 'https://registry.k8s.io' },
    'gcr.io': { url: 'https://gcr.io' },
  },
  offline: false,
  log: { level: 'info' },
});

const POLICY_KEYS = ['freshFor', 'maxStale', 'timeouts', 'minSpeed', 'retries', 'downFor', 'maxConnections'] as const;

/** Every key the file may hold, per object. The JSON Schema must list exactly these (a test checks). */
export const CONFIG_FILE_KEYS = {
  root: ['$schema', 'listen', 'store', 'defaultUpstream', 'upstreamDefaults', 'upstreams', 'offline', 'clientAuth', 'log'],
  listen: ['host', 'port', 'tls'],
  tls: ['certFile', 'keyFile'],
  store: ['path', 'maxSize', 'idleTtl', 'pins'],
  upstreamDefaults: POLICY_KEYS,
  timeouts: ['connect', 'headers', 'body'],
  upstream: ['url', 'aliases', 'library', 'auth', 'repositories', 'allowLocalRedirects', ...POLICY_KEYS],
  auth: ['username', 'passwordEnv'],
  repositories: REPOSITORIES_KEYS,
  clientAuth: CLIENT_AUTH_KEYS,
  log: ['level'],
} as const;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LogLevel[];
/** A registry host as Docker names it: lowercase DNS labels, optional `:port`. */
const HOST_PATTERN = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::\d{1,5})?$/;
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface ConfigOverrides {
  readonly port?: number;
  readonly offline?: boolean;
}

export interface LoadConfigOptions {
  /** The config file; none means the built-in defaults. */
  readonly file?: string;
  readonly env: Env;
  /** Command-line flags, applied over the file. */
  readonly overrides?: ConfigOverrides;
}

/** Validates a parsed config file (merged onto the defaults) and returns the frozen `Config`. */
export function parseConfig(input: unknown, env: Env): Config {
  return deepFreeze(buildConfig(input, env, undefined));
}

/** Reads, validates and freezes the configuration; any problem throws a `ConfigError`. */
export async function loadConfig(options: LoadConfigOptions): Promise<Config> {
  const input = options.file === undefined ? {} : await readConfigFile(options.file);
  const config = buildConfig(input, options.env, options.file);
  return deepFreeze(applyOverrides(config, options.overrides ?? {}));
}

async function readConfigFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError([{ path: file, message: `cannot read the file (${code})` }]);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ConfigError([{ path: file, message: describeJsonError(text, err) }]);
  }
}

/** V8 reports a character offset (sometimes); people want a line and column. */
function describeJsonError(text: string, err: unknown): string {
  const reason = err instanceof Error ? err.message : String(err);
  const position = reason.includes('end of JSON input') ? String(text.length) : /at position (\d+)/.exec(reason)?.[1];
  if (position === undefined) return `invalid JSON: ${reason}`;
  const before = text.slice(0, Number(position)).split('\n');
  const column = (before.at(-1)?.length ?? 0) + 1;
  return `invalid JSON at line ${before.length}, column ${column}: ${reason}`;
}

function applyOverrides(config: Config, overrides: ConfigOverrides): Config {
  const { port, offline } = overrides;
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new ConfigError([{ path: '--port', message: `expected an integer from 0 to 65535, got ${port}` }]);
  }
  return {
    ...config,
    listen: port === undefined ? config.listen : { ...config.listen, port },
    offline: offline ?? config.offline,
  };
}

function buildConfig(input: unknown, env: Env, source: string | undefined): Config {
  const problems: ConfigProblem[] = [];
  const config = readConfig(createReader(problems, env), mergeOntoDefaults(input));
  if (problems.length > 0) throw new ConfigError(problems, source);
  return config;
}

/**
 * Sections merge key by key onto the defaults (nested objects too), except `upstreams`:
 * a file that names upstreams names all of them. Entries are copied with
 * `Object.fromEntries` so a `__proto__` key stays a plain (and unknown) key.
 */
function mergeOntoDefaults(input: unknown): unknown {
  if (!isPlainObject(input)) return input;
  return Object.fromEntries([
    ...Object.entries(DEFAULT_CONFIG_FILE).filter(([key]) => !Object.hasOwn(input, key)),
    ...Object.entries(input).map(([key, value]) => {
      const base = key === 'upstreams' ? undefined : (DEFAULT_CONFIG_FILE as unknown as Obj)[key];
      return [key, deepMerge(base, value)] as const;
    }),
  ]);
}

function deepMerge(base: unknown, value: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(value)) return value;
  return Object.fromEntries([
    ...Object.entries(base).filter(([key]) => !Object.hasOwn(value, key)),
    ...Object.entries(value).map(([key, v]) => [key, deepMerge(base[key], v)] as const),
  ]);
}

type Policy = Omit<UpstreamConfig, 'name' | 'url' | 'aliases' | 'library' | 'credentials' | 'repositories' | 'allowLocalRedirects'>;

/** Reads in file order, so problems are listed in the order a reader meets them. */
function readConfig(rd: Reader, raw: unknown): Config {
  const root = rd.object(raw, '', CONFIG_FILE_KEYS.root);
  if (root.$schema !== undefined) rd.string(root.$schema, '$schema');
  const listen = readListen(rd, root.listen);
  const store = readStore(rd, root.store);
  const defaultUpstream = rd.string(root.defaultUpstream, 'defaultUpstream');
  const defaultsFile = rd.object(root.upstreamDefaults, 'upstreamDefaults', CONFIG_FILE_KEYS.upstreamDefaults);
  const defaults = readPolicy(rd, defaultsFile, 'upstreamDefaults', undefined);
  const upstreams = readUpstreams(rd, root.upstreams, defaults);
  if (defaultUpstream !== '' && isPlainObject(root.upstreams) && !Object.hasOwn(upstreams, defaultUpstream)) {
    const known = Object.keys(upstreams).join(', ') || 'none';
    rd.report('defaultUpstream', `${JSON.stringify(defaultUpstream)} is not a key of upstreams (${known})`);
  }
  const offline = rd.boolean(root.offline, 'offline');
  const clientAuth = root.clientAuth === undefined ? undefined : readClientAuth(rd, root.clientAuth);
  const log = rd.object(root.log, 'log', CONFIG_FILE_KEYS.log);
  const pins = readPins(rd, isPlainObject(root.store) ? root.store.pins : undefined, { upstreams, defaultUpstream });
  return {
    listen,
    store: { ...store, pins },
    defaultUpstream,
    upstreams,
    offline,
    ...(clientAuth === undefined ? {} : { clientAuth }),
    log: { level: rd.oneOf(log.level, 'log.level', LOG_LEVELS) },
  };
}

function readListen(rd: Reader, raw: unknown): Config['listen'] {
  const listen = rd.object(raw, 'listen', CONFIG_FILE_KEYS.listen);
  return {
    host: rd.string(listen.host, 'listen.host'),
    port: rd.integer(listen.port, 'listen.port', 0, 65535),
    ...(listen.tls === undefined ? {} : { tls: readTls(rd, listen.tls) }),
  };
}

function readStore(rd: Reader, raw: unknown): Omit<Config['store'], 'pins'> {
  const store = rd.object(raw, 'store', CONFIG_FILE_KEYS.store);
  return {
    path: rd.string(store.path, 'store.path'),
    maxSizeBytes: rd.size(store.maxSize, 'store.maxSize'),
    idleTtlMs: rd.duration(store.idleTtl, 'store.idleTtl', 1),
  };
}

/** Pins name images the way users write them; the upstream must be configured. */
function readPins(rd: Reader, raw: unknown, upstreams: Pick<Config, 'upstreams' | 'defaultUpstream'>): ImageRef[] {
  const table = createUpstreamTable(upstreams);
  const pins: ImageRef[] = [];
  rd.array(raw, 'store.pins').forEach((value, i) => {
    const at = `store.pins[${i}]`;
    const text = rd.string(value, at);
    if (text === '') return;
    try {
      pins.push(parseImageRef(text, table));
    } catch (err) {
      rd.report(at, `${JSON.stringify(text)} is not an image reference here: ${(err as Error).message}`);
    }
  });
  return pins;
}

function readTls(rd: Reader, raw: unknown): { certFile: string; keyFile: string } {
  const tls = rd.object(raw, 'listen.tls', CONFIG_FILE_KEYS.tls);
  return { certFile: rd.string(tls.certFile, 'listen.tls.certFile'), keyFile: rd.string(tls.keyFile, 'listen.tls.keyFile') };
}

/** With `base`, absent keys fall back to it (an upstream over `upstreamDefaults`). */
function readPolicy(rd: Reader, o: Obj, path: string, base: Policy | undefined): Policy {
  const pick = <T>(key: string, read: (value: unknown, at: string) => T, fallback: T | undefined): T =>
    o[key] === undefined && fallback !== undefined ? fallback : read(o[key], joinPath(path, key));
  return {
    freshForMs: pick('freshFor', (v, at) => rd.duration(v, at, 0), base?.freshForMs),
    maxStaleMs: pick('maxStale', (v, at) => rd.duration(v, at, 0), base?.maxStaleMs),
    timeouts: pick('timeouts', (v, at) => readTimeouts(rd, v, at, base?.timeouts), base?.timeouts),
    minBytesPerSecond: pick('minSpeed', (v, at) => rd.size(v, at), base?.minBytesPerSecond),
    retries: pick('retries', (v, at) => rd.integer(v, at, 0, 100), base?.retries),
    downForMs: pick('downFor', (v, at) => rd.duration(v, at, 0), base?.downForMs),
    maxConnections: pick('maxConnections', (v, at) => rd.integer(v, at, 1, 65535), base?.maxConnections),
  };
}

function readTimeouts(rd: Reader, raw: unknown, path: string, base: UpstreamTimeouts | undefined): UpstreamTimeouts {
  const o = rd.object(raw, path, CONFIG_FILE_KEYS.timeouts);
  const read = (key: string, fallback: number | undefined): number =>
    o[key] === undefined && fallback !== undefined ? fallback : rd.duration(o[key], joinPath(path, key), 1);
  return { connectMs: read('connect', base?.connectMs), headersMs: read('headers', base?.headersMs), bodyMs: read('body', base?.bodyMs) };
}

function readUpstreams(rd: Reader, raw: unknown, defaults: Policy): Record<string, UpstreamConfig> {
  const entries = Object.entries(rd.object(raw, 'upstreams', undefined)).map(([name, value]) => {
    const path = joinPath('upstreams', name);
    if (!HOST_PATTERN.test(name)) rd.report(path, 'the key must be a lowercase registry host, like "ghcr.io" or "registry.local:5000"');
    return [name, readUpstream(rd, name, value, path, defaults)] as const;
  });
  checkAliases(rd, entries.map(([, upstream]) => upstream));
  return Object.fromEntries(entries);
}

function readUpstream(rd: Reader, name: string, raw: unknown, path: string, defaults: Policy): UpstreamConfig {
  const o = rd.object(raw, path, CONFIG_FILE_KEYS.upstream);
  const aliases = o.aliases === undefined ? [] : rd.array(o.aliases, joinPath(path, 'aliases')).map((alias, i) => {
    const host = rd.string(alias, `${path}.aliases[${i}]`).toLowerCase();
    if (host !== '' && !HOST_PATTERN.test(host)) rd.report(`${path}.aliases[${i}]`, `expected a registry host like "index.docker.io", got ${describeValue(alias)}`);
    return host;
  });
  const credentials = o.auth === undefined ? undefined : readAuth(rd, o.auth, joinPath(path, 'auth'));
  const repositories = o.repositories === undefined ? undefined : readRepositoryRules(rd, o.repositories, joinPath(path, 'repositories'));
  const allowLocalRedirects = o.allowLocalRedirects === undefined ? undefined : rd.boolean(o.allowLocalRedirects, joinPath(path, 'allowLocalRedirects'));
  return {
    name,
    url: rd.url(o.url, joinPath(path, 'url')),
    // An alias equal to the upstream's own key says nothing; repeats are dropped too.
    aliases: [...new Set(aliases.filter((alias) => alias !== name))],
    library: o.library === undefined ? false : rd.boolean(o.library, joinPath(path, 'library')),
    ...(credentials === undefined ? {} : { credentials }),
    ...(repositories === undefined ? {} : { repositories }),
    ...(allowLocalRedirects === undefined ? {} : { allowLocalRedirects }),
    ...readPolicy(rd, o, path, defaults),
  };
}

function readAuth(rd: Reader, raw: unknown, path: string): UpstreamCredentials {
  const o = rd.object(raw, path, [...CONFIG_FILE_KEYS.auth, 'password']);
  if (o.password !== undefined) {
    rd.report(`${path}.password`, 'passwords do not belong in the config file: put it in an environment variable and name that variable in "passwordEnv"');
  }
  const username = rd.string(o.username, `${path}.username`);
  const envName = rd.string(o.passwordEnv, `${path}.passwordEnv`);
  if (envName === '') return { username, password: '' };
  if (!ENV_NAME_PATTERN.test(envName)) {
    rd.report(`${path}.passwordEnv`, `expected an environment variable name like "DOCKERHUB_TOKEN", got ${describeValue(envName)}`);
    return { username, password: '' };
  }
  const password = rd.env[envName] ?? '';
  if (password === '') rd.report(`${path}.passwordEnv`, `environment variable ${envName} is not set or empty`);
  return { username, password };
}

/** An alias must mean one upstream: it may not repeat another upstream's key or alias. */
function checkAliases(rd: Reader, upstreams: readonly UpstreamConfig[]): void {
  const owners = new Map<string, string>(upstreams.map((u) => [u.name, `the key of upstream "${u.name}"`]));
  for (const upstream of upstreams) {
    upstream.aliases.forEach((alias) => {
      const owner = owners.get(alias);
      const path = `${joinPath('upstreams', upstream.name)}.aliases`;
      if (owner !== undefined) rd.report(path, `alias "${alias}" is already ${owner}`);
      else owners.set(alias, `an alias of upstream "${upstream.name}"`);
    });
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Registry hosts (keys and aliases, case-folded) → upstream key; each upstream's repository rules. */
export function createUpstreamTable(config: Pick<Config, 'upstreams' | 'defaultUpstream'>): UpstreamTable {
  const hosts = new Map<string, string>();
  const filters = new Map<string, ReturnType<typeof createRepositoryFilter>>();
  for (const upstream of Object.values(config.upstreams)) {
    hosts.set(upstream.name.toLowerCase(), upstream.name);
    for (const alias of upstream.aliases) hosts.set(alias.toLowerCase(), upstream.name);
    if (upstream.repositories) filters.set(upstream.name, createRepositoryFilter(upstream.repositories));
  }
  return {
    findUpstream: (host) => hosts.get(host),
    defaultUpstream: config.defaultUpstream,
    usesLibrary: (name) => config.upstreams[name]?.library ?? false,
    allowsRepository: (name, repository) => filters.get(name)?.allows(repository) ?? true,
  };
}
