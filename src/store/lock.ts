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
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
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
  /** Frees a lock whose holder is known to be dead (same host, no such process). */
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

  return {
    tryLock,
    async isLocked(name) {
      return lockfile.check(layout.lockPath(name), common(name)).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw err;
      });
    },
    async breakLock(name) {
      await rm(layout.lockPath(name), { recursive: true, force: true });
    },
  };
}

/** Who holds something, recorded beside it so others can tell a dead holder quickly. */
export interface Owner {
  readonly host: string;
  readonly pid: number;
}

export function currentOwner(): Owner {
  return { host: hostname(), pid: process.pid };
}

/**
 * True only when the owner certainly is gone: same host name and no such process.
 * Another host (a replica on a shared volume) is never judged; its locks go stale.
 */
export function isDeadOwner(owner: Owner): boolean {
  if (owner.host !== hostname() || owner.pid === process.pid) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
