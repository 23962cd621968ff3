/**
 * Each process writes its temp files under its own `tmp/<process>/`, held by the lock
 * `process-<process>`. Nothing under tmp/ is ever content: a crash (kill -9 mid-fill)
 * leaves at most a temp file, and the next start-up of any process sharing the store
 * removes the directories of processes that are gone — dead on this host, or whose
 * lock went stale — and fill records (`tmp/fills/<hex>.json`) no live fill holds.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoreLayout } from './layout.js';
import { currentOwner, isDeadOwner, type Lease, type Owner, type StoreLocks } from './lock.js';

/** What other processes need to follow a fill in progress (tmp/fills/<hex>.json). */
export interface FillRecord {
  readonly owner: Owner;
  /** The spool file being written; absent while the upstream has not answered yet. */
  readonly spool?: string;
  readonly sizeBytes?: number;
}

export interface TempArea {
  /** This process's temp directory. */
  readonly dir: string;
  open(): Promise<void>;
  /** Removes what dead processes left behind; safe while others run. */
  sweep(): Promise<number>;
  close(): Promise<void>;
}

const FILLS = 'fills';

export function createTempArea(layout: StoreLayout, locks: StoreLocks): TempArea {
  const owner = currentOwner();
  // `p<pid>-<random>@<host>`: the owner can be read back from the name alone.
  const name = `p${owner.pid}-${randomBytes(4).toString('hex')}@${owner.host}`;
  const dir = join(layout.tmpDir, name);
  let lease: Lease | undefined;

  async function isAbandoned(entry: string): Promise<boolean> {
    const parsed = /^p(\d+)-[0-9a-f]+@(.+)$/.exec(entry);
    if (!parsed) return true;
    if (isDeadOwner({ pid: Number(parsed[1]), host: parsed[2] as string })) {
      await locks.breakLock(`process-${entry}`);
      return true;
    }
    return !(await locks.isLocked(`process-${entry}`));
  }

  /** Fill records whose fill is over: unlocked, or locked by a process that is gone. */
  async function sweepFillRecords(): Promise<number> {
    let removed = 0;
    for (const file of await readdir(layout.fillsDir).catch(() => [])) {
      const path = join(layout.fillsDir, file);
      const lock = `fill-${file.replace(/\.json$/, '')}`;
      if (file.endsWith('.json') && (await locks.isLocked(lock))) {
        if (!isDeadOwner(await recordOwner(path))) continue;
        await locks.breakLock(lock);
      }
      await rm(path, { recursive: true, force: true });
      removed += 1;
    }
    return removed;
  }

  return {
    dir,
    async open() {
      await mkdir(layout.fillsDir, { recursive: true });
      lease = await locks.tryLock(`process-${name}`);
      if (!lease) throw new Error(`temp area ${name} is locked by another process`);
      await mkdir(dir, { recursive: true });
    },
    async sweep() {
      let removed = 0;
      for (const entry of await readdir(layout.tmpDir)) {
        if (entry === FILLS || entry === name) continue;
        if (await isAbandoned(entry)) {
          await rm(join(layout.tmpDir, entry), { recursive: true, force: true });
          await locks.breakLock(`process-${entry}`);
          removed += 1;
        }
      }
      return removed + (await sweepFillRecords());
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
      await lease?.release();
      lease = undefined;
    },
  };
}

async function recordOwner(path: string): Promise<Owner> {
  const text = await readFile(path, 'utf8').catch(() => '');
  // Unreadable: judged by its lock alone.
  return parseFillRecord(text)?.owner ?? currentOwner();
}

export function parseFillRecord(text: string): FillRecord | undefined {
  try {
    const raw = JSON.parse(text) as { owner?: { host?: unknown; pid?: unknown }; spool?: unknown; sizeBytes?: unknown };
    const { host, pid } = raw.owner ?? {};
    if (typeof host !== 'string' || typeof pid !== 'number') return undefined;
    return {
      owner: { host, pid },
      ...(typeof raw.spool === 'string' ? { spool: raw.spool } : {}),
      ...(typeof raw.sizeBytes === 'number' ? { sizeBytes: raw.sizeBytes } : {}),
    };
  } catch {
    return undefined;
  }
}
