/**
 * Where an upstream's user name and password come from, read at use so they can rotate
 * without a restart: a value from the environment (fixed), a file (a mounted Kubernetes
 * Secret, a token a CronJob refreshes; re-read when its mtime, size or inode changes), or
 * a Docker credential helper (`docker-credential-<name> get`, the protocol Docker and
 * Distribution's `proxy.exec` use; its answer cached for `helperTtlMs`). A refusal by the
 * upstream marks the answer stale so the next use reads or runs again, once.
 *
 * Secrets never leave here except as the returned value: errors name the file or helper,
 * never its output.
 */
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import type { UpstreamCredentials } from '../config/types.js';
import { UpstreamError } from './failure.js';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

export interface CredentialSource {
  get(): Promise<Credentials>;
  /** The upstream refused `sent`: the next get() re-reads the file or re-runs the helper. */
  refused(sent: Credentials): void;
}

/** Runs `docker-credential-<name> get` with `host` on stdin; resolves with its stdout. */
export type RunHelper = (name: string, host: string) => Promise<string>;

export interface CredentialDeps {
  /** The registry host the helper is asked about, e.g. `123.dkr.ecr.eu-west-1.amazonaws.com`. */
  readonly host: string;
  readonly now: () => number;
  readonly runHelper?: RunHelper;
}

const HELPER_TIMEOUT_MS = 30_000;
const MAX_HELPER_OUTPUT_BYTES = 64 * 1024;

export function createCredentialSource(config: UpstreamCredentials, deps: CredentialDeps): CredentialSource {
  if (config.helper !== undefined) return helperSource(config.helper, config.helperTtlMs ?? 0, deps);
  if (config.passwordFile !== undefined) return fileSource(config.username, config.passwordFile);
  const fixed: Credentials = { username: config.username, password: config.password ?? '' };
  return { get: () => Promise.resolve(fixed), refused: () => undefined };
}

function fileSource(username: string, path: string): CredentialSource {
  let cached: { readonly stamp: string; readonly credentials: Credentials } | undefined;
  let stale = false;
  return {
    async get() {
      const info = await stat(path).catch((err: unknown) => rethrowUnreadable(err, path));
      const stamp = `${info.mtimeMs}:${info.size}:${info.ino}`;
      if (cached !== undefined && cached.stamp === stamp && !stale) return cached.credentials;
      const text = await readFile(path, 'utf8').catch((err: unknown) => rethrowUnreadable(err, path));
      stale = false;
      cached = { stamp, credentials: { username, password: text.replace(/\r?\n$/, '') } };
      return cached.credentials;
    },
    refused(sent) {
      if (cached?.credentials.password === sent.password) stale = true;
    },
  };
}

/** ENOENT, EACCES and the like become an upstream error naming the file; the rest is rethrown. */
function rethrowUnreadable(err: unknown, path: string): never {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'EPERM') {
    throw new UpstreamError('UNAVAILABLE', `upstream password file ${path} is unreadable (${code})`, 'invalid');
  }
  throw err;
}

function helperSource(name: string, ttlMs: number, deps: CredentialDeps): CredentialSource {
  const run = deps.runHelper ?? runDockerCredentialHelper;
  let cached: { readonly credentials: Credentials; readonly expiresAt: number } | undefined;
  let running: Promise<Credentials> | undefined;
  return {
    get() {
      if (cached !== undefined && deps.now() < cached.expiresAt) return Promise.resolve(cached.credentials);
      running ??= run(name, deps.host)
        .then((out) => {
          const credentials = parseHelperOutput(out, name);
          cached = { credentials, expiresAt: deps.now() + ttlMs };
          return credentials;
        })
        .finally(() => {
          running = undefined;
        });
      return running;
    },
    refused(sent) {
      if (cached?.credentials.password === sent.password) cached = undefined;
    },
  };
}

/** `{"ServerURL": …, "Username": …, "Secret": …}` (docker-credential-helpers, client/client.go). */
function parseHelperOutput(out: string, name: string): Credentials {
  let parsed: unknown;
  try {
    parsed = JSON.parse(out);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    throw helperError(name, 'answered something that is not JSON');
  }
  const record = (parsed !== null && typeof parsed === 'object' ? parsed : {}) as Record<string, unknown>;
  const username = record['Username'];
  const secret = record['Secret'];
  if (typeof username !== 'string' || typeof secret !== 'string' || secret === '') {
    throw helperError(name, 'answered without Username and Secret');
  }
  return { username, password: secret };
}

function runDockerCredentialHelper(name: string, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      `docker-credential-${name}`,
      ['get'],
      { timeout: HELPER_TIMEOUT_MS, maxBuffer: MAX_HELPER_OUTPUT_BYTES, encoding: 'utf8' },
      (err, stdout) => {
        // stderr and stdout may hold secrets: only the exit status goes into the error.
        if (err) return reject(helperError(name, `failed (${err.code ?? err.signal ?? 'error'})`));
        resolve(stdout);
      },
    );
    child.stdin?.end(host);
  });
}

function helperError(name: string, what: string): UpstreamError {
  return new UpstreamError('UNAVAILABLE', `credential helper docker-credential-${name} ${what}`, 'invalid');
}
