import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, getDefaultConfigFile, loadConfig, parseConfig, type Config } from '../../src/config/index.js';

const NO_ENV = {};

/** The problems `input` yields, as `path: message` lines. */
function problemsOf(input: unknown, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(input, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  throw new Error('expected a ConfigError');
}

function pathsOf(input: unknown, env: Record<string, string> = {}): string[] {
  return problemsOf(input, env).map((line) => line.slice(0, line.indexOf(': ')));
}

const DEFAULT_POLICY = {
  freshForMs: 300_000,
  maxStaleMs: 7 * 86_400_000,
  timeouts: { connectMs: 5_000, headersMs: 30_000, bodyMs: 30_000 },
  resume: { maxResumes: 5, backoffMs: 250, withinMs: 30 * 60_000 },
  minBytesPerSecond: 1024,
  retries: 2,
  downForMs: 15_000,
  maxConnections: 32,
  throttleMs: 60_000,
};

describe('parseConfig defaults', () => {
  it('turns the empty file into the documented defaults, in ms and bytes', () => {
    const config = parseConfig({}, NO_ENV);
    expect(config.listen).toEqual({
      host: '0.0.0.0',
      port: 5000,
      maxConnections: 4096,
      maxRequestsPerClient: 64,
      trustedProxies: 0,
      drainTimeoutMs: 30_000,
      headersTimeoutMs: 10_000,
    });
    expect(config.store).toEqual({ path: './data', maxSizeBytes: 50 * 2 ** 30, idleTtlMs: 30 * 86_400_000, pins: [] });
    expect(config.defaultUpstream).toBe('docker.io');
    expect(config.offline).toBe(false);
    expect(config.log).toEqual({ level: 'info' });
    expect(Object.keys(config.upstreams)).toEqual(['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io', 'gcr.io']);
    expect(config.upstreams['docker.io']).toEqual({
      name: 'docker.io',
      url: 'https://registry-1.docker.io',
      aliases: ['index.docker.io', 'registry-1.docker.io'],
      library: true,
      urls: [],
      ...DEFAULT_POLICY,
    });
    expect(config.upstreams['ghcr.io']).toEqual({
      name: 'ghcr.io',
      url: 'https://ghcr.io',
      urls: [],
      aliases: [],
      library: false,
      ...DEFAULT_POLICY,
    });
  });

  it('parses the default config file itself to the same config as the empty file', () => {
    expect(parseConfig(getDefaultConfigFile(), NO_ENV)).toEqual(parseConfig({}, NO_ENV));
  });

  it('freezes the result deeply, so mutating it throws', () => {
    const config: Config = parseConfig({}, NO_ENV);
    expect(() => {
      (config as { offline: boolean }).offline = true;
    }).toThrow(TypeError);
    expect(() => {
      (config.listen as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => (config.upstreams['docker.io']?.aliases as string[]).push('x')).toThrow(TypeError);
    expect(() => {
      (config.upstreams['ghcr.io']?.timeouts as { connectMs: number }).connectMs = 1;
    }).toThrow(TypeError);
    expect(Object.isFrozen(getDefaultConfigFile().upstreams)).toBe(true);
  });
});

describe('parseConfig merging', () => {
  it('merges listen, store, log and upstreamDefaults key by key onto the defaults', () => {
    const config = parseConfig(
      { listen: { port: 6000 }, store: { maxSize: '1GB' }, log: { level: 'debug' }, upstreamDefaults: { timeouts: { connect: '1s' } } },
      NO_ENV,
    );
    expect(config.listen).toEqual({
      host: '0.0.0.0',
      port: 6000,
      maxConnections: 4096,
      maxRequestsPerClient: 64,
      trustedProxies: 0,
      drainTimeoutMs: 30_000,
      headersTimeoutMs: 10_000,
    });
    expect(config.store).toEqual({ path: './data', maxSizeBytes: 1e9, idleTtlMs: 30 * 86_400_000, pins: [] });
    expect(config.log.level).toBe('debug');
    expect(config.upstreams['quay.io']?.timeouts).toEqual({ connectMs: 1000, headersMs: 30_000, bodyMs: 30_000 });
  });

  it('replaces the default upstream set wholly when upstreams is given', () => {
    const config = parseConfig(
      { defaultUpstream: 'registry.local:5000', upstreams: { 'registry.local:5000': { url: 'http://127.0.0.1:5001/' } } },
      NO_ENV,
    );
    expect(Object.keys(config.upstreams)).toEqual(['registry.local:5000']);
    expect(config.upstreams['registry.local:5000']?.url).toBe('http://127.0.0.1:5001');
  });

  it('falls back per upstream field to upstreamDefaults, timeouts key by key', () => {
    const config = parseConfig(
      {
        upstreamDefaults: { freshFor: '1m', retries: 5, resume: { backoff: '1s' } },
        upstreams: {
          'docker.io': {
            url: 'https://registry-1.docker.io',
            freshFor: '10s',
            timeouts: { body: '2m' },
            maxConnections: 4,
            resume: { maxResumes: 1 },
          },
        },
      },
      NO_ENV,
    );
    expect(config.upstreams['docker.io']).toMatchObject({
      freshForMs: 10_000,
      maxStaleMs: 7 * 86_400_000,
      retries: 5,
      maxConnections: 4,
      downForMs: 15_000,
      timeouts: { connectMs: 5000, headersMs: 30_000, bodyMs: 120_000 },
      resume: { maxResumes: 1, backoffMs: 1000, withinMs: 30 * 60_000 },
    });
  });

  it('lowercases aliases and accepts port 0, tls and an upstream on a bare host', () => {
    const config = parseConfig(
      {
        listen: { port: 0, tls: { certFile: 'c.pem', keyFile: 'k.pem' } },
        defaultUpstream: 'localhost:5001',
        upstreams: { 'localhost:5001': { url: 'http://localhost:5001', aliases: ['Mirror.Example.COM'] } },
      },
      NO_ENV,
    );
    expect(config.listen).toEqual({
      host: '0.0.0.0',
      port: 0,
      maxConnections: 4096,
      maxRequestsPerClient: 64,
      trustedProxies: 0,
      tls: { certFile: 'c.pem', keyFile: 'k.pem' },
      drainTimeoutMs: 30_000,
      headersTimeoutMs: 10_000,
    });
    expect(config.upstreams['localhost:5001']?.aliases).toEqual(['mirror.example.com']);
  });
});

describe('parseConfig validation', () => {
  it('reports a bad duration with its JSON path and the value', () => {
    const input = {
      upstreams: {
        'docker.io': { url: 'https://registry-1.docker.io' },
        'ghcr.io': { url: 'https://ghcr.io', timeouts: { connect: 'fast' } },
      },
    };
    expect(problemsOf(input)).toEqual(['upstreams["ghcr.io"].timeouts.connect: expected a duration like "30s", got "fast"']);
  });

  it('collects every problem, each with its path, and lists them one per line in the message', () => {
    const input = {
      listen: { port: 70000, host: 5 },
      store: { maxSize: 'lots', idleTtl: '0s' },
      offline: 'yes',
      log: { level: 'loud' },
      upstreamDefaults: { retries: -1, maxConnections: 0, freshFor: 30 },
    };
    expect(problemsOf(input)).toEqual([
      'listen.host: expected a non-empty string, got 5',
      'listen.port: expected an integer from 0 to 65535, got 70000',
      'store.maxSize: expected a size like "50GiB", got "lots"',
      'store.idleTtl: expected a duration greater than zero, got "0s"',
      'upstreamDefaults.freshFor: expected a duration like "30s", got 30',
      'upstreamDefaults.retries: expected an integer from 0 to 100, got -1',
      'upstreamDefaults.maxConnections: expected an integer from 1 to 65535, got 0',
      'offline: expected true or false, got "yes"',
      'log.level: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    ]);
    expect(() => parseConfig(input, NO_ENV)).toThrow(/^invalid configuration:\n {2}listen\.host: .*\n {2}listen\.port: /);
  });

  it('rejects unknown keys at every level, naming the key by its path', () => {
    const input = {
      colour: 'blue',
      listen: { hots: 'x' },
      upstreamDefaults: { timeouts: { read: '1s' } },
      upstreams: {
        'docker.io': { url: 'https://registry-1.docker.io', mirror: true, auth: { username: 'u', passwordEnv: 'P', token: 't' } },
      },
    };
    expect(pathsOf(input, { P: 'secret' })).toEqual([
      'colour',
      'listen.hots',
      'upstreamDefaults.timeouts.read',
      'upstreams["docker.io"].mirror',
      'upstreams["docker.io"].auth.token',
    ]);
    expect(problemsOf({ listen: { hots: 'x' } })).toEqual([
      'listen.hots: unknown key (allowed: host, port, maxConnections, maxRequestsPerClient, trustedProxies, tls, drainTimeout, headersTimeout)',
    ]);
  });

  it('keeps a __proto__ key an unknown key, not a prototype', () => {
    const input = JSON.parse('{"__proto__": {"offline": true}, "listen": {"__proto__": {}}}') as unknown;
    expect(pathsOf(input)).toEqual(['__proto__', 'listen.__proto__']);
  });

  it.each([
    [null, '(root): expected an object, got null'],
    [[], '(root): expected an object, got []'],
    [{ listen: null }, 'listen: expected an object, got null'],
    [{ upstreams: [] }, 'upstreams: expected an object, got []'],
    [{ listen: { port: '5000' } }, 'listen.port: expected an integer from 0 to 65535, got "5000"'],
    [{ listen: { port: 1.5 } }, 'listen.port: expected an integer from 0 to 65535, got 1.5'],
    [{ listen: { port: -1 } }, 'listen.port: expected an integer from 0 to 65535, got -1'],
    [{ listen: { tls: { certFile: 'c.pem' } } }, 'listen.tls.keyFile: missing; expected a non-empty string'],
    [{ $schema: 3 }, '$schema: expected a non-empty string, got 3'],
    [
      { defaultUpstream: 'nope.io' },
      'defaultUpstream: "nope.io" is not a key of upstreams (docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io)',
    ],
  ])('rejects %j', (input, problem) => {
    expect(problemsOf(input)).toEqual([problem]);
  });

  it.each([['ftp://ghcr.io'], ['https://ghcr.io/v2'], ['https://ghcr.io/?x=1'], ['https://user:pw@ghcr.io'], ['ghcr.io']])(
    'rejects the upstream url %s',
    (url) => {
      expect(problemsOf({ upstreams: { 'docker.io': { url } } })).toEqual([
        `upstreams["docker.io"].url: expected an http:// or https:// URL with no path, query or credentials, got ${JSON.stringify(url)}`,
      ]);
    },
  );

  it('requires an upstream url and a lowercase registry host as the key', () => {
    const input = { defaultUpstream: 'GHCR.io', upstreams: { 'GHCR.io': { url: 'https://ghcr.io' }, 'ghcr.io/x': {} } };
    expect(problemsOf(input)).toEqual([
      'upstreams["GHCR.io"]: the key must be a lowercase registry host, like "ghcr.io" or "registry.local:5000"',
      'upstreams["ghcr.io/x"]: the key must be a lowercase registry host, like "ghcr.io" or "registry.local:5000"',
      'upstreams["ghcr.io/x"].url: missing; expected a non-empty string',
    ]);
  });

  it("rejects an alias that is another upstream's key or alias", () => {
    const input = {
      upstreams: {
        'docker.io': { url: 'https://registry-1.docker.io', aliases: ['index.docker.io', 'GHCR.IO'] },
        'ghcr.io': { url: 'https://ghcr.io' },
        'mirror.local': { url: 'https://mirror.local', aliases: ['Index.Docker.io', 'bad host'] },
      },
    };
    expect(problemsOf(input)).toEqual([
      'upstreams["mirror.local"].aliases[1]: expected a registry host like "index.docker.io", got "bad host"',
      'upstreams["docker.io"].aliases: alias "ghcr.io" is already the key of upstream "ghcr.io"',
      'upstreams["mirror.local"].aliases: alias "index.docker.io" is already an alias of upstream "docker.io"',
    ]);
  });
});

describe('parseConfig pins', () => {
  it('routes pins the way clients name images: default upstream, library/, digest over tag', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const { pins } = parseConfig({ store: { pins: ['alpine', 'ghcr.io/org/app:1.2', `quay.io/org/app:1@${digest}`] } }, {}).store;
    expect(pins).toEqual([
      { upstream: 'docker.io', repository: 'library/alpine', reference: { kind: 'tag', tag: 'latest' } },
      { upstream: 'ghcr.io', repository: 'org/app', reference: { kind: 'tag', tag: '1.2' } },
      { upstream: 'quay.io', repository: 'org/app', reference: { kind: 'digest', digest } },
    ]);
  });

  it('names the pin that is not an image of a configured upstream', () => {
    const problems = problemsOf({ store: { pins: ['alpine:3.20', 'example.com/app:1', 'Bad Name'] } });
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^store\.pins\[1\]: .*registry example\.com is not one of the configured upstreams/);
    expect(problems[1]).toMatch(/^store\.pins\[2\]: /);
  });
});

describe('parseConfig credentials', () => {
  const withAuth = (auth: unknown): unknown => ({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', auth } } });

  it('resolves passwordEnv from the environment', () => {
    const config = parseConfig(withAuth({ username: 'me', passwordEnv: 'DOCKERHUB_TOKEN' }), { DOCKERHUB_TOKEN: 's3cret' });
    expect(config.upstreams['docker.io']?.credentials).toEqual({ username: 'me', password: 's3cret' });
    expect(parseConfig({}, NO_ENV).upstreams['docker.io']).not.toHaveProperty('credentials');
  });

  it.each([{}, { DOCKERHUB_TOKEN: '' }])('reports a passwordEnv that is unset or empty (%j)', (env) => {
    expect(problemsOf(withAuth({ username: 'me', passwordEnv: 'DOCKERHUB_TOKEN' }), env)).toEqual([
      'upstreams["docker.io"].auth.passwordEnv: environment variable DOCKERHUB_TOKEN is not set or empty',
    ]);
  });

  it('rejects a literal password and tells the user to use passwordEnv', () => {
    const problems = problemsOf(withAuth({ username: 'me', password: 'hunter2', passwordEnv: 'T' }), { T: 'x' });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^upstreams\["docker\.io"\]\.auth\.password: .*passwordEnv/);
    expect(problems[0]).not.toContain('hunter2');
  });

  it('requires username and a valid variable name', () => {
    expect(problemsOf(withAuth({ passwordEnv: 'not a name' })).sort()).toEqual([
      'upstreams["docker.io"].auth.passwordEnv: expected an environment variable name like "DOCKERHUB_TOKEN", got "not a name"',
      'upstreams["docker.io"].auth.username: missing; expected a non-empty string',
    ]);
  });

  it('takes passwordFile or a credential helper (which names the user), with trusted realms', () => {
    const file = parseConfig(
      withAuth({ username: 'AWS', passwordFile: '/run/secrets/ecr', realms: ['https://GitLab.example.com:443'] }),
      NO_ENV,
    );
    expect(file.upstreams['docker.io']?.credentials).toEqual({
      username: 'AWS',
      passwordFile: '/run/secrets/ecr',
      realms: ['https://gitlab.example.com'],
    });
    const helper = parseConfig(withAuth({ helper: 'ecr-login', helperTtl: '1h' }), NO_ENV);
    expect(helper.upstreams['docker.io']?.credentials).toEqual({ username: '', helper: 'ecr-login', helperTtlMs: 3_600_000 });
  });

  it('wants exactly one of passwordEnv, passwordFile or helper', () => {
    expect(problemsOf(withAuth({ username: 'me', passwordEnv: 'T', passwordFile: '/p' }), { T: 'x' })).toEqual([
      'upstreams["docker.io"].auth: expected exactly one of passwordEnv, passwordFile or helper, got passwordEnv and passwordFile',
    ]);
    expect(problemsOf(withAuth({ username: 'me' }))).toEqual([
      'upstreams["docker.io"].auth: expected exactly one of passwordEnv, passwordFile or helper, got none',
    ]);
  });
});

describe('loadConfig', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-config-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('uses the defaults without a file, and applies overrides before freezing', async () => {
    expect(await loadConfig({ env: NO_ENV })).toEqual(parseConfig({}, NO_ENV));
    const config = await loadConfig({ env: NO_ENV, overrides: { port: 0, offline: true } });
    expect(config.listen.port).toBe(0);
    expect(config.offline).toBe(true);
    expect(Object.isFrozen(config.listen)).toBe(true);
  });

  it('reads and validates a file, naming it in the error', async () => {
    const file = join(dir, 'mirror.config.json');
    await writeFile(file, JSON.stringify({ listen: { port: 5001 } }));
    expect((await loadConfig({ file, env: NO_ENV })).listen.port).toBe(5001);
    await writeFile(file, JSON.stringify({ listen: { port: 'x' } }));
    await expect(loadConfig({ file, env: NO_ENV })).rejects.toThrow(`invalid configuration in ${file}:\n  listen.port:`);
  });

  it('turns a JSON syntax error into a ConfigError with the file, line and column', async () => {
    const file = join(dir, 'broken.json');
    await writeFile(file, '{\n  "listen": {\n    "port": 5000,\n  }\n}\n');
    const error = await loadConfig({ file, env: NO_ENV }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      { path: file, message: expect.stringMatching(/^invalid JSON at line 4, column 3: /) as unknown },
    ]);
  });

  it('places a truncated file at its end', async () => {
    const file = join(dir, 'truncated.json');
    await writeFile(file, '{\n  "listen": ');
    await expect(loadConfig({ file, env: NO_ENV })).rejects.toThrow(`${file}: invalid JSON at line 2, column 13: `);
  });

  it('reports a missing file as a ConfigError', async () => {
    const file = join(dir, 'absent.json');
    await expect(loadConfig({ file, env: NO_ENV })).rejects.toThrow(`${file}: cannot read the file (ENOENT)`);
  });

  it('rejects an override port out of range', async () => {
    await expect(loadConfig({ env: NO_ENV, overrides: { port: 65536 } })).rejects.toThrow(ConfigError);
  });
});
