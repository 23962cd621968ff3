import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseDigest } from '../../src/oci/digest.js';
import { lockNames } from '../../src/store/layout.js';
import { createStoreLocks } from '../../src/store/lock.js';
import { createStore, type Store } from '../../src/store/store.js';

const HEX = 'cd'.padEnd(64, '1');
const digest = parseDigest(`sha256:${HEX}`);
const PREVIOUS = '0123456789abcdef';

/**
 * A fill's owner is alive while its process lock is held and refreshed, never because some
 * process has its PID: a restarted container has the same hostname and PID 1, a killed child
 * of a parent that does not reap it stays a zombie with its PID taken.
 */
describe('store liveness', () => {
  let dir: string;
  const opened: Store[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-liveness-'));
  });

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
    await rm(dir, { recursive: true, force: true });
  });

  async function open(staleMs = 8_000): Promise<Store> {
    const store = createStore(dir, createStoreLocks(dir, { staleMs }));
    await store.init();
    opened.push(store);
    return store;
  }

  /** What a process with this instance id left mid-fill: a spool, its record, and its fill lock. */
  async function leftBehind(instance: string, lockAgeMs = 0): Promise<string> {
    const spool = join(dir, 'tmp', instance, 'spool');
    await mkdir(join(dir, 'tmp', instance), { recursive: true });
    await writeFile(spool, Buffer.alloc(1024, 1));
    await mkdir(join(dir, 'tmp', 'fills'), { recursive: true });
    // Same hostname and PID as this process: what a restarted container finds.
    const owner = { instance, host: hostname(), pid: process.pid };
    await writeFile(join(dir, 'tmp', 'fills', `${HEX}.json`), JSON.stringify({ owner, spool, sizeBytes: 4096 }));
    await mkdir(join(dir, 'locks', `fill-${HEX}.lock`), { recursive: true });
    if (lockAgeMs > 0) await age(`fill-${HEX}`, lockAgeMs);
    return spool;
  }

  async function age(lock: string, ageMs: number): Promise<void> {
    const when = new Date(Date.now() - ageMs);
    await utimes(join(dir, 'locks', `${lock}.lock`), when, when);
  }

  it('treats a predecessor with the same PID and hostname but another instance id as dead at start-up', async () => {
    await leftBehind(PREVIOUS);
    const store = await open();
    expect(await readdir(join(dir, 'tmp'))).not.toContain(PREVIOUS);
    expect(await readdir(join(dir, 'tmp', 'fills'))).toEqual([]);
    const lease = await store.locks.tryLock(lockNames.fill(digest));
    expect(lease?.held).toBe(true);
    await lease?.release();
  });

  it('never hands out the spool of an owner whose process lock is not held, and frees its fill lock', async () => {
    const store = await open();
    // The record appears after start-up, as it would under a request.
    await leftBehind(PREVIOUS);
    expect(await store.fills.find(digest)).toBeUndefined();
    const lease = await store.locks.tryLock(lockNames.fill(digest));
    expect(lease?.held).toBe(true);
    await lease?.release();
    expect(await store.sweepTemp()).toBe(1);
    expect(await readdir(join(dir, 'tmp'))).not.toContain(PREVIOUS);
  });

  it('does not follow an owner killed before this store opened while its lock is fresh, and frees it once stale', async () => {
    // The lock of a process killed 3 s ago (a zombie keeps its PID, not its lock refreshed).
    await mkdir(join(dir, 'locks', `process-${PREVIOUS}.lock`), { recursive: true });
    await age(`process-${PREVIOUS}`, 3_000);
    await leftBehind(PREVIOUS, 3_000);
    const store = await open();
    expect(await store.fills.find(digest)).toBeUndefined();
    // Not yet known to be dead: its locks and files stay.
    expect(await store.locks.tryLock(lockNames.fill(digest))).toBeUndefined();
    expect(await readdir(join(dir, 'tmp'))).toContain(PREVIOUS);
    await age(`process-${PREVIOUS}`, 60_000);
    expect(await store.fills.find(digest)).toBeUndefined();
    const lease = await store.locks.tryLock(lockNames.fill(digest));
    expect(lease?.held).toBe(true);
    await lease?.release();
    expect(await store.sweepTemp()).toBe(1);
    expect(await readdir(join(dir, 'tmp'))).not.toContain(PREVIOUS);
  });

  it('follows the spool of an owner that is alive, whether it started before or after this store', async () => {
    const early = await open(2_000);
    const writer = await open(2_000);
    const late = await open(2_000);
    const spool = join(writer.temp.dir, 'spool');
    await writer.fills.write(digest, { owner: writer.owner, spool, sizeBytes: 10 });
    expect((await writer.fills.find(digest))?.spool).toBe(spool);
    // Followed once the writer's lock shows a refresh after the reader opened (file times are
    // coarse: a lock made just after may show an earlier time, so that is not proof yet).
    await expectSoon(async () => (await early.fills.find(digest))?.spool === spool);
    await expectSoon(async () => (await late.fills.find(digest))?.spool === spool);
    // Proved once, followed from then on.
    expect((await late.fills.find(digest))?.spool).toBe(spool);
    expect(await readdir(join(dir, 'tmp', 'fills'))).toEqual([`${HEX}.json`]);
  });

  it('judges a record of an earlier version (a PID, no instance id) by its fill lock alone', async () => {
    const store = await open();
    await mkdir(join(dir, 'locks', `fill-${HEX}.lock`), { recursive: true });
    const legacy = { owner: { host: hostname(), pid: process.pid }, spool: join(dir, 'tmp', 'gone'), sizeBytes: 1 };
    await writeFile(join(dir, 'tmp', 'fills', `${HEX}.json`), JSON.stringify(legacy));
    expect(await store.fills.find(digest)).toBeUndefined();
    expect(await store.sweepTemp()).toBe(0);
    await age(`fill-${HEX}`, 60_000);
    expect(await store.sweepTemp()).toBe(1);
  });
});

/** Polls a condition another store makes true (a lock refresh); bounded. */
async function expectSoon(check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
