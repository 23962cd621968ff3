/**
 * Fill records, `tmp/fills/<hex>.json`: where the process holding the `fill-<hex>` lock
 * spools a digest, so other processes can follow its spool instead of fetching it again.
 * A record outlives its fill only after a crash; `find` and the sweep remove those.
 *
 * A record names its owner by instance id (lock.ts `Owner`); the owner is alive while its
 * `process-<instance>` lock is held. Held is not enough to follow its spool: a process killed
 * a moment ago still has a fresh lock for up to the stale time, and following it would stream
 * a spool that never grows. So a spool is followed only once its owner has proved alive since
 * this store opened: its lock was refreshed after we opened, or changed while we watched.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { ifMissing, parseJson } from './fs-errors.js';
import { lockNames, parseFillRecordName, type StoreLayout } from './layout.js';
import type { Owner, StoreLocks } from './lock.js';
import type { TempArea } from './temp-area.js';

/** What other processes need to follow a fill in progress. */
export interface FillRecord {
  readonly owner: Owner;
  /** The spool file being written; absent while the upstream has not answered yet. */
  readonly spool?: string;
  readonly sizeBytes?: number;
}

/** How a record's owner is judged: proved alive, not yet known, or gone (its lock not held). */
type OwnerState = 'alive' | 'unproven' | 'dead';

export interface FillRecords {
  write(digest: Digest, record: FillRecord): Promise<void>;
  /**
   * The record of a fill whose owner is proved alive; undefined otherwise. A record whose
   * owner is dead is removed and its fill lock freed, so the next `tryLock` leads afresh.
   */
  find(digest: Digest): Promise<FillRecord | undefined>;
  remove(digest: Digest): Promise<void>;
  /** Removes records whose fill is over: unlocked, or locked by a process that is gone. */
  sweep(): Promise<number>;
}

export function createFillRecords(layout: StoreLayout, locks: StoreLocks, temp: TempArea): FillRecords {
  const openedMs = Date.now();
  /**
   * proper-lockfile sets a lock's mtime up to a second ahead (it rounds up to whole seconds
   * when it judges the file system's precision to be seconds, and its precision probe
   * writes one): only a refresh past that margin proves a peer alive after we opened.
   */
  const provedAfterMs = openedMs + 1_000;
  /** Per owner not yet dead: proved alive, or the lock mtime first seen while unproven. */
  const seen = new Map<string, number | 'alive'>();

  async function ownerState(owner: Owner | undefined): Promise<OwnerState> {
    // A record of an earlier version names a PID: judged by the fill lock alone.
    if (!owner) return 'unproven';
    if (owner.instance === temp.owner.instance) return 'alive';
    const refreshedMs = await locks.refreshedAt(lockNames.process(owner.instance));
    const before = seen.get(owner.instance);
    if (refreshedMs === undefined) {
      seen.delete(owner.instance);
      return 'dead';
    }
    if (before === 'alive' || refreshedMs > provedAfterMs || (before !== undefined && refreshedMs !== before)) {
      seen.set(owner.instance, 'alive');
      return 'alive';
    }
    seen.set(owner.instance, refreshedMs);
    return 'unproven';
  }

  /** Removes a dead owner's record and frees its fill lock, unless a new leader replaced the record meanwhile. */
  async function clear(digest: Digest, path: string, text: string): Promise<void> {
    if ((await readFile(path, 'utf8').catch(ifMissing(undefined))) !== text) return;
    await locks.breakLock(lockNames.fill(digest));
    await rm(path, { force: true });
  }

  return {
    write: (digest, record) => temp.writeAtomic(layout.fillRecordPath(digest), JSON.stringify(record)),
    async find(digest) {
      const path = layout.fillRecordPath(digest);
      const text = await readFile(path, 'utf8').catch(ifMissing(undefined));
      if (text === undefined) return undefined;
      const record = parseFillRecord(text);
      const state = await ownerState(record?.owner);
      if (state === 'dead') await clear(digest, path, text);
      return state === 'alive' && record?.owner ? { ...record, owner: record.owner } : undefined;
    },
    async remove(digest) {
      await rm(layout.fillRecordPath(digest), { force: true });
    },
    async sweep() {
      let removed = 0;
      for (const file of await readdir(layout.fillsDir).catch(ifMissing([]))) {
        const path = join(layout.fillsDir, file);
        const digest = parseFillRecordName(file);
        if (digest && (await locks.isLocked(lockNames.fill(digest)))) {
          const text = await readFile(path, 'utf8').catch(ifMissing(''));
          if ((await ownerState(parseFillRecord(text)?.owner)) !== 'dead') continue;
          await locks.breakLock(lockNames.fill(digest));
        }
        await rm(path, { recursive: true, force: true });
        removed += 1;
      }
      return removed;
    },
  };
}

/** A record as written; one whose owner is not an instance id (an earlier version's) has no owner. */
function parseFillRecord(text: string): (Omit<FillRecord, 'owner'> & { owner?: Owner }) | undefined {
  const raw = parseJson(text) as { owner?: { instance?: unknown }; spool?: unknown; sizeBytes?: unknown } | undefined;
  if (!raw || typeof raw !== 'object') return undefined;
  const instance = raw.owner?.instance;
  return {
    ...(typeof instance === 'string' && /^[0-9a-f]{16}$/.test(instance) ? { owner: { instance } } : {}),
    ...(typeof raw.spool === 'string' ? { spool: raw.spool } : {}),
    ...(typeof raw.sizeBytes === 'number' ? { sizeBytes: raw.sizeBytes } : {}),
  };
}
