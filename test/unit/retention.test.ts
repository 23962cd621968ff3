import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import type { Config } from '../../src/config/types.js';
import { createSilentLogger } from '../../src/log.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { createMaintenance, type Maintenance } from '../../src/mirror/maintenance.js';
import { pinnedDigests } from '../../src/mirror/pins.js';
import { createMirror, type Mirror } from '../../src/mirror/mirror.js';
import { createStoreHealth } from '../../src/mirror/store-health.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createCacheIndex, type CacheIndex } from '../../src/store/cache-index.js';
import { createRecords, type Records } from '../../src/store/records.js';
import { createStore, type Store } from '../../src/store/store.js';
import { createUpstream } from '../../src/upstream/client.js';

const MINUTE = 60_000;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const digestOf = (body: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);

interface StoredImage {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly sizeBytes: number;
  /** Every digest of the image: manifests, configs, layers. */
  readonly parts: readonly Digest[];
}

/**
 * Retention of tags, pins and whole images, through the mirror's own serving path and
 * maintenance passes, on a real store on disk. Only Date is faked: time moves by
 * `vi.setSystemTime`, and every pass is run (and awaited) by the test.
 */
describe('retention', () => {
  let dir: string;
  let store: Store;
  let records: Records;
  let index: CacheIndex;
  let metrics: Metrics;
  let maintenance: Maintenance;
  let mirror: Mirror;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-retention-'));
    vi.useFakeTimers({ toFake: ['Date'] });
    store = createStore(dir);
    await store.init();
    records = createRecords(store);
  });

  afterEach(async () => {
    await maintenance?.close();
    await store.close();
    vi.useRealTimers();
    await rm(dir, { recursive: true, force: true });
  });

  /** The mirror and its maintenance over the store, as the runtime composes them. */
  async function open(input: { offline?: boolean; store?: Record<string, unknown>; upstream?: Record<string, unknown> }): Promise<Config> {
    const config = parseConfig(
      {
        store: { path: dir, maxSize: '1GiB', ...input.store },
        offline: input.offline ?? false,
        defaultUpstream: 'docker.io',
        upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', library: true, ...input.upstream } },
      },
      {},
    );
    const log = createSilentLogger();
    metrics = createMetrics({ processMetrics: false });
    index = createCacheIndex({
      store,
      maxSizeBytes: config.store.maxSizeBytes,
      idleTtlMs: config.store.idleTtlMs,
      protectedDigests: () => pinnedDigests({ config, records, store }),
      onEvicted: (reason, count) => metrics.evictions.inc({ reason }, count),
    });
    await index.load();
    maintenance = createMaintenance({ config, store, index, records, log, metrics });
    const upstreams = new Map(Object.values(config.upstreams).map((u) => [u.name, createUpstream(u, { metrics, log })]));
    const health = createStoreHealth({ log, metrics });
    mirror = createMirror({ config, store, records, upstreams, metrics, log, index, health, maintain: maintenance.run });
    return config;
  }

  async function blob(body: Buffer): Promise<Digest> {
    const digest = digestOf(body);
    await store.blobs.putVerified(digest, body);
    index.touch(digest, body.length);
    return digest;
  }

  async function manifest(doc: object): Promise<{ digest: Digest; sizeBytes: number }> {
    const body = Buffer.from(JSON.stringify(doc));
    const digest = digestOf(body);
    await store.manifests.put(digest, (doc as { mediaType: string }).mediaType, body);
    index.touch(digest, body.length);
    return { digest, sizeBytes: body.length };
  }

  /** An OCI image (config and `layers`), stored as a pull would leave it. */
  async function image(seed: string, layers: readonly Buffer[]): Promise<StoredImage> {
    const layerDigests = [];
    for (const layer of layers) layerDigests.push(await blob(layer));
    const configBody = Buffer.from(JSON.stringify({ seed, rootfs: { type: 'layers', diff_ids: layerDigests } }));
    const config = await blob(configBody);
    const top = await manifest({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: configBody.length },
      layers: layerDigests.map((digest, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: layers[i]!.length })),
    });
    return { ...top, mediaType: OCI_MANIFEST, parts: [top.digest, config, ...layerDigests] };
  }

  /** An OCI index over one platform image. */
  async function indexImage(seed: string, layers: readonly Buffer[]): Promise<StoredImage> {
    const child = await image(seed, layers);
    const top = await manifest({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: child.digest, size: child.sizeBytes, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    });
    return { ...top, mediaType: OCI_INDEX, parts: [top.digest, ...child.parts] };
  }

  async function tag(name: string, stored: StoredImage, extra: { imported?: true } = {}): Promise<void> {
    const record = { digest: stored.digest, mediaType: stored.mediaType, sizeBytes: stored.sizeBytes, checkedAtMs: Date.now(), ...extra };
    await records.putTag('docker.io', `library/${name}`, 'v1', record);
  }

  const pull = (name: string, method: 'GET' | 'HEAD' = 'GET') =>
    mirror.getManifest({ upstream: 'docker.io', repository: `library/${name}` }, { kind: 'tag', tag: 'v1' }, method);
  const tagged = async (name: string): Promise<boolean> => (await records.findTag('docker.io', `library/${name}`, 'v1')) !== undefined;
  /** How many of `digests` are on disk. */
  const stored = async (digests: readonly Digest[]): Promise<number> =>
    (await Promise.all(digests.map((d) => store.blobs.stat(d)))).filter((s) => s !== undefined).length;

  /** `minutes` of passes, one a minute, calling `each` before every pass. */
  async function sweep(minutes: number, each: () => Promise<unknown> = async () => undefined): Promise<void> {
    for (let i = 0; i < minutes; i++) {
      vi.setSystemTime(Date.now() + MINUTE);
      await each();
      await maintenance.run();
    }
  }

  it('keeps an offline tag pulled every minute through many sweeps, with all its content', async () => {
    await open({ offline: true, store: { idleTtl: '10m' }, upstream: { freshFor: '1m', maxStale: '1m' } });
    const pulled = await image('pulled', [randomBytes(3000), randomBytes(2000)]);
    const idle = await image('idle', [randomBytes(1000)]);
    await tag('pulled', pulled);
    await tag('idle', idle);

    // 120 minutes: ten times freshFor + maxStale + idleTtl.
    await sweep(120, async () => expect((await pull('pulled')).digest).toBe(pulled.digest));
    expect(await tagged('pulled')).toBe(true);
    expect(await stored(pulled.parts)).toBe(pulled.parts.length);
    // The sweeps did run: what nobody pulled aged out, content and tag.
    expect(await stored(idle.parts)).toBe(0);
    expect(await tagged('idle')).toBe(false);
    expect((await pull('pulled', 'HEAD')).outcome).toBe('hit');
  }, 60_000);

  const byDigest = (name: string, digest: Digest) =>
    mirror.getManifest({ upstream: 'docker.io', repository: `library/${name}` }, { kind: 'digest', digest }, 'GET');

  it.each([
    ['an offline', true, {}],
    ['an imported', false, { imported: true }],
  ] as const)('keeps %s tag past every window while its manifest is stored', async (_, offline, extra) => {
    await open({ offline, store: { idleTtl: '10m' }, upstream: { freshFor: '1m', maxStale: '1m' } });
    const kept = await image('kept', [randomBytes(1000)]);
    const fetched = await image('fetched', [randomBytes(1000)]);
    await tag('kept', kept, extra);
    await tag('fetched', fetched);
    // The content stays in use (pulled by digest), the tags are never served.
    await sweep(60, () => Promise.all([byDigest('kept', kept.digest), byDigest('fetched', fetched.digest)]));
    expect(await tagged('kept')).toBe(true);
    expect(await stored(kept.parts)).toBe(kept.parts.length);
    // Only an online mirror drops a tag the upstream stands behind, once past freshFor + maxStale and idleTtl.
    expect(await tagged('fetched')).toBe(offline);
    expect(await stored(fetched.parts)).toBe(fetched.parts.length);
  });

  it('drops an unused online tag only once it is past freshFor + maxStale and idleTtl', async () => {
    const config = await open({ store: { idleTtl: '1h' }, upstream: { freshFor: '10m', maxStale: '10m' } });
    const unused = await image('unused', [randomBytes(1000)]);
    const served = await image('served', [randomBytes(1000)]);
    await tag('unused', unused);
    await tag('served', served);
    // Fresh for 10 min, then within maxStale; an unused record stays for its idle hour too.
    await sweep(50);
    await records.tagServed('docker.io', 'library/served', 'v1');
    index.touch(served.digest);
    await sweep(9);
    expect(await tagged('unused')).toBe(true);
    await sweep(2);
    expect(await tagged('unused')).toBe(false);

    // Served at 50 min: kept until 110 min, and a restart (a new process) still knows it was used.
    records = createRecords(store);
    maintenance = createMaintenance({ config, store, index, records, log: createSilentLogger() });
    await sweep(19);
    index.touch(served.digest);
    await sweep(29);
    expect(await tagged('served')).toBe(true);
    await sweep(2);
    expect(await tagged('served')).toBe(false);
    // The record went by its own windows: its content, served at 80 min, is still there.
    expect(await stored(served.parts)).toBe(served.parts.length);
  }, 60_000);

  it('keeps a pinned tag and everything it reaches through every sweep and size eviction, never served', async () => {
    await open({
      store: { idleTtl: '10m', maxSize: '20KiB', pins: ['docker.io/library/pinned:v1'] },
      upstream: { freshFor: '1m', maxStale: '1m' },
    });
    const pinned = await indexImage('pinned', [randomBytes(8000), randomBytes(4000)]);
    await tag('pinned', pinned);
    // Twice freshFor + maxStale + idleTtl.
    await sweep(24, async () => {
      // New content every minute pushes the store over its budget.
      const other = await image(`other-${Date.now()}`, [randomBytes(6000)]);
      await tag(`other-${Date.now()}`, other);
    });
    expect(await tagged('pinned')).toBe(true);
    expect(await stored(pinned.parts)).toBe(pinned.parts.length);
    expect(index.sizeBytes).toBeLessThanOrEqual(20 * 1024);
    const evicted = await metrics.evictions.get();
    expect(evicted.values.find((v) => v.labels.reason === 'size')?.value).toBeGreaterThan(0);
    const pinnedBytes = pinned.parts.reduce((sum, d) => sum + (index.list().find((e) => e.digest === d)?.sizeBytes ?? 0), 0);
    expect((await metrics.storePinnedBytes.get()).values[0]?.value).toBe(pinnedBytes);
  }, 60_000);

  it('HEAD of a tag keeps its layers and child manifests fresh', async () => {
    await open({ store: { idleTtl: '10m' }, upstream: { freshFor: '1h' } });
    const resolved = await indexImage('resolved', [randomBytes(3000), randomBytes(3000)]);
    const other = await indexImage('other', [randomBytes(3000)]);
    await tag('resolved', resolved);
    await tag('other', other);
    await sweep(30, () => pull('resolved', 'HEAD'));
    // Each part was refreshed by the last HEAD, not only the image as a whole.
    const lastUsed = new Map(index.list().map((e) => [e.digest, e.lastUsedMs]));
    expect(resolved.parts.map((d) => lastUsed.get(d))).toEqual(resolved.parts.map(() => Date.now()));
    expect(await stored(resolved.parts)).toBe(resolved.parts.length);
    expect(await stored(other.parts)).toBe(0);
    expect((await metrics.storeImages.get()).values[0]?.value).toBe(1);
  });
});
