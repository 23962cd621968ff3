import type { LogLevel } from './log.js';
import type { ImageRef } from './oci/image-ref.js';

/**
 * The validated, defaulted, deep-frozen configuration. Durations are milliseconds,
 * sizes bytes; the file speaks human units (`"5m"`, `"50GiB"`). See config.ts.
 */
export interface Config {
  readonly listen: ListenConfig;
  readonly store: StoreConfig;
  /** Upstream key for requests that name no registry (Docker's `registry-mirrors`). */
  readonly defaultUpstream: string;
  readonly upstreams: Readonly<Record<string, UpstreamConfig>>;
  /** Never contact an upstream: serve only what is stored. */
  readonly offline: boolean;
  /** Who may use the mirror; absent, anyone who reaches it (a public cache). */
  readonly clientAuth?: ClientAuthConfig;
  readonly log: { readonly level: LogLevel };
}

export interface ListenConfig {
  readonly host: string;
  readonly port: number;
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

export interface StoreConfig {
  readonly path: string;
  readonly maxSizeBytes: number;
  readonly idleTtlMs: number;
  /** Images never evicted, with everything their manifests reference. */
  readonly pins: readonly ImageRef[];
}

/**
 * Client authentication. With `htpasswdFile` or `tokens`, the registry API wants HTTP
 * Basic (an htpasswd user, or any user with a token as password) or `Bearer <token>`.
 */
export interface ClientAuthConfig {
  /** htpasswd file of bcrypt entries (`htpasswd -B`), read at start-up. */
  readonly htpasswdFile?: string;
  /** Static bearer tokens, read from the environment variable the file names. */
  readonly tokens: readonly string[];
  /** When set, `/metrics` wants `Authorization: Bearer <metricsToken>`. */
  readonly metricsToken?: string;
  /** The realm of the Basic challenge. */
  readonly realm: string;
}

/** Repository patterns of one upstream (see oci/repository-pattern.ts); deny wins. */
export interface RepositoryRules {
  /** Empty: every repository not denied. */
  readonly allow: readonly string[];
  readonly deny: readonly string[];
}

export interface UpstreamCredentials {
  readonly username: string;
  readonly password: string;
}

export interface UpstreamTimeouts {
  /** TCP + TLS connect. */
  readonly connectMs: number;
  /** Request sent → response headers. */
  readonly headersMs: number;
  /** Longest gap between two body chunks. */
  readonly bodyMs: number;
}

export interface UpstreamConfig {
  /** The config key, e.g. `docker.io`. Metric label and store namespace. */
  readonly name: string;
  /** Base URL of the registry API, e.g. `https://registry-1.docker.io`. */
  readonly url: string;
  /** Other registry hosts that mean this upstream (`?ns=` values, path prefixes). */
  readonly aliases: readonly string[];
  /** One-component names live under `library/` (Docker Hub). */
  readonly library: boolean;
  readonly credentials?: UpstreamCredentials;
  /** Which repositories are mirrored from this upstream; absent, all of them. */
  readonly repositories?: RepositoryRules;
  /**
   * Whether redirects and token realms may lead to loopback or link-local addresses.
   * Absent: only when the upstream's own host is local (an in-cluster registry).
   */
  readonly allowLocalRedirects?: boolean;
  /** How long a tag → digest record is served without asking upstream. */
  readonly freshForMs: number;
  /** How long past freshness a tag may be served when upstream fails. */
  readonly maxStaleMs: number;
  readonly timeouts: UpstreamTimeouts;
  /**
   * Slowest upstream body accepted: each `timeouts.bodyMs` spent waiting on a body must
   * bring this many bytes per second, else the transfer is aborted (a drip holds no fill).
   */
  readonly minBytesPerSecond: number;
  /** Retries of a failed request before any byte reaches a client. */
  readonly retries: number;
  /** After a connection failure, fail fast for this long instead of dialling again. */
  readonly downForMs: number;
  /** Most concurrent connections to this upstream. */
  readonly maxConnections: number;
}
