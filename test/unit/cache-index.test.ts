import { createCipheriv, createHash } from 'node:crypto';
import { watch } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { on } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { createSilentLogger } from '../../src/log.js';
import { createMaintenance, maintenanceIntervalMs, type Maintenance } from '../../src/mirror/maintenance.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createStore, type Store } from '../../src/store/store.js';
import { createCacheIndex, type CacheIndex, type CacheIndexOptions, type EvictionReason } from '../../src/store/cache-index.js';
import { createRecords } from '../../src/store/records.js';
import { tempFiles } from '../support/store.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const GiB = 1024 ** 3;

/** Reproducible, incompressible bytes: an AES-256-CTR keystream keyed by the seed. */
function seededBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

const digestOf = (body: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);

/**
 * A clock the test moves by hand, started well ahead of the files' mtimes (real time at
 * commit), so recency is decided by what the test does, not by when a file was written.
 */
function manualClock(startMs = Date.now() + 10 * MINUTE) {
  let nowMs = startMs;
  return {
    now: (): number => nowMs,
    advance(ms: number): number {
      nowMs += ms;
      return nowMs;
    },
  };
}

/** Every call of `onEvicted`, and a promise for the next one (the periodic pass is awaited on it). */
function evictionLog() {
  const calls: [EvictionReason, number][] = [];
  let waiter: ((call: [EvictionReason, number]) => void) | undefined;
  return {
    calls,
    onEvicted(reason: EvictionReason, count: number): void {
      calls.push([reason, count]);
      waiter?.([reason, count]);
      waiter = undefined;
    },
    next(): Promise<[EvictionReason, number]> {
      return new Promise((resolve) => (waiter = resolve));
    },
  };
}

/**
 * Resolves once the file's mtime is at least `atMs`. The watcher is opened before the
 * change is made, so the inotify event that follows the write cannot be missed.
 */
function mtimeReaches(path: string, atMs: number): { done: Promise<void>; close(): void } {
  const abort = new AbortController();
  const watcher = watch(path, { signal: abort.signal });
  const changes = on(watcher, 'change', { signal: abort.signal });
  // utimes takes seconds as a double: allow the rounding of the last millisecond.
  const reached = async (): Promise<boolean> => (await stat(path)).mtimeMs >= atMs - 1;
  const done = (async () => {
    if (await reached()) return;
    for await (const _ of changes) if (await reached()) return;
  })();
  done.catch(() => undefined);
  return { done, close: () => abort.abort() };
}

describe('cache index', () => {
  let dir: string;
  let store: Store;
  let stores: Store[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-index-'));
    stores = [];
    store = await openStore();
  });

  afterEach(async () => {
    vi.useRealTimers();
    expect(await tempFiles(dir)).toEqual([]);
    for (const s of stores) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A store on `dir`: a second one stands for another process (or a restart). */
  async function openStore(): Promise<Store> {
    const opened = createStore(dir);
    await opened.init();
    stores.push(opened);
    return opened;
  }

  function indexOn(s: Store, options: Omit<CacheIndexOptions, 'store' | 'idleTtlMs'> & { idleTtlMs?: number }): CacheIndex {
    return createCacheIndex({ idleTtlMs: 24 * HOUR, ...options, store: s });
  }

  /** Verified content written to the store behind any index's back. */
  async function put(seed: string, sizeBytes: number, into: Store = store): Promise<Digest> {
    const body = seededBytes(seed, sizeBytes);
    const digest = digestOf(body);
    await into.blobs.putVerified(digest, body);
    return digest;
  }

  /** What the mirror does on a commit: store, then tell the index (most recent now). */
  async function commit(index: CacheIndex, seed: string, sizeBytes: number): Promise<Digest> {
    const digest = await put(seed, sizeBytes);
    index.touch(digest, sizeBytes);
    return digest;
  }

  const listed = (index: CacheIndex): Digest[] => index.list().map((e) => e.digest);
  /** Each blob's size on disk, undefined where the file is gone. */
  const onDisk = async (digests: readonly Digest[]) => Promise.all(digests.map((d) => store.blobs.stat(d)));

  describe('size budget', () => {
    it('evicts the least recently served first, and a hit keeps an entry', async () => {
      const clock = manualClock();
      const index = indexOn(store, { maxSizeBytes: 3500, now: clock.now });
      expect(await index.load()).toBe('scan');
      const [a, b, c, d, e] = (await sequence(['a', 'b', 'c', 'd', 'e'], async (seed) => {
        clock.advance(1000);
        return commit(index, seed, 1000);
      })) as [Digest, Digest, Digest, Digest, Digest];
      clock.advance(1000);
      index.touch(a);
      expect(listed(index)).toEqual([b, c, d, e, a]);

      // 5000 > 3500: down to ≤ 3150, least recent first — b and c; a was just served.
      const report = await index.maintain();
      expect(report).toMatchObject({ removed: 2, removedBytes: 2000, byReason: { size: 2, ttl: 0 }, sizeBytes: 3000 });
      expect(listed(index)).toEqual([d, e, a]);
      expect(await onDisk([b, c])).toEqual([undefined, undefined]);
      expect(await onDisk([d, e, a])).toEqual([1000, 1000, 1000]);
    });

    it('evicts nothing at the budget, and once over it one pass goes down to the 90 % low watermark', async () => {
      const clock = manualClock();
      const evictions = evictionLog();
      const budget = 10_000;
      const index = indexOn(store, { maxSizeBytes: budget, now: clock.now, onEvicted: evictions.onEvicted });
      await index.load();
      const sizes = [600, 1400, 900, 1100, 500, 1500, 800, 1200, 1000, 1000];
      const committed = await sequence(sizes, async (size, i) => {
        clock.advance(1000);
        return commit(index, `w${i}`, size);
      });
      expect(index.sizeBytes).toBe(budget);
      expect(index.overBudget()).toBe(false);
      expect(await index.maintain()).toMatchObject({ removed: 0, sizeBytes: budget });
      expect(evictions.calls).toEqual([]);

      clock.advance(1000);
      committed.push(await commit(index, 'one-more', 1200));
      expect(index.overBudget()).toBe(true);
      const report = await index.maintain();
      // 11 200 → 10 600 → 9 200 → 8 300: three in one batch, and not one more than needed.
      expect(report).toMatchObject({ removed: 3, removedBytes: 2900, byReason: { size: 3, ttl: 0 } });
      expect(evictions.calls).toEqual([['size', 3]]);
      const lowWatermark = 0.9 * budget;
      expect(index.sizeBytes).toBeLessThanOrEqual(lowWatermark);
      expect(index.sizeBytes + 900).toBeGreaterThan(lowWatermark);
      expect(await onDisk(committed.slice(0, 3))).toEqual([undefined, undefined, undefined]);
      expect(await onDisk(committed.slice(3))).toEqual([...sizes.slice(3), 1200]);
      expect(listed(index)).toEqual(committed.slice(3));

      // Under the budget again: the next pass leaves it be (the watermark is hysteresis).
      expect(await index.maintain()).toMatchObject({ removed: 0 });
      expect(evictions.calls).toHaveLength(1);
    });
  });

  describe('idle TTL', () => {
    // Only the timer starts passes here; the test waits on what they report (real file I/O).
    it('is enforced by the periodic maintenance pass: idle content goes, content served within the window stays', async () => {
      const idle = await put('idle', 1000);
      const served = await put('served', 2000);
      // Files were written in real time; fake time starts a second later, so that at the
      // 60 min tick `idle` is strictly more than an hour old.
      vi.useFakeTimers({ now: Date.now() + 1000, toFake: ['Date', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
      const config = parseConfig({ store: { path: dir, maxSize: '1GiB', idleTtl: '1h' } }, {});
      const evictions = evictionLog();
      // Created under fake time: the index reads the (fake) Date.now.
      const index = createCacheIndex({
        store,
        maxSizeBytes: config.store.maxSizeBytes,
        idleTtlMs: config.store.idleTtlMs,
        onEvicted: evictions.onEvicted,
      });
      const maintenance: Maintenance = createMaintenance({
        config,
        store,
        index,
        records: createRecords(store),
        log: createSilentLogger(),
      });
      try {
        expect(await index.load()).toBe('scan');
        maintenance.start();
        const interval = maintenanceIntervalMs(config.store.idleTtlMs);
        expect(interval).toBe(6 * MINUTE);

        await vi.advanceTimersByTimeAsync(30 * MINUTE);
        index.touch(served);
        await vi.advanceTimersByTimeAsync(29 * MINUTE);
        // Let the timer's last pass finish (idle() starts none): nothing is idle for an hour yet.
        await maintenance.idle();
        expect(evictions.calls).toEqual([]);
        expect(await onDisk([idle, served])).toEqual([1000, 2000]);

        // The tick at 60 min: `idle` was last used before the start, `served` 30 min ago.
        let evicted = evictions.next();
        await vi.advanceTimersByTimeAsync(interval);
        expect(await evicted).toEqual(['ttl', 1]);
        await maintenance.idle();
        expect(await onDisk([idle, served])).toEqual([undefined, 2000]);
        expect(listed(index)).toEqual([served]);

        // And `served` goes at the first tick more than an hour after its hit (96 min).
        await vi.advanceTimersByTimeAsync(30 * MINUTE);
        await maintenance.idle();
        expect(await store.blobs.stat(served)).toBe(2000);
        evicted = evictions.next();
        await vi.advanceTimersByTimeAsync(interval);
        expect(await evicted).toEqual(['ttl', 1]);
        await maintenance.idle();
        expect(await store.blobs.stat(served)).toBeUndefined();
        expect(index.entries).toBe(0);
      } finally {
        await maintenance.close();
      }
    });
  });

  describe('protection', () => {
    it('never evicts protected digests, by size or by TTL', async () => {
      const clock = manualClock();
      const pinned = new Set<Digest>();
      const index = indexOn(store, { maxSizeBytes: 2500, idleTtlMs: HOUR, now: clock.now, protectedDigests: async () => pinned });
      await index.load();
      const [p, q, r] = (await sequence(['p', 'q', 'r'], async (seed) => {
        clock.advance(1000);
        return commit(index, seed, 1000);
      })) as [Digest, Digest, Digest];
      pinned.add(p);

      // p is the least recent, but pinned: q goes instead.
      expect(await index.maintain()).toMatchObject({ removed: 1, byReason: { size: 1, ttl: 0 } });
      expect(await onDisk([p, q, r])).toEqual([1000, undefined, 1000]);

      clock.advance(2 * HOUR);
      expect(await index.maintain()).toMatchObject({ removed: 1, byReason: { size: 0, ttl: 1 } });
      expect(await onDisk([p, r])).toEqual([1000, undefined]);
      expect(listed(index)).toEqual([p]);
    });

    it('keeps an entry in use until every holder released it', async () => {
      const clock = manualClock();
      const index = indexOn(store, { maxSizeBytes: 1500, idleTtlMs: HOUR, now: clock.now });
      await index.load();
      const u = await commit(index, 'u', 1000);
      clock.advance(1000);
      const v = await commit(index, 'v', 1000);
      const first = index.use(u);
      const second = index.use(u);

      // Over budget with u least recent: v goes instead.
      expect(await index.maintain()).toMatchObject({ removed: 1, byReason: { size: 1, ttl: 0 } });
      expect(await onDisk([u, v])).toEqual([1000, undefined]);

      clock.advance(2 * HOUR);
      expect(await index.maintain()).toMatchObject({ removed: 0 });
      first();
      first(); // releasing twice is releasing once
      expect(await index.maintain()).toMatchObject({ removed: 0 });
      expect(await store.blobs.stat(u)).toBe(1000);

      second();
      expect(await index.maintain()).toMatchObject({ removed: 1, byReason: { size: 0, ttl: 1 } });
      expect(await store.blobs.stat(u)).toBeUndefined();
      expect(index.entries).toBe(0);
    });
  });

  describe('restart', () => {
    async function indexWithHistory() {
      const clock = manualClock();
      const index = indexOn(store, { maxSizeBytes: GiB, now: clock.now });
      await index.load();
      const sizes = [100, 2000, 300, 4000, 500];
      const committed = await sequence(sizes, async (size, i) => {
        clock.advance(1000);
        return commit(index, `r${i}`, size);
      });
      // Served in reverse: recency now differs from the commit order the mtimes tell.
      for (const digest of [...committed].reverse()) {
        clock.advance(1000);
        index.touch(digest);
      }
      return { index, clock, expected: new Map(committed.map((d, i) => [d, sizes[i] as number])) };
    }

    it('loads the snapshot a pass saved, with the same recency order', async () => {
      const { index } = await indexWithHistory();
      await index.maintain();
      const before = index.list();
      expect(before.map((e) => e.sizeBytes)).toEqual([500, 4000, 300, 2000, 100]);

      const restarted = indexOn(await openStore(), { maxSizeBytes: GiB });
      expect(await restarted.load()).toBe('snapshot');
      expect(restarted.list()).toEqual(before);
      expect(restarted.sizeBytes).toBe(6900);
    });

    const damage: [string, (valid: string) => string | Buffer][] = [
      ['garbage bytes', () => seededBytes('garbage', 4096)],
      ['truncated JSON', (valid) => valid.slice(0, Math.floor(valid.length / 2))],
      ['another version', (valid) => JSON.stringify({ ...(JSON.parse(valid) as object), version: 2 })],
    ];

    it.each(damage)('scans the disk when index.json is damaged (%s) and finds every blob', async (_, corrupt) => {
      const { index, expected } = await indexWithHistory();
      await index.maintain();
      const path = store.layout.snapshotPath;
      await writeFile(path, corrupt(await readFile(path, 'utf8')));

      const restarted = indexOn(await openStore(), { maxSizeBytes: GiB });
      expect(await restarted.load()).toBe('scan');
      const found = new Map(restarted.list().map((e) => [e.digest, e.sizeBytes]));
      expect(found).toEqual(expected);
      expect(restarted.sizeBytes).toBe(6900);
    });

    it('takes the disk as the truth: a pass drops what was deleted and adds what appeared behind its back', async () => {
      const { index, clock } = await indexWithHistory();
      await index.maintain();
      const [gone, ...kept] = listed(index) as [Digest, ...Digest[]];
      clock.advance(1000);
      const restarted = indexOn(await openStore(), { maxSizeBytes: GiB, now: clock.now });
      expect(await restarted.load()).toBe('snapshot');

      await rm(store.layout.blobPath(gone));
      const added = await put('behind-its-back', 777, stores[1]);
      expect(restarted.has(gone)).toBe(true);
      expect(restarted.has(added)).toBe(false);

      expect(await restarted.maintain()).toMatchObject({ removed: 0 });
      expect(restarted.has(gone)).toBe(false);
      expect(restarted.has(added)).toBe(true);
      expect(new Set(listed(restarted))).toEqual(new Set([...kept, added]));
      expect(restarted.sizeBytes).toBe(6900 - 500 + 777);
    });

    /**
     * reconcile() keeps an entry the disk lacks only when it was put while the scan ran
     * (a commit racing the scan), never by timestamp: an index.json written by a process
     * whose clock runs ahead (another host on the shared volume) must not keep what is gone.
     */
    it('drops a blob deleted from disk even when index.json came from a clock running ahead', async () => {
      const ahead = manualClock(Date.now() + 10 * MINUTE);
      const writer = indexOn(store, { maxSizeBytes: GiB, now: ahead.now });
      await writer.load();
      const gone = await commit(writer, 'from-the-future', 1000);
      await writer.maintain();

      const reader = indexOn(await openStore(), { maxSizeBytes: GiB });
      await reader.load();
      await rm(store.layout.blobPath(gone));
      await reader.maintain();
      expect(reader.has(gone)).toBe(false);
      expect(reader.sizeBytes).toBe(0);
    });
  });

  describe('prune', () => {
    it('reports without removing on a dry run, then removes to the target size', async () => {
      const clock = manualClock();
      const index = indexOn(store, { maxSizeBytes: GiB, now: clock.now });
      await index.load();
      const committed = await sequence(['a', 'b', 'c', 'd', 'e', 'f'], async (seed) => {
        clock.advance(1000);
        return commit(index, seed, 1000);
      });

      const dry = await index.prune({ targetBytes: 3500, dryRun: true });
      expect(dry).toMatchObject({ removed: 3, removedBytes: 3000, byReason: { size: 3, ttl: 0 }, dryRun: true, sizeBytes: 6000 });
      expect(await onDisk(committed)).toEqual(committed.map(() => 1000));
      expect(listed(index)).toEqual(committed);

      const real = await index.prune({ targetBytes: 3500, dryRun: false });
      expect(real).toMatchObject({ removed: 3, removedBytes: 3000, dryRun: false, sizeBytes: 3000, entries: 3 });
      expect(await onDisk(committed)).toEqual([undefined, undefined, undefined, 1000, 1000, 1000]);
      expect(listed(index)).toEqual(committed.slice(3));
    });

    it('removes what was not served for olderThanMs', async () => {
      const clock = manualClock();
      const index = indexOn(store, { maxSizeBytes: GiB, now: clock.now });
      await index.load();
      const old = [await commit(index, 'old-1', 100), await commit(index, 'old-2', 200)];
      clock.advance(3 * HOUR);
      const fresh = [await commit(index, 'fresh-1', 300)];
      clock.advance(HOUR);
      const recent = [await commit(index, 'recent', 400)];

      expect(await index.prune({ olderThanMs: 2 * HOUR, dryRun: true })).toMatchObject({ removed: 2, removedBytes: 300 });
      expect(index.entries).toBe(4);
      const report = await index.prune({ olderThanMs: 2 * HOUR, dryRun: false });
      expect(report).toMatchObject({ removed: 2, removedBytes: 300, byReason: { size: 0, ttl: 2 }, sizeBytes: 700 });
      expect(await onDisk([...old, ...fresh, ...recent])).toEqual([undefined, undefined, 300, 400]);
    });
  });

  describe('two processes on one store', () => {
    it('sees what the other committed after a pass, and a hit by the other protects from TTL eviction', async () => {
      const x = await put('x', 1000);
      const y = await put('y', 2000);
      const writtenMs = Date.now();
      const clockA = manualClock(writtenMs + 2 * HOUR);
      const clockB = manualClock(writtenMs + 10 * MINUTE);
      const a = indexOn(store, { maxSizeBytes: GiB, idleTtlMs: HOUR, now: clockA.now });
      const storeB = await openStore();
      const b = indexOn(storeB, { maxSizeBytes: GiB, idleTtlMs: HOUR, now: clockB.now });
      expect(await a.load()).toBe('scan');
      expect(await b.load()).toBe('scan');

      // A commits n; B learns of it from the disk on its next pass.
      const n = await commit(a, 'n', 3000);
      expect(b.has(n)).toBe(false);
      expect(await b.maintain()).toMatchObject({ removed: 0 });
      expect(b.has(n)).toBe(true);
      expect(b.sizeBytes).toBe(6000);

      // A serves x two hours after it was written: the hit moves x's mtime forward.
      const moved = mtimeReaches(store.layout.blobPath(x), clockA.now());
      try {
        a.touch(x);
        await moved.done;
      } finally {
        moved.close();
      }

      // For B, 90 min have passed since the writes: y and n are idle, x was served by A.
      clockB.advance(80 * MINUTE);
      expect(await b.maintain()).toMatchObject({ removed: 2, byReason: { size: 0, ttl: 2 } });
      expect(await onDisk([x, y, n])).toEqual([1000, undefined, undefined]);
      expect(listed(b)).toEqual([x]);

      // A's next pass learns from the disk that y and n are gone; it removes nothing itself.
      clockA.advance(1000);
      expect(await a.maintain()).toMatchObject({ removed: 0, sizeBytes: 1000 });
      expect(listed(a)).toEqual([x]);
    });
  });
});

/** Runs `make` over `items` one after another (order matters: it is recency). */
async function sequence<T, R>(items: readonly T[], make: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const [i, item] of items.entries()) out.push(await make(item, i));
  return out;
}
