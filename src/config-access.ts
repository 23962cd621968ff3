/**
 * The access parts of the config file: who may use the mirror (`clientAuth`) and what
 * each upstream mirrors (`upstreams.<host>.repositories`). Secrets travel by indirection:
 * the file names environment variables and an htpasswd file, never a password or token.
 */
import type { ClientAuthConfig, RepositoryRules } from './config-types.js';
import { describeValue, joinPath, type Reader } from './config-reader.js';
import { findPatternProblem } from './oci/repository-pattern.js';

export interface ClientAuthFile {
  readonly htpasswdFile?: string;
  readonly tokensEnv?: string;
  readonly metricsTokenEnv?: string;
  readonly realm?: string;
}

export interface RepositoriesFile {
  readonly allow?: readonly string[];
  readonly deny?: readonly string[];
}

export const CLIENT_AUTH_KEYS = ['htpasswdFile', 'tokensEnv', 'metricsTokenEnv', 'realm'] as const;
export const REPOSITORIES_KEYS = ['allow', 'deny'] as const;

const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A token goes into a header: visible ASCII; short ones can be guessed. */
const TOKEN_PATTERN = /^[\x21-\x7e]{16,4096}$/;
const DEFAULT_REALM = 'oci-mirror';

export function readRepositoryRules(rd: Reader, raw: unknown, path: string): RepositoryRules {
  const o = rd.object(raw, path, REPOSITORIES_KEYS);
  const list = (key: 'allow' | 'deny'): string[] => {
    if (o[key] === undefined) return [];
    return rd.array(o[key], joinPath(path, key)).flatMap((value, i) => {
      const at = `${joinPath(path, key)}[${i}]`;
      const pattern = rd.string(value, at);
      const problem = pattern === '' ? undefined : findPatternProblem(pattern);
      if (problem !== undefined) rd.report(at, `${problem}, got ${describeValue(value)}`);
      return pattern === '' || problem !== undefined ? [] : [pattern];
    });
  };
  return { allow: list('allow'), deny: list('deny') };
}

export function readClientAuth(rd: Reader, raw: unknown): ClientAuthConfig {
  const path = 'clientAuth';
  const o = rd.object(raw, path, CLIENT_AUTH_KEYS);
  const htpasswdFile = o.htpasswdFile === undefined ? undefined : rd.string(o.htpasswdFile, `${path}.htpasswdFile`);
  const tokens = o.tokensEnv === undefined ? [] : readTokens(rd, o.tokensEnv, `${path}.tokensEnv`);
  const metricsToken = o.metricsTokenEnv === undefined ? undefined : readTokens(rd, o.metricsTokenEnv, `${path}.metricsTokenEnv`)[0];
  const realm = o.realm === undefined ? DEFAULT_REALM : rd.string(o.realm, `${path}.realm`);
  if (/["\\\x00-\x1f\x7f]/.test(realm)) rd.report(`${path}.realm`, `expected no quotes, backslashes or control characters, got ${describeValue(realm)}`);
  if (htpasswdFile === undefined && o.tokensEnv === undefined && o.metricsTokenEnv === undefined) {
    rd.report(path, 'expected at least one of htpasswdFile, tokensEnv, metricsTokenEnv (leave clientAuth out for anonymous clients)');
  }
  return {
    ...(htpasswdFile ? { htpasswdFile } : {}),
    tokens,
    ...(metricsToken ? { metricsToken } : {}),
    realm,
  };
}

/** Tokens from the named variable, separated by commas or white space. */
function readTokens(rd: Reader, raw: unknown, path: string): string[] {
  const name = rd.string(raw, path);
  if (name === '') return [];
  if (!ENV_NAME_PATTERN.test(name)) {
    rd.report(path, `expected an environment variable name like "OCI_MIRROR_TOKENS", got ${describeValue(name)}`);
    return [];
  }
  const tokens = (rd.env[name] ?? '').split(/[\s,]+/).filter((t) => t !== '');
  if (tokens.length === 0) rd.report(path, `environment variable ${name} is not set or empty`);
  // Never echo a token: say which one, not what it is.
  tokens.forEach((token, i) => {
    if (!TOKEN_PATTERN.test(token)) rd.report(path, `token ${i + 1} in ${name} must be 16 to 4096 visible ASCII characters`);
  });
  return tokens.filter((t) => TOKEN_PATTERN.test(t));
}
