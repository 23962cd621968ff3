/**
 * Exit codes of the `oci-mirror` bin, and the start-up failures that get one plain line
 * (cause and config key) instead of a stack trace.
 *
 *   0  done
 *   1  failed while running (an image that did not warm, export or import; no mirror answered `stats`)
 *   2  bad usage or configuration (unknown option, invalid config file)
 *   3  the environment refused to start: address in use, no such host, permission denied,
 *      read-only or missing store, missing file
 */
import { mkdir, open, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_ENVIRONMENT = 3;

/** A failure to start that names its cause and the config key (or argument) to change. */
export class StartupError extends Error {
  override readonly name = 'StartupError';
  constructor(
    readonly key: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${key}: ${message}`, options);
  }
}

function codeOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

const LISTEN_CAUSES: Readonly<Record<string, { key: string; say: (where: string, host: string) => string }>> = {
  EADDRINUSE: { key: 'listen.port', say: (where) => `${where} is already in use by another process` },
  EACCES: { key: 'listen.port', say: (where) => `permission denied to listen on ${where} (ports below 1024 need privileges)` },
  EADDRNOTAVAIL: { key: 'listen.host', say: (_where, host) => `${host} is not an address of this machine` },
  ENOTFOUND: { key: 'listen.host', say: (_where, host) => `no such host "${host}"` },
  EAI_AGAIN: { key: 'listen.host', say: (_where, host) => `cannot resolve "${host}" now (DNS lookup failed)` },
};

/** A listen() failure as a StartupError, or the error itself when it is not a known cause. */
export function listenFailure(err: unknown, host: string, port: number): unknown {
  const code = codeOf(err);
  const cause = code === undefined ? undefined : LISTEN_CAUSES[code];
  if (!cause) return err;
  return new StartupError(cause.key, `${cause.say(`${host}:${port}`, host)} (${code})`, { cause: err });
}

const STORE_CODES = new Set(['ENOENT', 'ENOTDIR', 'EROFS', 'EACCES', 'EPERM', 'ENOSPC']);

/**
 * A store that cannot be opened, as a StartupError naming the real cause. A recursive
 * mkdir reports ENOENT on a read-only file system, so the nearest existing ancestor is
 * inspected and one directory is created beneath it to learn why.
 */
export async function storeFailure(err: unknown, storePath: string): Promise<unknown> {
  const code = codeOf(err);
  if (code === undefined || !STORE_CODES.has(code)) return err;
  const reason = await diagnoseDirectory((err as NodeJS.ErrnoException).path ?? storePath);
  return new StartupError('store.path', `cannot use ${storePath} as the store: ${reason ?? (err as Error).message}`, { cause: err });
}

async function diagnoseDirectory(path: string): Promise<string | undefined> {
  let child = path;
  let parent = dirname(path);
  while (parent !== child) {
    const info = await stat(parent).catch((err: unknown) => {
      if (codeOf(err) === 'ENOENT' || codeOf(err) === 'ENOTDIR') return undefined;
      throw err;
    });
    if (info && !info.isDirectory()) return `${parent} is not a directory (ENOTDIR)`;
    if (info) return probeMkdir(child);
    child = parent;
    parent = dirname(parent);
  }
  return undefined;
}

const MKDIR_REASONS: Readonly<Record<string, string>> = {
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device',
};

/** Creates `dir` (whose parent exists) to learn why the store could not be; removes nothing it did not make. */
async function probeMkdir(dir: string): Promise<string | undefined> {
  try {
    await mkdir(dir);
    return undefined;
  } catch (err) {
    const code = codeOf(err);
    if (code === 'EEXIST') return undefined;
    if (code !== undefined && MKDIR_REASONS[code]) return `${dirname(dir)}: ${MKDIR_REASONS[code]} (${code})`;
    throw err;
  }
}

/** Rejects with a StartupError naming `key` unless `path` is a file this process can read. */
export async function checkReadableFile(key: string, path: string): Promise<void> {
  try {
    const handle = await open(path, 'r');
    const info = await handle.stat().finally(() => handle.close());
    if (info.isDirectory()) throw Object.assign(new Error(`EISDIR: ${path}`), { code: 'EISDIR' });
  } catch (err) {
    throw fileFailure(err, key, path);
  }
}

/** A file named on the command line (or in the config) that cannot be read. */
function fileFailure(err: unknown, key: string, path: string): unknown {
  const code = codeOf(err);
  if (code === 'ENOENT') return new StartupError(key, `no such file ${path} (ENOENT)`, { cause: err });
  if (code === 'EACCES' || code === 'EPERM') return new StartupError(key, `permission denied reading ${path} (${code})`, { cause: err });
  if (code === 'EISDIR') return new StartupError(key, `${path} is a directory, not a file (EISDIR)`, { cause: err });
  return err;
}
