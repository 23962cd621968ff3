import type { ImageRef } from '../oci/image-ref.js';
import type { ConfigFile, UpstreamFile } from './file-types.js';

/**
 * The validated, defaulted, deep-frozen configuration: the file's shape (file-types.ts,
 * generated from the schema, where every key is documented) with durations in
 * milliseconds, sizes in bytes and environment variables resolved. Only the keys whose
 * value changes are named here; everything else is the file's own.
 */
export type Config = Omit<ConfigFile, '$schema' | 'listen' | 'store' | 'upstreamDefaults' | 'upstreams' | 'clientAuth'> & {
  readonly listen: ListenConfig;
  readonly store: StoreConfig;
  readonly upstreams: Readonly<Record<string, UpstreamConfig>>;
  readonly clientAuth?: ClientAuthConfig;
};

export type ListenConfig = Omit<ConfigFile['listen'], 'drainTimeout' | 'headersTimeout'> & {
  readonly drainTimeoutMs: number;
  /** How long a connection may take to send a request head before it is closed. */
  readonly headersTimeoutMs: number;
};

/** A front proxy that sends stored blobs itself (config `front`). */
export type FrontConfig = ConfigFile['front'];

export type StoreConfig = Omit<ConfigFile['store'], 'maxSize' | 'idleTtl' | 'pins'> & {
  readonly maxSizeBytes: number;
  readonly idleTtlMs: number;
  /** Images never evicted, with everything their manifests reference. */
  readonly pins: readonly ImageRef[];
};

type ClientAuthFile = NonNullable<ConfigFile['clientAuth']>;

/**
 * Client authentication. With `htpasswdFile` or `tokens`, the registry API wants HTTP
 * Basic (an htpasswd user, or any user with a token as password) or `Bearer <token>`.
 */
export type ClientAuthConfig = Omit<ClientAuthFile, 'tokensEnv' | 'metricsTokenEnv'> & {
  /** Static bearer tokens, read from the environment variable `tokensEnv` names. */
  readonly tokens: readonly string[];
  /** When set, `/metrics` wants `Authorization: Bearer <metricsToken>`. */
  readonly metricsToken?: string;
};

/** Repository patterns of one upstream (see oci/repository-pattern.ts); deny wins. */
export type RepositoryRules = NonNullable<UpstreamFile['repositories']>;

/**
 * Where an upstream's credentials come from (`auth`): `password` (from `passwordEnv`,
 * read at start-up), `passwordFile` (re-read when it changes) or `helper` (a Docker
 * credential helper, which also names the user; `username` is then empty).
 */
export interface UpstreamCredentials {
  readonly username: string;
  readonly password?: string;
  readonly passwordFile?: string;
  readonly helper?: string;
  readonly helperTtlMs?: number;
  /** Token realm origins trusted with the credentials beyond the upstream's registrable domain. */
  readonly realms?: readonly string[];
}

type PolicyFile = ConfigFile['upstreamDefaults'];

/** `connectMs`, `headersMs`, `bodyMs`. */
export type UpstreamTimeouts = { readonly [K in keyof PolicyFile['timeouts'] as `${K}Ms`]: number };

type DurationKey = 'freshFor' | 'maxStale' | 'downFor' | 'throttle';

/** `upstreamDefaults`, or an upstream's own value where it sets one. */
/** `maxResumes`, `backoffMs`, `withinMs`: how a blob download cut mid-body is resumed. */
export type ResumePolicy = Pick<PolicyFile['resume'], 'maxResumes'> & {
  readonly backoffMs: number;
  readonly withinMs: number;
};

export type UpstreamPolicy = Pick<PolicyFile, 'retries' | 'maxConnections'> & {
  readonly [K in DurationKey as `${K}Ms`]: number;
} & {
  readonly timeouts: UpstreamTimeouts;
  readonly resume: ResumePolicy;
  /**
   * Slowest upstream body accepted (`minSpeed`): each `timeouts.bodyMs` spent waiting on a
   * body must bring this many bytes per second, else the transfer is aborted.
   */
  readonly minBytesPerSecond: number;
};

/** The upstream's own forward proxy, with its credentials read from the environment. */
export interface ProxyConfig {
  readonly url: string;
  readonly username?: string;
  readonly password?: string;
}

/** HTTP_PROXY, HTTPS_PROXY and NO_PROXY (or their lower-case forms) as the mirror started with them. */
export interface EnvProxyConfig {
  readonly httpProxy?: string;
  readonly httpsProxy?: string;
  readonly noProxy?: string;
}

export type UpstreamConfig = Omit<UpstreamFile, 'auth' | 'proxy' | keyof PolicyFile> &
  UpstreamPolicy & {
    /** The config key, e.g. `docker.io`. Metric label and store namespace. */
    readonly name: string;
    readonly credentials?: UpstreamCredentials;
    /** Set: every request of this upstream goes through it, whatever the environment says. */
    readonly proxy?: ProxyConfig;
    /** Used when `proxy` is absent. */
    readonly envProxy?: EnvProxyConfig;
  };
