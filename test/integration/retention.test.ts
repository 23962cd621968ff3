import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { buildImage, pushImage, pushIndex, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { CLIENT_MANIFEST_ACCEPT, fetchHashed } from '../support/http.js';
import { createStore } from '../../src/store/store.js';
import { scanBlobs } from '../../src/store/scan.js';

const KiB = 1024;
const IDLE_TTL_S = 4;
/** Three idle TTLs (each sweep, past freshFor + maxStale, would once have dropped every tag). */
const RUN_S = 3 * IDLE_TTL_S + 2;

/**
 * An air-gapped mirror in real time, with TTLs of seconds: a tag a client resolves every
 * second keeps its record and every layer through the sweeps (the client fetched the
 * layers once, at the start), a pinned image is never touched, and what nobody pulls ages
 * out — the sweeps did run.
 */
describe('an offline store over many sweeps', () => {
  let registry: RegistryHandle;
  let pulled: Pushed;
  let pinned: Pushed;
  let idle: Pushed;
  let storeDir: string;
  let mirror: MirrorHandle | undefined;

  beforeAll(async () => {
    registry = await startRegistry();
    pulled = await pushIndex(registry.url, 'library/pulled', 'v1', {
      mediaTypes: 'oci',
      images: [
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'ret-pulled-1', size: 64 * KiB },
            { seed: 'ret-pulled-2', size: 32 * KiB },
          ],
        }),
      ],
    });
    pinned = await pushImage(
      registry.url,
      'library/pinned',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'ret-pinned', size: 48 * KiB }] }),
    );
    idle = await pushImage(
      registry.url,
      'library/idle',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'ret-idle', size: 16 * KiB }] }),
    );
    storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-retention-'));
  });

  afterAll(async () => {
    await mirror?.stop();
    await registry?.dispose();
    await rm(storeDir, { recursive: true, force: true });
  });

  async function pull(name: string, image: Pushed): Promise<void> {
    const manifest = await fetchHashed(`${mirror!.url}/v2/${name}/manifests/v1`, { headers: { accept: CLIENT_MANIFEST_ACCEPT } });
    expect(manifest.sha256, name).toBe(image.topDigest);
    for (const child of image.manifests.filter((m) => m.digest !== image.topDigest)) {
      expect(
        (await fetchHashed(`${mirror!.url}/v2/${name}/manifests/${child.digest}`, { headers: { accept: CLIENT_MANIFEST_ACCEPT } })).sha256,
      ).toBe(child.digest);
    }
    for (const blob of image.blobs) {
      const got = await fetchHashed(`${mirror!.url}/v2/${name}/blobs/${blob.digest}`);
      expect(got.sha256, blob.digest).toBe(blob.digest);
    }
  }

  const blobCount = async (): Promise<number> => (await scanBlobs(createStore(storeDir).layout)).size;
  const allStored = async (image: Pushed): Promise<boolean> => {
    const digests = [...image.manifests.map((m) => m.digest), image.topDigest, ...image.blobs.map((b) => b.digest)];
    const sizes = await Promise.all(digests.map((d) => mirror!.runtime.store.blobs.stat(d as never)));
    return sizes.every((s) => s !== undefined);
  };

  it('keeps a tag resolved every second and a pinned image, whole, and lets the rest age out', async () => {
    // Filled online, as a connected site (or an import) would leave the store.
    const upstreams = { 'docker.io': { url: registry.url, library: true } };
    mirror = await startMirror({ upstreams }, { storeDir });
    for (const [name, image] of [
      ['pulled', pulled],
      ['pinned', pinned],
      ['idle', idle],
    ] as const)
      await pull(name, image);
    await mirror.stop();
    await registry.stop();

    const before = await blobCount();
    mirror = await startMirror(
      {
        upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', library: true, freshFor: '1s', maxStale: '1s' } },
        offline: true,
        store: { idleTtl: `${IDLE_TTL_S}s`, pins: ['pinned:v1'] },
      },
      { storeDir },
    );
    let sweeps = 0;
    for (const startedMs = Date.now(); Date.now() - startedMs < RUN_S * 1000; sweeps++) {
      // What containerd does for an image it has: resolve the tag, fetch nothing else.
      const head = await fetchHashed(`${mirror.url}/v2/pulled/manifests/v1`, {
        method: 'HEAD',
        headers: { accept: CLIENT_MANIFEST_ACCEPT },
      });
      expect(head.status).toBe(200);
      await mirror.runtime.maintenance.run();
      await delay(1000);
    }
    const after = await blobCount();
    console.info(`offline store over ${sweeps} sweeps in ${RUN_S} s (idleTtl ${IDLE_TTL_S}s): ${before} blobs before, ${after} after`);

    expect(sweeps).toBeGreaterThanOrEqual(RUN_S / 2);
    expect(await allStored(pulled)).toBe(true);
    expect(await allStored(pinned)).toBe(true);
    expect(await mirror.runtime.records.findTag('docker.io', 'library/pulled', 'v1')).toBeDefined();
    expect(await mirror.runtime.records.findTag('docker.io', 'library/pinned', 'v1')).toBeDefined();
    // Nobody pulled `idle`: its manifest, config and layer went, and its tag with them.
    const idleParts = idle.blobs.length + 1;
    expect(after).toBe(before - idleParts);
    expect(await mirror.runtime.records.findTag('docker.io', 'library/idle', 'v1')).toBeUndefined();
    // And both kept images still pull whole, verified, with no upstream at all.
    await pull('pulled', pulled);
    await pull('pinned', pinned);
  });
});
