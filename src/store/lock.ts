/**
 * Cross-process locks in the store directory, so several mirror processes (cluster
 * workers, replicas on one volume) can share one store: one fill per digest, one
 * evictor at a time, and no process deleting another's temp files.
 *
 * A lock is a directory `locks/<name>.lock` (layout.ts names both; proper-lockfile: mkdir is atomic on every
 * POSIX file system, NFS included). Its holder refreshes the directory's mtime every
 * `updateMs`; a lock not refreshed for `staleMs` belongs to a dead process and is taken
 * over by the next `tryLock`. A holder that could not refresh in time has lost the lock
 * ("compromised"): it is told through `onLost`, and must not assume exclusivity.
 */
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { mkdir, rm, stat } from 'node:fs/promises';
import lockfile from 'proper-lockfile';
import { createLayout } from './layout.js';

export interface Lease {
  /** False once another process may have taken the lock over. */
  readonly held: boolean;
  release(): Promise<void>;
}

export interface StoreLocks {
  /** Takes the lock now, or answers undefined when a live process holds it. */
  tryLock(name: string): Promise<Lease | undefined>;
  /** Held by a live process (a stale lock counts as free). */
  isLocked(name: string): Promise<boolean>;
  /** When a held lock was last refreshed by its holder (mtime, ms); undefined when not held. */
  refreshedAt(name: string): Promise<number | undefined>;
  /** Frees a lock whose holder is known to be dead (its own process lock is not held). */
  breakLock(name: string): Promise<void>;
}

export interface LockOptions {
  readonly staleMs?: number;
  readonly onLost?: (name: string, err: Error) => void;
}

/** proper-lockfile's floor for `stale` is 2 s, its refresh at most half of it. */
const DEFAULT_STALE_MS = 8_000;

export function createStoreLocks(root: string, options: LockOptions = {}): StoreLocks {
  const layout = createLayout(root);
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  // The lock directory is the path itself (`lockfilePath`), so layout.ts alone names it.
  const common = (name: string) => ({ realpath: false, stale: staleMs, lockfilePath: layout.lockPath(name) }) as const;

  async function tryLock(name: string): Promise<Lease | undefined> {
    const path = layout.lockPath(name);
    await mkdir(dirname(path), { recursive: true });
    let held = true;
    try {
      const release = await lockfile.lock(path, {
        ...common(name),
        update: Math.max(1000, Math.floor(staleMs / 4)),
        retries: 0,
        onCompromised: (err) => {
          held = false;
          options.onLost?.(name, err);
        },
      });
      return {
        get held() {
          return held;
        },
        async release() {
          if (!held) return;
          held = false;
          // Compromised meanwhile (onLost told): it is no longer ours to remove.
          await release().catch((err: unknown) => {
            const code = (err as NodeJS.ErrnoException).code;
            if (code !== 'ERELEASED' && code !== 'ENOTACQUIRED') throw err;
          });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOCKED') return undefined;
      throw err;
    }
  }

  async function isLocked(name: string): Promise<boolean> {
    return lockfile.check(layout.lockPath(name), common(name)).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    });
  }

  return {
    tryLock,
    isLocked,
    async refreshedAt(name) {
      if (!(await isLocked(name))) return undefined;
      const info = await stat(layout.lockPath(name)).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      });
      return info?.mtimeMs;
    },
    async breakLock(name) {
      await rm(layout.lockPath(name), { recursive: true, force: true });
    },
  };
}

/**
 * Who holds something: the instance id of the store that wrote it, made afresh each time a
 * store is opened. The owner is alive while its lock `process-<instance>` is held (refreshed,
 * not stale) — never because some process has its PID: a zombie or a restarted container
 * (same hostname, same PID 1) has a PID but no fresh lock.
 */
export interface Owner {
  readonly instance: string;
}

/** 16 hex characters; a new one for every store opened, so a restart is a new owner. */
export function newInstanceId(): string {
  return randomBytes(8).toString('hex');
}
