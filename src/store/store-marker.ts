/**
 * The store is the mirror's own. A store the mirror initialises gets a marker file
 * (`oci-mirror-store.json`, layout.ts) with its format; the mirror opens a directory only when
 * it has that marker, is empty (or absent), or holds nothing but the names a store of an earlier
 * version has (it is adopted: the marker is added). Anything else — `/`, a system directory, a
 * directory with foreign files, a marker of a format this version does not know — is refused
 * before anything is created or deleted in it.
 */
import { mkdir, readdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { hasCode, ifMissing, parseJson } from './fs-errors.js';
import { STORE_MARKER, STORE_ROOT_NAMES, type StoreLayout } from './layout.js';

/** The store format this version writes and reads. */
export const STORE_FORMAT = 1;

/** `store.path` is not a store this mirror may use; the message is one line naming it. */
export class StoreRefusedError extends Error {
  readonly path: string;

  constructor(path: string, reason: string) {
    super(`store.path: ${path} ${reason}; refusing to use it as a store`);
    this.name = 'StoreRefusedError';
    this.path = path;
  }
}

/** Directories that belong to the system, never to a store (exact paths; anything under /proc, /sys too). */
const SYSTEM_DIRS: ReadonlySet<string> = new Set([
  '/',
  '/bin',
  '/boot',
  '/dev',
  '/etc',
  '/home',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/opt',
  '/proc',
  '/root',
  '/run',
  '/sbin',
  '/sys',
  '/tmp',
  '/usr',
  '/usr/bin',
  '/usr/lib',
  '/usr/local',
  '/usr/sbin',
  '/var',
  '/var/lib',
  '/var/log',
  '/var/tmp',
]);

/** Made by the file system on ext* volumes (a fresh volume mounted as the store). */
const VOLUME_NAMES: readonly string[] = ['lost+found'];

/** Checks that `layout.root` may be used as a store, and marks it as one; throws StoreRefusedError otherwise. */
export async function claimStore(layout: StoreLayout, createdBy: string): Promise<void> {
  const shown = layout.root;
  await refuseSystemDirectory(shown);
  const entries = await readdir(shown).catch(ifMissing(undefined));
  if (entries?.includes(STORE_MARKER)) return checkMarker(layout);
  const foreign = (entries ?? []).filter((e) => !STORE_ROOT_NAMES.includes(e) && !VOLUME_NAMES.includes(e));
  if (foreign.length > 0) {
    const named = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? ', …' : '');
    throw new StoreRefusedError(shown, `is not empty (${named}) and has no ${STORE_MARKER}`);
  }
  const marker = `${JSON.stringify({ format: STORE_FORMAT, createdBy })}\n`;
  await mkdir(shown, { recursive: true });
  await writeFile(layout.markerPath, marker, { flag: 'wx' }).catch((err: unknown) => {
    // Another process initialised it at the same moment: its marker is judged like any other.
    if (!hasCode(err, 'EEXIST')) throw err;
  });
  await checkMarker(layout);
}

async function refuseSystemDirectory(path: string): Promise<void> {
  const absolute = resolve(path);
  const real = await realpath(absolute).catch(ifMissing(absolute));
  for (const candidate of [absolute, real]) {
    if (SYSTEM_DIRS.has(candidate) || /^\/(proc|sys)\//.test(candidate)) {
      throw new StoreRefusedError(path, candidate === '/' ? 'is the root directory' : 'is a system directory');
    }
  }
}

async function checkMarker(layout: StoreLayout): Promise<void> {
  const raw = parseJson(await readFile(layout.markerPath, 'utf8')) as { format?: unknown } | undefined;
  const format = raw?.format;
  if (typeof format !== 'number') throw new StoreRefusedError(layout.root, `has an unreadable ${STORE_MARKER}`);
  if (format !== STORE_FORMAT) {
    const reason = `has store format ${format}, which this version (format ${STORE_FORMAT}) does not know`;
    throw new StoreRefusedError(layout.root, reason);
  }
}

/** `oci-mirror <version>`, from the package.json one level above src/ and dist/. */
export async function currentCreator(): Promise<string> {
  const text = await readFile(new URL('../../package.json', import.meta.url), 'utf8').catch(ifMissing('{}'));
  const { version } = (parseJson(text) ?? {}) as { version?: unknown };
  return `oci-mirror ${typeof version === 'string' ? version : 'unknown'}`;
}
