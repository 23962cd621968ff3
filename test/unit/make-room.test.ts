import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createCacheIndex, planRoom, type CacheIndex } from '../../src/store/cache-index.js';
import { createStore, type Store } from '../../src/store/store.js';
import { tempFiles } from '../support/store.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Figures for `planRoom`: a 100 MiB budget, the blob's size plus a 10 MiB reserve needed. */
function figures(sizeBytes: number, freeBytes: number, evictableBytes: number) {
  return { sizeBytes, neededBytes: sizeBytes + 10 * MiB, maxSizeBytes: 100 * MiB, freeBytes, evictableBytes };
}

describe('room for an incoming blob (planRoom)', () => {
  it('evicts nothing when the free disk holds the blob and its reserve', () => {
    expect(planRoom(figures(20 * MiB, 30 * MiB, 90 * MiB))).toEqual({ evictBytes: 0 });
  });

  it('evicts exactly the shortfall when eviction can cover it', () => {
    expect(planRoom(figures(20 * MiB, 5 * MiB, 90 * MiB))).toEqual({ evictBytes: 25 * MiB });
    expect(planRoom(figures(20 * MiB, 5 * MiB, 25 * MiB))).toEqual({ evictBytes: 25 * MiB });
  });

  it('evicts nothing and relays when free disk plus what may be evicted is short of it', () => {
    expect(planRoom(figures(20 * MiB, 5 * MiB, 25 * MiB - 1))).toEqual({ reason: 'disk_full' });
    expect(planRoom(figures(20 * MiB, 0, 0))).toEqual({ reason: 'disk_full' });
  });

  it('relays a blob over half the budget without evicting, even with the disk empty', () => {
    expect(planRoom(figures(50 * MiB, 10 * GiB, 0))).toEqual({ evictBytes: 0 });
    expect(planRoom(figures(50 * MiB + 1, 10 * GiB, 0))).toEqual({ reason: 'too_large' });
    expect(planRoom(figures(200 * MiB, 0, 100 * MiB))).toEqual({ reason: 'too_large' });
  });
});

describe('makeRoom on a store near its budget', () => {
  let dir: string;
  let store: Store;
  let index: CacheIndex;
  const evicted: number[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-room-'));
    store = createStore(dir);
    await store.init();
    evicted.length = 0;
    index = createCacheIndex({ store, maxSizeBytes: 12_000, idleTtlMs: 60_000, onEvicted: (_reason, n) => evicted.push(n) });
  });

  afterEach(async () => {
    expect(await tempFiles(dir)).toEqual([]);
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function fill(entries: number, sizeBytes: number): Promise<Digest[]> {
    const digests: Digest[] = [];
    for (let i = 0; i < entries; i++) {
      const body = randomBytes(sizeBytes);
      const digest = parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);
      await store.blobs.putVerified(digest, body);
      index.touch(digest, sizeBytes);
      digests.push(digest);
    }
    return digests;
  }

  it('refuses a blob bigger than half the budget as too large and evicts nothing', async () => {
    const digests = await fill(10, 1000);
    const room = await index.makeRoom(6001);
    expect(room).toMatchObject({ fits: false, reason: 'too_large' });
    expect(index.entries).toBe(10);
    expect(evicted).toEqual([]);
    for (const digest of digests) expect(await store.blobs.stat(digest)).toBe(1000);
  });

  it('takes a blob within its share when the disk has room, evicting nothing for it', async () => {
    await fill(10, 1000);
    const room = await index.makeRoom(6000);
    expect(room).toMatchObject({ fits: true });
    expect(room.reason).toBeUndefined();
    expect(index.entries).toBe(10);
    expect(evicted).toEqual([]);
  });
});
