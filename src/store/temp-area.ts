/**
 * Each open store writes its temp files under its own `tmp/<instance>/`, held by the lock
 * `process-<instance>` (a new instance id at every start, lock.ts `Owner`). Nothing under tmp/
 * is ever content: a crash (kill -9 mid-fill) leaves at most a temp file, and a later sweep by
 * any process sharing the store removes the directories whose lock is no longer held (stale
 * or absent). A PID proves nothing: a zombie or a restarted container reuses it. Entries of
 * tmp/ whose names the mirror does not generate are not the mirror's and are left alone.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isProcessTempName, lockNames, processTempName, type StoreLayout } from './layout.js';
import { newInstanceId, type Lease, type Owner, type StoreLocks } from './lock.js';

/** A file in tmp/ being written; it reaches blobs/ only through a commit (blobs.ts). */
export interface TempFile {
  readonly path: string;
  readonly handle: FileHandle;
}

export interface TempArea {
  /** Who this temp area belongs to: recorded in fill records, judged by its process lock. */
  readonly owner: Owner;
  /** This process's temp directory. */
  readonly dir: string;
  open(): Promise<void>;
  /** A new, empty file in this process's temp directory. */
  createFile(): Promise<TempFile>;
  /** Small metadata files: temp, fsync, rename; a reader never sees half a file. */
  writeAtomic(path: string, text: string): Promise<void>;
  /** Removes what dead processes left behind; safe while others run. */
  sweep(): Promise<number>;
  close(): Promise<void>;
}

export function createTempArea(layout: StoreLayout, locks: StoreLocks): TempArea {
  const owner: Owner = { instance: newInstanceId() };
  const name = processTempName(owner);
  const dir = layout.processTempDir(name);
  const tempPath = (suffix: string): string => join(dir, `${Date.now()}-${randomBytes(8).toString('hex')}${suffix}`);
  let lease: Lease | undefined;

  /** A temp directory the mirror made whose owner no longer holds its lock. */
  async function isAbandoned(entry: string): Promise<boolean> {
    if (entry === name || !isProcessTempName(entry)) return false;
    return !(await locks.isLocked(lockNames.process(entry)));
  }

  async function writeAtomic(path: string, text: string): Promise<void> {
    const staged = tempPath('.meta');
    try {
      const handle = await open(staged, 'wx');
      try {
        await handle.writeFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await mkdir(dirname(path), { recursive: true });
      await rename(staged, path);
    } catch (err) {
      await rm(staged, { force: true });
      throw err;
    }
  }

  return {
    owner,
    dir,
    async open() {
      await mkdir(layout.fillsDir, { recursive: true });
      lease = await locks.tryLock(lockNames.process(name));
      if (!lease) throw new Error(`temp area ${name} is locked by another process`);
      await mkdir(dir, { recursive: true });
    },
    async createFile() {
      const path = tempPath('');
      const handle = await open(path, 'wx+');
      return { path, handle };
    },
    writeAtomic,
    async sweep() {
      let removed = 0;
      for (const entry of await readdir(layout.tmpDir)) {
        if (await isAbandoned(entry)) {
          await rm(layout.processTempDir(entry), { recursive: true, force: true });
          await locks.breakLock(lockNames.process(entry));
          removed += 1;
        }
      }
      return removed;
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
      await lease?.release();
      lease = undefined;
    },
  };
}
