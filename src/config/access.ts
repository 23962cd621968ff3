/**
 * The access parts of the config file: who may use the mirror (`clientAuth`) and what
 * each upstream mirrors (`upstreams.<host>.repositories`). Secrets travel by indirection:
 * the file names environment variables and an htpasswd file, never a password or token.
 */
import { findPatternProblem } from '../oci/repository-pattern.js';
import { describeValue, joinPath } from './errors.js';
import type { ConfigFile } from './file-types.js';
import type { ClientAuthConfig, RepositoryRules } from './types.js';

export type Env = Readonly<Record<string, string | undefined>>;

/** Where the semantic pass reports; `env` is the environment variables are read from. */
export interface Problems {
  readonly env: Env;
  report(path: string, message: string): void;
}

/** A token goes into a header: visible ASCII; short ones can be guessed. */
const TOKEN_PATTERN = /^[\x21-\x7e]{16,4096}$/;

/** The schema checks the pattern grammar; `findPatternProblem` also bounds the length. */
export function resolveRepositoryRules(at: Problems, rules: RepositoryRules, path: string): RepositoryRules {
  const list = (key: 'allow' | 'deny'): string[] =>
    rules[key].filter((pattern, i) => {
      const problem = findPatternProblem(pattern);
      if (problem !== undefined) at.report(`${joinPath(path, key)}[${i}]`, `${problem}, got ${describeValue(pattern)}`);
      return problem === undefined;
    });
  return { allow: list('allow'), deny: list('deny') };
}

export function resolveClientAuth(at: Problems, file: NonNullable<ConfigFile['clientAuth']>): ClientAuthConfig {
  const path = 'clientAuth';
  const { htpasswdFile, tokensEnv, metricsTokenEnv, realm, failedLoginsPerMinute } = file;
  const tokens = tokensEnv === undefined ? [] : readTokens(at, tokensEnv, `${path}.tokensEnv`);
  const metricsToken = metricsTokenEnv === undefined ? undefined : readTokens(at, metricsTokenEnv, `${path}.metricsTokenEnv`)[0];
  // eslint-disable-next-line no-control-regex -- control characters are exactly what a header value may not hold
  if (/["\\\x00-\x1f\x7f]/.test(realm))
    at.report(`${path}.realm`, `expected no quotes, backslashes or control characters, got ${describeValue(realm)}`);
  if (htpasswdFile === undefined && tokensEnv === undefined && metricsTokenEnv === undefined) {
    at.report(path, 'expected at least one of htpasswdFile, tokensEnv, metricsTokenEnv (leave clientAuth out for anonymous clients)');
  }
  return {
    ...(htpasswdFile === undefined ? {} : { htpasswdFile }),
    tokens,
    ...(metricsToken === undefined ? {} : { metricsToken }),
    realm,
    failedLoginsPerMinute,
  };
}

/** Tokens from the named variable, separated by commas or white space. */
function readTokens(at: Problems, name: string, path: string): string[] {
  const tokens = (at.env[name] ?? '').split(/[\s,]+/).filter((t) => t !== '');
  if (tokens.length === 0) at.report(path, `environment variable ${name} is not set or empty`);
  // Never echo a token: say which one, not what it is.
  tokens.forEach((token, i) => {
    if (!TOKEN_PATTERN.test(token)) at.report(path, `token ${i + 1} in ${name} must be 16 to 4096 visible ASCII characters`);
  });
  return tokens.filter((t) => TOKEN_PATTERN.test(t));
}
