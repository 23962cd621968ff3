import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_FILE_KEYS, ConfigError, DEFAULT_CONFIG_FILE, parseConfig } from '../../src/config.js';
import { parseDuration, parseSize } from '../../src/config-units.js';

// The shipped files must say what the parser does: these tests keep docs from drifting.

interface SchemaNode {
  readonly description?: string;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly additionalProperties?: boolean | SchemaNode;
  readonly $ref?: string;
  readonly default?: unknown;
  readonly enum?: readonly unknown[];
  readonly pattern?: string;
}

interface Schema extends SchemaNode {
  readonly $defs: Readonly<Record<string, SchemaNode>>;
}

function readJson(name: string): unknown {
  return JSON.parse(readFileSync(new URL(`../../${name}`, import.meta.url), 'utf8')) as unknown;
}

const schema = readJson('mirror.config.schema.json') as Schema;
const shippedConfig = readJson('mirror.config.json') as Record<string, unknown>;

function prop(node: SchemaNode, ...path: string[]): SchemaNode {
  let current = node;
  for (const key of path) {
    const next = current.properties?.[key];
    if (next === undefined) throw new Error(`schema has no ${path.join('.')}`);
    current = next;
  }
  return current;
}

function keysOf(node: SchemaNode | undefined): string[] {
  return Object.keys(node?.properties ?? {}).sort();
}

function sorted(keys: readonly string[]): string[] {
  return [...keys].sort();
}

/** Every object node of the schema with its JSON pointer. */
function objectNodes(node: SchemaNode, pointer: string): [string, SchemaNode][] {
  const children = Object.entries(node.properties ?? {}).flatMap(([key, child]) => objectNodes(child, `${pointer}/${key}`));
  return node.properties === undefined ? children : [[pointer, node], ...children];
}

describe('mirror.config.json', () => {
  it('is exactly the embedded defaults in file form', () => {
    const { $schema, ...rest } = shippedConfig;
    expect($schema).toBe('./mirror.config.schema.json');
    expect(rest).toEqual(DEFAULT_CONFIG_FILE);
  });

  it('parses to the same config as no file at all', () => {
    expect(parseConfig(shippedConfig, {})).toEqual(parseConfig({}, {}));
  });
});

describe('mirror.config.schema.json', () => {
  it('lists exactly the keys the parser accepts, for every object', () => {
    const upstream = schema.$defs.upstream;
    expect(keysOf(schema)).toEqual(sorted(CONFIG_FILE_KEYS.root));
    expect(keysOf(prop(schema, 'listen'))).toEqual(sorted(CONFIG_FILE_KEYS.listen));
    expect(keysOf(prop(schema, 'listen', 'tls'))).toEqual(sorted(CONFIG_FILE_KEYS.tls));
    expect(keysOf(prop(schema, 'store'))).toEqual(sorted(CONFIG_FILE_KEYS.store));
    expect(keysOf(prop(schema, 'upstreamDefaults'))).toEqual(sorted(CONFIG_FILE_KEYS.upstreamDefaults));
    expect(keysOf(schema.$defs.timeouts)).toEqual(sorted(CONFIG_FILE_KEYS.timeouts));
    expect(keysOf(upstream)).toEqual(sorted(CONFIG_FILE_KEYS.upstream));
    expect(keysOf(upstream && prop(upstream, 'auth'))).toEqual(sorted(CONFIG_FILE_KEYS.auth));
    expect(keysOf(prop(schema, 'log'))).toEqual(sorted(CONFIG_FILE_KEYS.log));
    expect(keysOf(prop(schema, 'clientAuth'))).toEqual(sorted(CONFIG_FILE_KEYS.clientAuth));
    expect(keysOf(upstream && prop(upstream, 'repositories'))).toEqual(sorted(CONFIG_FILE_KEYS.repositories));
  });

  it('documents a file that uses every key, and the parser accepts that file', () => {
    const everyKey = {
      $schema: './mirror.config.schema.json',
      listen: { host: '127.0.0.1', port: 5000, tls: { certFile: 'cert.pem', keyFile: 'key.pem' } },
      store: { path: '/var/lib/oci-mirror', maxSize: '10GiB', idleTtl: '14d' },
      defaultUpstream: 'docker.io',
      upstreamDefaults: { freshFor: '1m', maxStale: '1d', timeouts: { connect: '1s', headers: '10s', body: '10s' }, minSpeed: '512B', retries: 1, downFor: '5s', maxConnections: 8 },
      upstreams: {
        'docker.io': {
          url: 'https://registry-1.docker.io',
          aliases: ['index.docker.io'],
          library: true,
          auth: { username: 'me', passwordEnv: 'DOCKERHUB_TOKEN' },
          repositories: { allow: ['library/*', 'me/**'], deny: ['me/secret'] },
          allowLocalRedirects: false,
          freshFor: '2m',
          maxStale: '2d',
          timeouts: { connect: '2s', headers: '20s', body: '20s' },
          minSpeed: '2KiB',
          retries: 3,
          downFor: '10s',
          maxConnections: 16,
        },
      },
      offline: true,
      clientAuth: { htpasswdFile: '/etc/oci-mirror/htpasswd', tokensEnv: 'MIRROR_TOKENS', metricsTokenEnv: 'METRICS_TOKEN', realm: 'mirror' },
      log: { level: 'warn' },
    };
    const env = { DOCKERHUB_TOKEN: 't', MIRROR_TOKENS: 'a-client-token-of-some-length', METRICS_TOKEN: 'a-metrics-token-of-some-length' };
    expect(() => parseConfig(everyKey, env)).not.toThrow();
    const upstreamSample = everyKey.upstreams['docker.io'];
    expect(Object.keys(everyKey).sort()).toEqual(keysOf(schema));
    expect(Object.keys(upstreamSample).sort()).toEqual(keysOf(schema.$defs.upstream));
  });

  it('describes every option and closes every object', () => {
    const nodes = [...objectNodes(schema, '#'), ...Object.entries(schema.$defs).flatMap(([k, n]) => objectNodes(n, `#/$defs/${k}`))];
    expect(nodes.length).toBeGreaterThanOrEqual(9);
    for (const [pointer, node] of nodes) {
      expect(node.additionalProperties, pointer).toBe(false);
      for (const [key, child] of Object.entries(node.properties ?? {})) {
        expect(child.description?.length ?? 0, `${pointer}/${key}`).toBeGreaterThan(20);
      }
    }
  });

  it('states the same defaults as DEFAULT_CONFIG_FILE', () => {
    const d = DEFAULT_CONFIG_FILE;
    const timeouts = schema.$defs.timeouts ?? {};
    expect(prop(schema, 'listen', 'host').default).toBe(d.listen.host);
    expect(prop(schema, 'listen', 'port').default).toBe(d.listen.port);
    for (const key of CONFIG_FILE_KEYS.store) expect(prop(schema, 'store', key).default, key).toEqual(d.store[key]);
    expect(prop(schema, 'defaultUpstream').default).toBe(d.defaultUpstream);
    for (const key of CONFIG_FILE_KEYS.upstreamDefaults) {
      if (key !== 'timeouts') expect(prop(schema, 'upstreamDefaults', key).default, key).toBe(d.upstreamDefaults[key]);
    }
    for (const key of CONFIG_FILE_KEYS.timeouts) expect(prop(timeouts, key).default, key).toBe(d.upstreamDefaults.timeouts[key]);
    expect(prop(schema, 'offline').default).toBe(d.offline);
    expect(prop(schema, 'log', 'level').default).toBe(d.log.level);
  });

  it('offers exactly the log levels the parser accepts', () => {
    const levels = prop(schema, 'log', 'level').enum ?? [];
    for (const level of levels) expect(parseConfig({ log: { level } }, {}).log.level).toBe(level);
    expect(() => parseConfig({ log: { level: 'verbose' } }, {})).toThrow(ConfigError);
    expect([...levels].sort()).toEqual(['debug', 'error', 'fatal', 'info', 'silent', 'trace', 'warn']);
  });

  it.each([
    ['duration', parseDuration, ['30s', '500ms', '1.5h', '1w', '10 s', 'fast', '30', '5M', '-1s', '1h30m', '.5s']],
    ['size', parseSize, ['123', '50GiB', '10gb', '1 KiB', '5b', 'lots', '10G', '1e9', '-1', 'GiB', '1.KiB']],
  ] as const)('has a %s pattern that agrees with the parser', (name, parse, samples) => {
    const pattern = new RegExp(schema.$defs[name]?.pattern ?? '(?!)');
    for (const sample of samples) {
      const parses = (() => {
        try {
          parse(sample);
          return true;
        } catch {
          return false;
        }
      })();
      expect(pattern.test(sample), sample).toBe(parses);
    }
  });

  it('has an upstream key pattern that agrees with the parser', () => {
    const pattern = new RegExp(schema.$defs.host?.pattern ?? '(?!)');
    for (const key of ['ghcr.io', 'localhost:5000', 'a-b.example.com', 'GHCR.io', 'ghcr.io/x', '-a.io', 'a..b', 'https://x']) {
      const accepted = (() => {
        try {
          parseConfig({ defaultUpstream: key, upstreams: { [key]: { url: 'https://example.com' } } }, {});
          return true;
        } catch {
          return false;
        }
      })();
      expect(pattern.test(key), key).toBe(accepted);
    }
  });
});
