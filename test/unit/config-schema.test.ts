import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import standaloneCode from 'ajv/dist/standalone/index.js';
import type { ValidateFunction } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { ConfigError, getDefaultConfigFile, parseConfig } from '../../src/config/index.js';
import { getConfigSchema } from '../../src/config/schema.js';
import { parseDuration, parseSize } from '../../src/config/units.js';
import { compileValidator } from '../../src/config/validator.js';

// mirror.config.schema.json is the source of the config's keys, types and defaults;
// these tests check what users meet: the shipped files, the docs, the messages.

interface SchemaNode {
  readonly description?: string;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly additionalProperties?: boolean | SchemaNode;
  readonly $ref?: string;
  readonly pattern?: string;
}

interface Schema extends SchemaNode {
  readonly $defs: Readonly<Record<string, SchemaNode>>;
}

function readText(name: string): string {
  return readFileSync(new URL(`../../${name}`, import.meta.url), 'utf8');
}

const schema = JSON.parse(readText('mirror.config.schema.json')) as Schema;
const shippedConfig = JSON.parse(readText('mirror.config.json')) as Record<string, unknown>;

function problemsOf(input: unknown, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(input, env);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
}

/** The node at a dotted path, `upstream` meaning the `$defs/upstream` every upstream uses. */
function nodeAt(path: string): SchemaNode | undefined {
  const [first, ...rest] = path.split('.');
  let node: SchemaNode | undefined = first === 'upstream' ? schema.$defs.upstream : schema.properties?.[first ?? ''];
  for (const key of rest) {
    node = node?.properties?.[key];
    if (node?.$ref !== undefined) node = schema.$defs[node.$ref.replace('#/$defs/', '')];
  }
  return node;
}

function keysAt(path: string): string {
  return Object.keys(nodeAt(path)?.properties ?? {}).join(', ');
}

/** Every object node of the schema with its JSON pointer. */
function objectNodes(node: SchemaNode, pointer: string): [string, SchemaNode][] {
  const children = Object.entries(node.properties ?? {}).flatMap(([key, child]) => objectNodes(child, `${pointer}/${key}`));
  return node.properties === undefined ? children : [[pointer, node], ...children];
}

describe('mirror.config.json', () => {
  it('validates, and is exactly the schema defaults in file form', () => {
    expect(getConfigSchema().check(shippedConfig)).toEqual({ file: { $schema: './mirror.config.schema.json', ...getDefaultConfigFile() } });
  });

  it('parses to the same config as no file at all', () => {
    expect(parseConfig(shippedConfig, {})).toEqual(parseConfig({}, {}));
  });
});

describe('mirror.config.schema.json', () => {
  it('fills in every default, section by section, and leaves the input as it was', () => {
    const input = { listen: { port: 6000 }, upstreamDefaults: { timeouts: { body: '1m' } } };
    const config = parseConfig(input, {});
    expect(input).toEqual({ listen: { port: 6000 }, upstreamDefaults: { timeouts: { body: '1m' } } });
    expect(config.listen.host).toBe('0.0.0.0');
    expect(config.upstreams['quay.io']?.timeouts).toEqual({ connectMs: 5_000, headersMs: 30_000, bodyMs: 60_000 });
    expect(parseConfig({ clientAuth: { tokensEnv: 'T' } }, { T: 'a-token-long-enough' }).clientAuth?.realm).toBe('oci-mirror');
  });

  it.each([
    ['listen', { listen: { bogus: 1 } }, 'listen.bogus'],
    ['listen.tls', { listen: { tls: { certFile: 'c', keyFile: 'k', bogus: 1 } } }, 'listen.tls.bogus'],
    ['store', { store: { bogus: 1 } }, 'store.bogus'],
    ['upstreamDefaults', { upstreamDefaults: { bogus: 1 } }, 'upstreamDefaults.bogus'],
    ['upstreamDefaults.timeouts', { upstreamDefaults: { timeouts: { bogus: 1 } } }, 'upstreamDefaults.timeouts.bogus'],
    ['upstream', { upstreams: { 'docker.io': { url: 'https://x.io', bogus: 1 } } }, 'upstreams["docker.io"].bogus'],
    [
      'upstream.timeouts',
      { upstreams: { 'docker.io': { url: 'https://x.io', timeouts: { bogus: 1 } } } },
      'upstreams["docker.io"].timeouts.bogus',
    ],
    [
      'upstream.auth',
      { upstreams: { 'docker.io': { url: 'https://x.io', auth: { username: 'u', passwordEnv: 'P', bogus: 1 } } } },
      'upstreams["docker.io"].auth.bogus',
    ],
    [
      'upstream.repositories',
      { upstreams: { 'docker.io': { url: 'https://x.io', repositories: { bogus: 1 } } } },
      'upstreams["docker.io"].repositories.bogus',
    ],
    ['clientAuth', { clientAuth: { tokensEnv: 'T', bogus: 1 } }, 'clientAuth.bogus'],
    ['log', { log: { bogus: 1 } }, 'log.bogus'],
  ])('refuses an unknown key in %s, listing the keys it allows', (node, input, path) => {
    expect(keysAt(node)).not.toBe('');
    expect(problemsOf(input)).toEqual([`${path}: unknown key (allowed: ${keysAt(node)})`]);
  });

  it('refuses a zero size or duration where the code needs more than zero', () => {
    expect(problemsOf({ store: { maxSize: '0', idleTtl: '0s' } })).toEqual([
      'store.maxSize: expected a size greater than zero, got "0"',
      'store.idleTtl: expected a duration greater than zero, got "0s"',
    ]);
    expect(problemsOf({ upstreamDefaults: { minSpeed: '0KiB', timeouts: { connect: '0ms' } } })).toEqual([
      'upstreamDefaults.timeouts.connect: expected a duration greater than zero, got "0ms"',
      'upstreamDefaults.minSpeed: expected a size greater than zero, got "0KiB"',
    ]);
    expect(parseConfig({ upstreamDefaults: { freshFor: '0s', maxStale: '0s', downFor: '0s' } }, {}).upstreams['ghcr.io']).toMatchObject({
      freshForMs: 0,
      maxStaleMs: 0,
      downForMs: 0,
    });
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

  it('lets an upstream set every upstreamDefaults option', () => {
    for (const key of Object.keys(nodeAt('upstreamDefaults')?.properties ?? {})) expect(nodeAt(`upstream.${key}`), key).toBeDefined();
  });

  it.each([
    ['duration', parseDuration, ['30s', '500ms', '1.5h', '1w', '10 s', '0s', 'fast', '30', '5M', '-1s', '1h30m', '.5s']],
    [
      'size',
      parseSize,
      ['123', '50GiB', '10gb', '1 KiB', '5b', '50Gi', '1ti', '0', 'lots', '10G', '1e9', '-1', 'GiB', '1.KiB', '5Gib', '5Kb', '5Gii', '5iB'],
    ],
  ] as const)('has a %s pattern that agrees with the parser', (name, parse, samples) => {
    const pattern = new RegExp(schema.$defs[name]?.pattern ?? '(?!)');
    for (const sample of samples) {
      const parses = (() => {
        try {
          parse(sample);
          return true;
        } catch (err) {
          if (!(err instanceof RangeError)) throw err;
          return false;
        }
      })();
      expect(pattern.test(sample), sample).toBe(parses);
    }
  });
});

describe('the precompiled validator (npm run build)', () => {
  it('fills in and refuses exactly what the validator compiled at run time does', () => {
    const { ajv, validate } = compileValidator(schema, { source: true });
    const module = { exports: {} as unknown };
    // Evaluating ajv's generated module is the point: it is what `npm run build` ships.
    // eslint-disable-next-line @typescript-eslint/no-implied-eval, @typescript-eslint/no-unsafe-call
    new Function('require', 'module', standaloneCode.default(ajv, validate))(createRequire(import.meta.url), module);
    const precompiled = module.exports as ValidateFunction;
    const inputs = [
      {},
      null,
      { store: { maxSize: '0', idleTtl: 'fast' }, colour: 1 },
      { upstreams: { 'A.io': {}, 'b.io': { url: 'https://b.io', timeouts: {} } } },
    ];
    for (const input of inputs) {
      const [a, b] = [structuredClone(input), structuredClone(input)];
      expect([precompiled(a), a, precompiled.errors], JSON.stringify(input)).toEqual([validate(b), b, validate.errors]);
    }
  });
});

describe('README', () => {
  it('documents only keys the schema has', () => {
    const readme = readText('README.md');
    const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1));
    const keys = [...section.matchAll(/^\| `([^`]+)`(?:, `([^`]+)`)?/gm)].flatMap((m) => [m[1], m[2]]).filter((k) => k !== undefined);
    expect(keys.length).toBeGreaterThan(20);
    for (const key of keys) expect(nodeAt(key.replace(/^upstreams\.<registry>\./, 'upstream.')), key).toBeDefined();
  });
});
