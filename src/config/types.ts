import type { ImageRef } from '../oci/image-ref.js';
import type { ConfigFile, UpstreamFile } from './file-types.js';

/**
 * The validated, defaulted, deep-frozen configuration: the file's shape (file-types.ts,
 * generated from the schema, where every key is documented) with durations in
 * milliseconds, sizes in bytes and environment variables resolved. Only the keys whose
 * value changes are named here; everything else is the file's own.
 */
export type Config = Omit<ConfigFile, '$schema' | 'store' | 'upstreamDefaults' | 'upstreams' | 'clientAuth'> & {
  readonly store: StoreConfig;
  readonly upstreams: Readonly<Record<string, UpstreamConfig>>;
  readonly clientAuth?: ClientAuthConfig;
};

export type ListenConfig = ConfigFile['listen'];

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

export type UpstreamCredentials = Omit<NonNullable<UpstreamFile['auth']>, 'passwordEnv'> & {
  /** Read from the environment variable `passwordEnv` names. */
  readonly password: string;
};

type PolicyFile = ConfigFile['upstreamDefaults'];

/** `connectMs`, `headersMs`, `bodyMs`. */
export type UpstreamTimeouts = { readonly [K in keyof PolicyFile['timeouts'] as `${K}Ms`]: number };

type DurationKey = 'freshFor' | 'maxStale' | 'downFor';

/** `upstreamDefaults`, or an upstream's own value where it sets one. */
export type UpstreamPolicy = Pick<PolicyFile, 'retries' | 'maxConnections'> & {
  readonly [K in DurationKey as `${K}Ms`]: number;
} & {
  readonly timeouts: UpstreamTimeouts;
  /**
   * Slowest upstream body accepted (`minSpeed`): each `timeouts.bodyMs` spent waiting on a
   * body must bring this many bytes per second, else the transfer is aborted.
   */
  readonly minBytesPerSecond: number;
};

export type UpstreamConfig = Omit<UpstreamFile, 'auth' | keyof PolicyFile> &
  UpstreamPolicy & {
    /** The config key, e.g. `docker.io`. Metric label and store namespace. */
    readonly name: string;
    readonly credentials?: UpstreamCredentials;
  };
