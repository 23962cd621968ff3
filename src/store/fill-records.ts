/**
 * Fill records, `tmp/fills/<hex>.json`: where the process holding the `fill-<hex>` lock
 * spools a digest, so other processes can follow its spool instead of fetching it again.
 * A record outlives its fill only after a crash; the sweep removes those.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { ifMissing, parseJson } from './fs-errors.js';
import { lockNames, parseFillRecordName, type StoreLayout } from './layout.js';
import { currentOwner, isDeadOwner, type Owner, type StoreLocks } from './lock.js';
import type { TempArea } from './temp-area.js';

/** What other processes need to follow a fill in progress. */
export interface FillRecord {
  readonly owner: Owner;
  /** The spool file being written; absent while the upstream has not answered yet. */
  readonly spool?: string;
  readonly sizeBytes?: number;
}

export interface FillRecords {
  write(digest: Digest, record: FillRecord): Promise<void>;
  find(digest: Digest): Promise<FillRecord | undefined>;
  remove(digest: Digest): Promise<void>;
  /** Removes records whose fill is over: unlocked, or locked by a process that is gone. */
  sweep(): Promise<number>;
}

export function createFillRecords(layout: StoreLayout, locks: StoreLocks, temp: TempArea): FillRecords {
  return {
    write: (digest, record) => temp.writeAtomic(layout.fillRecordPath(digest), JSON.stringify(record)),
    async find(digest) {
      const text = await readFile(layout.fillRecordPath(digest), 'utf8').catch(ifMissing(undefined));
      return text === undefined ? undefined : parseFillRecord(text);
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
          if (!isDeadOwner(await recordOwner(path))) continue;
          await locks.breakLock(lockNames.fill(digest));
        }
        await rm(path, { recursive: true, force: true });
        removed += 1;
      }
      return removed;
    },
  };
}

async function recordOwner(path: string): Promise<Owner> {
  const text = await readFile(path, 'utf8').catch(ifMissing(''));
  // Gone or damaged: judged by its lock alone.
  return parseFillRecord(text)?.owner ?? currentOwner();
}

function parseFillRecord(text: string): FillRecord | undefined {
  const raw = parseJson(text) as { owner?: { host?: unknown; pid?: unknown }; spool?: unknown; sizeBytes?: unknown } | undefined;
  const { host, pid } = raw?.owner ?? {};
  if (!raw || typeof host !== 'string' || typeof pid !== 'number') return undefined;
  return {
    owner: { host, pid },
    ...(typeof raw.spool === 'string' ? { spool: raw.spool } : {}),
    ...(typeof raw.sizeBytes === 'number' ? { sizeBytes: raw.sizeBytes } : {}),
  };
}
