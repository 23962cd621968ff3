/**
 * Each process writes its temp files under its own `tmp/<process>/`, held by the lock
 * `process-<process>`. Nothing under tmp/ is ever content: a crash (kill -9 mid-fill)
 * leaves at most a temp file, and the next start-up of any process sharing the store
 * removes the directories of processes that are gone — dead on this host, or whose
 * lock went stale.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { lockNames, parseProcessTempName, processTempName, type StoreLayout } from './layout.js';
import { currentOwner, isDeadOwner, type Lease, type StoreLocks } from './lock.js';

/** A file in tmp/ being written; it reaches blobs/ only through a commit (blobs.ts). */
export interface TempFile {
  readonly path: string;
  readonly handle: FileHandle;
}

export interface TempArea {
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
  const name = processTempName(currentOwner(), randomBytes(4).toString('hex'));
  const dir = layout.processTempDir(name);
  const tempPath = (suffix: string): string => join(dir, `${Date.now()}-${randomBytes(8).toString('hex')}${suffix}`);
  let lease: Lease | undefined;

  async function isAbandoned(entry: string): Promise<boolean> {
    const owner = parseProcessTempName(entry);
    if (!owner) return true;
    if (isDeadOwner(owner)) {
      await locks.breakLock(lockNames.process(entry));
      return true;
    }
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
        if (entry === name || layout.processTempDir(entry) === layout.fillsDir) continue;
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
