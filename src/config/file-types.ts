/**
 * The config file after validation, defaults applied: generated from
 * mirror.config.schema.json by test/unit/config-types.test.ts. Do not edit; edit the
 * schema and run `npm run config:types`. Keys with a default are always present.
 */
export interface ConfigFile {
  readonly $schema?: string;
  readonly listen: {
    readonly host: string;
    readonly port: number;
    readonly maxConnections: number;
    readonly maxRequestsPerClient: number;
    readonly trustedProxies: number;
    readonly tls?: {
      readonly certFile: string;
      readonly keyFile: string;
    };
    readonly drainTimeout: string;
    readonly headersTimeout: string;
  };
  readonly store: {
    readonly path: string;
    readonly maxSize: string;
    readonly idleTtl: string;
    readonly pins: readonly string[];
  };
  readonly defaultUpstream: string;
  readonly upstreamDefaults: {
    readonly freshFor: string;
    readonly maxStale: string;
    readonly timeouts: {
      readonly connect: string;
      readonly headers: string;
      readonly body: string;
    };
    readonly minSpeed: string;
    readonly resume: {
      readonly maxResumes: number;
      readonly backoff: string;
      readonly within: string;
    };
    readonly retries: number;
    readonly downFor: string;
    readonly maxConnections: number;
    readonly throttle: string;
  };
  readonly upstreams: Readonly<Record<string, UpstreamFile>>;
  readonly offline: boolean;
  readonly front: {
    readonly mode: 'off' | 'nginx';
    readonly internalPrefix: string;
  };
  readonly clientAuth?: {
    readonly htpasswdFile?: string;
    readonly tokensEnv?: string;
    readonly metricsTokenEnv?: string;
    readonly realm: string;
    readonly failedLoginsPerMinute: number;
  };
  readonly log: {
    readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  };
}

export interface TimeoutsFile {
  readonly connect?: string;
  readonly headers?: string;
  readonly body?: string;
}

export interface ResumeFile {
  readonly maxResumes?: number;
  readonly backoff?: string;
  readonly within?: string;
}

export interface UpstreamFile {
  readonly url: string;
  readonly aliases: readonly string[];
  readonly library: boolean;
  readonly auth?: {
    readonly username?: string;
    readonly passwordEnv?: string;
    readonly passwordFile?: string;
    readonly helper?: string;
    readonly helperTtl: string;
    readonly realms: readonly string[];
  };
  readonly repositories?: {
    readonly allow: readonly string[];
    readonly deny: readonly string[];
  };
  readonly allowLocalRedirects?: boolean;
  readonly freshFor?: string;
  readonly maxStale?: string;
  readonly timeouts?: TimeoutsFile;
  readonly minSpeed?: string;
  readonly resume?: ResumeFile;
  readonly retries?: number;
  readonly downFor?: string;
  readonly maxConnections?: number;
  readonly throttle?: string;
  readonly urls: readonly string[];
  readonly proxy?: {
    readonly url: string;
    readonly usernameEnv?: string;
    readonly passwordEnv?: string;
  };
  readonly tls?: {
    readonly caFile?: string;
    readonly certFile?: string;
    readonly keyFile?: string;
    readonly insecureSkipVerify: boolean;
  };
}
