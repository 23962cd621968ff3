import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/index.js';
import { createUpstreamTable } from '../../src/oci/upstream-table.js';
import { RegistryError } from '../../src/oci/errors.js';
import { routeName } from '../../src/oci/path.js';
import { compilePattern, createRepositoryFilter, findPatternProblem } from '../../src/oci/repository-pattern.js';
import { isLocalAddress, isLocalHost, lookupWithoutLocal } from '../../src/upstream/local-address.js';

function problemsOf(input: unknown, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(input, env);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
}

describe('local addresses', () => {
  it.each([
    '127.0.0.1',
    '127.1.2.3',
    '0.0.0.0',
    '169.254.169.254',
    '::1',
    '[::1]',
    '::',
    '0:0:0:0:0:0:0:1',
    '::ffff:127.0.0.1',
    '[::ffff:7f00:1]',
    '::ffff:169.254.169.254',
    'fe80::1',
    'FEBF::abcd',
  ])('%s is local', (address) => {
    expect(isLocalAddress(address)).toBe(true);
  });

  it.each([
    '10.0.0.1',
    '192.168.1.1',
    '172.16.0.1',
    '8.8.8.8',
    '169.253.1.1',
    '128.0.0.1',
    '2001:db8::1',
    'fec0::1',
    '::ffff:8.8.8.8',
    'ghcr.io',
  ])('%s is not', (address) => {
    expect(isLocalAddress(address)).toBe(false);
  });

  it('takes localhost names as local, other names as not (their addresses are checked at connect time)', () => {
    expect(isLocalHost('localhost')).toBe(true);
    expect(isLocalHost('LOCALHOST.')).toBe(true);
    expect(isLocalHost('registry.localhost')).toBe(true);
    expect(isLocalHost('localhost.example.com')).toBe(false);
    expect(isLocalHost('ghcr.io')).toBe(false);
  });

  it('a lookup that drops local addresses for every host but the upstream its own', async () => {
    const lookup = lookupWithoutLocal('localhost');
    const resolve = (host: string, all: boolean) =>
      new Promise<unknown>((done) => lookup(host, { all }, (err, address) => done(err ?? address)));
    expect(await resolve('localhost', true)).not.toBeInstanceOf(Error);
    const strict = lookupWithoutLocal('registry.example');
    const refused = await new Promise<unknown>((done) => strict('localhost', {}, (err) => done(err)));
    expect(refused).toMatchObject({ code: 'ERR_LOCAL_ADDRESS' });
  });
});

describe('repository patterns', () => {
  it('* stays within a component, ** crosses them, the rest is literal', () => {
    expect(compilePattern('library/*').test('library/alpine')).toBe(true);
    expect(compilePattern('library/*').test('library/a/b')).toBe(false);
    expect(compilePattern('org/**').test('org/a/b/c')).toBe(true);
    expect(compilePattern('org/**').test('org')).toBe(false);
    expect(compilePattern('team-*/app').test('team-x/app')).toBe(true);
    expect(compilePattern('a.b').test('axb')).toBe(false);
  });

  it('deny wins over allow; no allow list allows what is not denied', () => {
    const filter = createRepositoryFilter({ allow: ['org/**', 'library/*'], deny: ['org/secret/**'] });
    expect(filter.allows('org/app')).toBe(true);
    expect(filter.allows('library/alpine')).toBe(true);
    expect(filter.allows('org/secret/app')).toBe(false);
    expect(filter.allows('other/app')).toBe(false);
    expect(createRepositoryFilter({ allow: [], deny: ['bad/*'] }).allows('good/one')).toBe(true);
  });

  it('has a schema pattern that agrees with the parser', () => {
    const schema = JSON.parse(readFileSync(new URL('../../mirror.config.schema.json', import.meta.url), 'utf8')) as {
      $defs: { upstream: { properties: { repositories: { properties: { allow: { items: { pattern: string } } } } } } };
    };
    const pattern = new RegExp(schema.$defs.upstream.properties.repositories.properties.allow.items.pattern);
    for (const sample of [
      'a',
      'library/*',
      '**',
      'org/**/app',
      '*-x/y',
      '',
      'Org/*',
      'a//b',
      '../x',
      '.hidden/*',
      '_x',
      'a b',
      '/a',
      'a/',
    ]) {
      expect(pattern.test(sample), sample).toBe(findPatternProblem(sample) === undefined);
    }
  });

  it('refuses patterns outside the name grammar', () => {
    for (const bad of ['', 'Org/*', 'a//b', '../x', '.hidden/*', '_x', 'a/%2e', 'a b', 'x'.repeat(256)])
      expect(findPatternProblem(bad), bad).toBeDefined();
    for (const good of ['a', 'library/*', '**', 'org/**/app', 'a-b_c.d/*-x']) expect(findPatternProblem(good), good).toBeUndefined();
  });
});

describe('access configuration', () => {
  const upstreams = (extra: Record<string, unknown>) => ({
    defaultUpstream: 'docker.io',
    upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', library: true, ...extra } },
  });

  it('routes only allowed repositories, after library/ folding, with DENIED', () => {
    const config = parseConfig(upstreams({ repositories: { allow: ['library/*', 'org/**'], deny: ['org/secret/**'] } }), {});
    const table = createUpstreamTable(config);
    expect(routeName('alpine', undefined, table)).toEqual({ upstream: 'docker.io', repository: 'library/alpine' });
    expect(routeName('org/a/b', undefined, table).repository).toBe('org/a/b');
    for (const name of ['org/secret/x', 'other/app', 'library/a/b']) {
      let error: unknown;
      try {
        routeName(name, undefined, table);
      } catch (err) {
        error = err;
      }
      expect(error, name).toBeInstanceOf(RegistryError);
      expect(error).toMatchObject({ code: 'DENIED', statusCode: 403 });
    }
  });

  it('refuses a pin of a denied repository at start-up', () => {
    const problems = problemsOf({ ...upstreams({ repositories: { deny: ['library/*'] } }), store: { pins: ['alpine:3.20'] } });
    expect(problems.join('\n')).toMatch(/store\.pins\[0\].*not mirrored/);
  });

  it('reports bad patterns and keys with their paths', () => {
    expect(problemsOf(upstreams({ repositories: { allow: ['Bad'], deny: 'x', other: [] } }))).toEqual([
      'upstreams["docker.io"].repositories.other: unknown key (allowed: allow, deny)',
      'upstreams["docker.io"].repositories.allow[0]: expected lowercase name components, "*" or "**", separated by "/", got "Bad"',
      'upstreams["docker.io"].repositories.deny: expected an array, got "x"',
    ]);
    expect(problemsOf(upstreams({ allowLocalRedirects: 'yes' }))).toEqual([
      'upstreams["docker.io"].allowLocalRedirects: expected true or false, got "yes"',
    ]);
  });

  it('reads client auth from the environment and an htpasswd path, never the file', () => {
    const env = { TOKENS: 'aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbbbb', METRICS: 'mmmmmmmmmmmmmmmm' };
    const config = parseConfig({ clientAuth: { htpasswdFile: '/etc/htpasswd', tokensEnv: 'TOKENS', metricsTokenEnv: 'METRICS' } }, env);
    expect(config.clientAuth).toEqual({
      htpasswdFile: '/etc/htpasswd',
      tokens: ['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbb'],
      metricsToken: 'mmmmmmmmmmmmmmmm',
      realm: 'oci-mirror',
      failedLoginsPerMinute: 10,
    });
    expect(parseConfig({}, {}).clientAuth).toBeUndefined();
  });

  it('refuses empty, short or missing tokens without printing them, and an empty clientAuth', () => {
    const problems = problemsOf(
      { clientAuth: { tokensEnv: 'TOKENS', metricsTokenEnv: 'NOPE', realm: 'a"b' } },
      { TOKENS: 'short-secret,ok-but-long-enough-token' },
    );
    expect(problems).toEqual([
      'clientAuth.tokensEnv: token 1 in TOKENS must be 16 to 4096 visible ASCII characters',
      'clientAuth.metricsTokenEnv: environment variable NOPE is not set or empty',
      'clientAuth.realm: expected no quotes, backslashes or control characters, got "a\\"b"',
    ]);
    expect(problems.join('\n')).not.toContain('short-secret');
    expect(problemsOf({ clientAuth: {} })).toEqual([
      'clientAuth: expected at least one of htpasswdFile, tokensEnv, metricsTokenEnv (leave clientAuth out for anonymous clients)',
    ]);
    expect(problemsOf({ clientAuth: { tokens: ['inline-token-is-refused'] } })[0]).toMatch(/^clientAuth\.tokens: unknown key/);
  });
});
