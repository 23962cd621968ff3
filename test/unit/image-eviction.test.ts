import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createCacheIndex, type CacheIndex } from '../../src/store/cache-index.js';
import { storeUnits } from '../../src/store/images.js';
import { createStore, type Store } from '../../src/store/store.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const digestOf = (body: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);

describe('store units', () => {
  const used = (entries: [string, number][]) => entries.map(([hex, lastUsedMs]) => [hex, { lastUsedMs }] as const);

  it('makes an image of each manifest no other references, with all it reaches, and leaves the rest alone', () => {
    // index i → manifests a, b; a → layers s (shared with c), x; c → s, y; z reached by nothing.
    const graph = new Map([
      ['i', ['a', 'b']],
      ['a', ['s', 'x']],
      ['b', ['gone']],
      ['c', ['s', 'y']],
    ]);
    const units = storeUnits(
      used([
        ['s', 1],
        ['x', 2],
        ['z', 3],
        ['i', 10],
        ['a', 50],
        ['b', 4],
        ['c', 20],
        ['y', 5],
      ]),
      graph,
    );
    expect(units).toEqual([
      { kind: 'blob', root: 'z', members: ['z'], lastUsedMs: 3 },
      { kind: 'image', root: 'c', members: ['c', 's', 'y'], lastUsedMs: 20 },
      // An image is as recent as its most recently served manifest (a, pulled by digest).
      { kind: 'image', root: 'i', members: ['i', 'a', 's', 'x', 'b'], lastUsedMs: 50 },
    ]);
  });
});

/** Size and TTL eviction over real images in a store on disk, with a clock the test moves. */
describe('eviction by image', () => {
  let dir: string;
  let store: Store;
  let nowMs: number;
  let index: CacheIndex;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-images-'));
    store = createStore(dir);
    await store.init();
    // Well ahead of the files' mtimes: recency is what the test does.
    nowMs = Date.now() + 10 * MINUTE;
  });

  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  function open(maxSizeBytes: number, idleTtlMs = 24 * HOUR): CacheIndex {
    index = createCacheIndex({ store, maxSizeBytes, idleTtlMs, lowWatermark: 1, now: () => nowMs });
    return index;
  }

  const later = (ms = 1000): number => (nowMs += ms);

  async function blob(body: Buffer): Promise<Digest> {
    const digest = digestOf(body);
    await store.blobs.putVerified(digest, body);
    index.touch(digest, body.length);
    return digest;
  }

  /** An image manifest over `layers` (each a blob, shared ones passed again), stored; config included. */
  async function image(layers: readonly Digest[]): Promise<{ manifest: Digest; config: Digest }> {
    const config = await blob(randomBytes(100));
    const descriptor = async (digest: Digest) => ({
      mediaType: 'application/octet-stream',
      digest,
      size: (await store.blobs.stat(digest)) as number,
    });
    const body = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: await descriptor(config),
        layers: await Promise.all(layers.map(descriptor)),
      }),
    );
    const manifest = digestOf(body);
    await store.manifests.put(manifest, 'application/vnd.oci.image.manifest.v1+json', body);
    index.touch(manifest, body.length);
    return { manifest, config };
  }

  const onDisk = async (digests: readonly Digest[]): Promise<boolean[]> =>
    Promise.all(digests.map(async (d) => (await store.blobs.stat(d)) !== undefined));

  it('removes the least recently used image whole, and keeps the layer a kept image shares', async () => {
    open(10_000);
    await index.load();
    const shared = await blob(randomBytes(3000));
    const onlyA = await blob(randomBytes(3000));
    const a = await image([shared, onlyA]);
    later();
    const onlyB = await blob(randomBytes(3000));
    const b = await image([shared, onlyB]);
    later();
    // A's layers are pulled after B's manifest: a per-entry LRU would take B's manifest first.
    index.touch(shared);
    index.touch(onlyA);
    expect(index.sizeBytes).toBeGreaterThan(10_000);

    const report = await index.maintain();
    expect(await onDisk([a.manifest, a.config, onlyA])).toEqual([false, false, false]);
    expect(await onDisk([shared, b.manifest, b.config, onlyB])).toEqual([true, true, true, true]);
    expect(report).toMatchObject({ removed: 3, byReason: { size: 3, ttl: 0 }, images: 1 });

    // B goes next, and the shared layer with it: no kept image holds it any more.
    await blob(randomBytes(4000));
    expect(await index.maintain()).toMatchObject({ images: 0 });
    expect(await onDisk([shared, b.manifest, b.config, onlyB])).toEqual([false, false, false, false]);
  });

  it('never removes a layer of a kept image, however long ago the layer itself was served', async () => {
    open(9_000);
    await index.load();
    const layer = await blob(randomBytes(4000));
    later();
    const orphan = await blob(randomBytes(3000));
    later();
    const kept = await image([layer]);
    later();
    await blob(randomBytes(2500));
    // Over budget by about 700 bytes: the least recent single entry is the kept image's layer.
    expect(index.list()[0]?.digest).toBe(layer);

    await index.maintain();
    expect(await onDisk([layer, kept.manifest, kept.config])).toEqual([true, true, true]);
    expect(await onDisk([orphan])).toEqual([false]);
  });

  it('ages an image by its manifest: the idle TTL keeps the layers of an image served within it', async () => {
    open(1_000_000, HOUR);
    await index.load();
    const layer = await blob(randomBytes(1000));
    const served = await image([layer]);
    const idleLayer = await blob(randomBytes(1000));
    const idle = await image([idleLayer]);
    later(50 * MINUTE);
    index.touch(served.manifest);
    later(20 * MINUTE);

    expect(await index.maintain()).toMatchObject({ byReason: { size: 0, ttl: 3 }, images: 1 });
    expect(await onDisk([served.manifest, served.config, layer])).toEqual([true, true, true]);
    expect(await onDisk([idle.manifest, idle.config, idleLayer])).toEqual([false, false, false]);
  });
});
