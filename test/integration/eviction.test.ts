import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { CLIENT_MANIFEST_ACCEPT, fetchHashed } from '../support/http.js';
import { tempFiles } from '../support/store.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/**
 * The bounded store against a real registry: what eviction removes, what it must not,
 * and that every pull afterwards is complete and verified (never a short 200).
 */
describe('a bounded store', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let imageA: Pushed;
  let imageB: Pushed;
  let imageC: Pushed;
  let big: Pushed;
  let storeDir: string;
  let mirror: MirrorHandle;

  beforeAll(async () => {
    registry = await startRegistry();
    const shared = { seed: 'shared-layer', size: MiB };
    imageA = await pushImage(
      registry.url,
      'library/app-a',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [shared, { seed: 'only-a', size: MiB }] }),
    );
    imageB = await pushImage(
      registry.url,
      'library/app-b',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [shared, { seed: 'only-b', size: MiB }] }),
    );
    imageC = await pushImage(
      registry.url,
      'library/app-c',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'only-c', size: 1.5 * MiB }] }),
    );
    big = await pushImage(
      registry.url,
      'library/big',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'big-layer', size: 24 * MiB }] }),
    );
    proxy = await startCountingProxy(registry.url);
  });

  afterAll(async () => {
    await proxy?.stop();
    await registry?.dispose();
  });

  beforeEach(async () => {
    storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-evict-'));
    proxy.reset();
  });

  afterEach(async () => {
    await mirror?.stop();
    await rm(storeDir, { recursive: true, force: true });
  });

  async function startWith(store: Record<string, unknown>): Promise<void> {
    mirror = await startMirror({ upstreams: { 'docker.io': { url: proxy.url, library: true } }, store }, { storeDir });
  }

  /** What a client does: the manifest by tag, then every blob, each checked against its digest. */
  async function pull(name: string, image: Pushed): Promise<void> {
    const manifest = await fetchHashed(`${mirror.url}/v2/${name}/manifests/v1`, { headers: { accept: CLIENT_MANIFEST_ACCEPT } });
    expect(manifest.status).toBe(200);
    expect(manifest.sha256).toBe(image.topDigest);
    for (const blob of image.blobs) {
      const got = await fetchHashed(`${mirror.url}/v2/${name}/blobs/${blob.digest}`);
      expect(got.status, blob.digest).toBe(200);
      expect(got.bytes).toBe(blob.size);
      expect(got.sha256).toBe(blob.digest);
    }
  }

  /** Every file under blobs/, sorted: what is on disk, whatever the index says. */
  const blobFiles = async (): Promise<string[]> => {
    const entries = await readdir(join(storeDir, 'blobs'), { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name))
      .sort();
  };
  const stored = async (digest: string): Promise<boolean> => (await mirror.runtime.store.blobs.stat(digest as never)) !== undefined;
  const onlyLayer = (image: Pushed, not: Pushed): string =>
    image.blobs.find((b) => !not.blobs.some((o) => o.digest === b.digest) && b.size >= MiB)!.digest;

  it('evicts the least recently pulled image to 90 % of the budget, keeping the layer another image shares', async () => {
    await startWith({ maxSize: '4MiB' });
    await pull('app-a', imageA);
    await pull('app-b', imageB);
    await pull('app-c', imageC);
    await mirror.runtime.maintenance.run();

    expect(await stored(onlyLayer(imageA, imageB))).toBe(false);
    expect(await stored(imageA.topDigest)).toBe(false);
    // Whole: A's config goes with it (it is A's own), never half an image left behind.
    expect(await stored(imageA.blobs.at(-1)!.digest)).toBe(false);
    for (const blob of [...imageB.blobs, ...imageC.blobs]) expect(await stored(blob.digest), blob.digest).toBe(true);
    expect(mirror.runtime.index.sizeBytes).toBeLessThanOrEqual(0.9 * 4 * MiB);
    const evictions = await mirror.runtime.metrics.evictions.get();
    // Least recent first, and no more than needed: image A whole — its manifest, config and own layer (4.5 → 3.5 MiB).
    expect(evictions.values.find((v) => v.labels.reason === 'size')?.value).toBe(3);

    // B is still whole: pulled with no upstream blob GET. A comes back cleanly.
    proxy.reset();
    await pull('app-b', imageB);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);
    await pull('app-a', imageA);
    // Its own layer and config; the layer B keeps is not fetched again.
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(2);
    expect(proxy.count({ method: 'GET', kind: 'manifest' })).toBe(1);
  });

  it('relays a blob bigger than half the budget without evicting anything, and counts the relay', async () => {
    await startWith({ maxSize: '4MiB' });
    await pull('app-a', imageA);
    await pull('app-b', imageB);
    await mirror.runtime.mirror.drain();
    const gauge = async (): Promise<number | undefined> => (await mirror.runtime.metrics.storeEntries.get()).values[0]?.value;
    const entriesBefore = await gauge();
    const filesBefore = await blobFiles();
    // Both images' blobs (the shared layer once) and their two manifests.
    expect(entriesBefore).toBe(new Set([...imageA.blobs, ...imageB.blobs].map((b) => b.digest)).size + 2);
    expect(filesBefore).toHaveLength(entriesBefore!);

    const layer = big.blobs.find((b) => b.size === 24 * MiB)!;
    const got = await fetchHashed(`${mirror.url}/v2/big/blobs/${layer.digest}`);
    expect(got.status).toBe(200);
    expect(got.bytes).toBe(layer.size);
    expect(got.sha256).toBe(layer.digest);
    await mirror.runtime.mirror.drain();
    await mirror.runtime.maintenance.run();

    expect(await gauge()).toBe(entriesBefore);
    expect(await blobFiles()).toEqual(filesBefore);
    expect(await stored(layer.digest)).toBe(false);
    const relays = await mirror.runtime.metrics.relays.get();
    expect(relays.values).toEqual([expect.objectContaining({ labels: { reason: 'too_large' }, value: 1 })]);
    const evictions = await mirror.runtime.metrics.evictions.get();
    expect(evictions.values.reduce((sum, v) => sum + v.value, 0)).toBe(0);
    expect(await tempFiles(storeDir)).toEqual([]);
  });

  it('drops a tag record whose manifest was evicted and resolves the tag afresh, HEAD and GET alike', async () => {
    await startWith({ maxSize: '1GiB' });
    await pull('app-a', imageA);
    await mirror.runtime.index.prune({ targetBytes: 0, dryRun: false });
    expect(await stored(imageA.topDigest)).toBe(false);
    proxy.reset();
    const head = await fetchHashed(`${mirror.url}/v2/app-a/manifests/v1`, { method: 'HEAD', headers: { accept: CLIENT_MANIFEST_ACCEPT } });
    expect(head.status).toBe(200);
    expect(head.headers['docker-content-digest']).toBe(imageA.topDigest);
    expect(proxy.count({ method: 'HEAD', kind: 'manifest' })).toBe(1);
    await pull('app-a', imageA);
  });

  it('lets a download of a blob finish when eviction runs under it, and a later pull refetches it whole', async () => {
    await startWith({ maxSize: '1GiB' });
    await pull('big', big);
    const layer = big.blobs.find((b) => b.size === 24 * MiB)!;
    const res = await request(`${mirror.url}/v2/big/blobs/${layer.digest}`);
    const chunks: Buffer[] = [];
    const iterator = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const first = await iterator.next();
    chunks.push(first.value as Buffer);

    const during = await mirror.runtime.index.prune({ targetBytes: 0, dryRun: false });
    expect(await stored(layer.digest)).toBe(true);
    // Another process (or the operator) removing the file under the reader: it still finishes.
    await mirror.runtime.store.blobs.remove(layer.digest as never);
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) chunks.push(next.value);
    const body = Buffer.concat(chunks);
    expect(body.length).toBe(layer.size);
    expect(`sha256:${(await import('node:crypto')).createHash('sha256').update(body).digest('hex')}`).toBe(layer.digest);
    expect(during.removed).toBeGreaterThanOrEqual(2);

    // Gone now: the next pull refetches it whole.
    proxy.reset();
    await pull('big', big);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBeGreaterThanOrEqual(1);
  });

  it('keeps pinned images through size eviction', async () => {
    await startWith({ maxSize: '3MiB', pins: ['app-a:v1'] });
    await pull('app-a', imageA);
    await pull('app-c', imageC);
    await pull('app-b', imageB);
    await mirror.runtime.maintenance.run();
    for (const blob of imageA.blobs) expect(await stored(blob.digest), blob.digest).toBe(true);
    expect(await stored(imageA.topDigest)).toBe(true);
    expect(await stored(onlyLayer(imageC, imageA))).toBe(false);
  });

  it('keeps recency and tags across a restart, and serves the cache with the upstream gone', async () => {
    await startWith({ maxSize: '1GiB' });
    await pull('app-a', imageA);
    await pull('app-b', imageB);
    const before = mirror.runtime.index.list().map((e) => e.digest);
    await mirror.runtime.close();
    expect(await tempFiles(storeDir)).toEqual([]);

    await registry.stop();
    try {
      await startWith({ maxSize: '1GiB' });
      expect(mirror.runtime.index.list().map((e) => e.digest)).toEqual(before);
      await pull('app-a', imageA);
      await pull('app-b', imageB);
    } finally {
      await registry.restart();
    }
  });

  it('falls back to a disk scan when the snapshot is damaged', async () => {
    await startWith({ maxSize: '1GiB' });
    await pull('app-c', imageC);
    const entries = mirror.runtime.index.entries;
    await mirror.runtime.close();
    await writeFile(join(storeDir, 'index.json'), '{"version":1,"entries":[["nothex"');
    await startWith({ maxSize: '1GiB' });
    expect(mirror.runtime.index.entries).toBe(entries);
    proxy.reset();
    await pull('app-c', imageC);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);
  });

  it('prune and stats work from the command line beside a running mirror', async () => {
    await startWith({ maxSize: '1GiB' });
    await pull('app-a', imageA);
    await pull('app-c', imageC);
    const configFile = join(storeDir, '..', `${storeDir.split('/').pop()}.json`);
    await writeFile(
      configFile,
      JSON.stringify({ store: { path: storeDir }, upstreams: { 'docker.io': { url: proxy.url, library: true } } }),
    );
    try {
      const stats = await run(process.execPath, ['dist/main.js', 'stats', '--config', configFile, '--url', mirror.url, '--json']);
      const parsed = JSON.parse(stats.stdout) as {
        entries: number;
        images: number;
        pinnedBytes: number;
        sizeBytes: number;
        topRepositories: { repository: string; sizeBytes: number }[];
        mirror: { hitRatio?: number; requests?: number };
      };
      expect(parsed.entries).toBe(imageA.blobs.length + imageC.blobs.length + 2);
      expect(parsed).toMatchObject({ images: 2, pinnedBytes: 0 });
      const text = await run(process.execPath, ['dist/main.js', 'stats', '--config', configFile, '--url', mirror.url]);
      expect(text.stdout).toMatch(/in 7 entries; 2 images cached, 0B pinned/);
      expect(parsed.topRepositories[0]?.repository).toBe('library/app-a');
      expect(parsed.topRepositories[0]?.sizeBytes).toBeGreaterThan(2 * MiB);
      expect(parsed.mirror.requests).toBe(imageA.blobs.length + imageC.blobs.length + 2);
      expect(parsed.mirror.hitRatio).toBe(0);

      const dry = await run(process.execPath, ['dist/main.js', 'prune', '--config', configFile, '--max-size', '0']);
      expect(dry.stdout).toContain('dry run: nothing was deleted');
      expect(await stored(imageA.topDigest)).toBe(true);
      const applied = await run(process.execPath, ['dist/main.js', 'prune', '--config', configFile, '--max-size', '0', '--apply']);
      expect(applied.stdout).toMatch(/removed \d+ entries/);
      expect(await stored(imageA.topDigest)).toBe(false);
      // The running mirror refetches what the CLI removed, whole.
      await pull('app-a', imageA);
    } finally {
      await rm(configFile, { force: true });
    }
  });
});
