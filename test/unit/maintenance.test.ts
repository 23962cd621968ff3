import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { createSilentLogger } from '../../src/log.js';
import { createMaintenance, maintenanceIntervalMs, type Maintenance } from '../../src/mirror/maintenance.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createStore, type Store } from '../../src/store/store.js';
import { createCacheIndex, type CacheIndex } from '../../src/store/cache-index.js';
import { createRecords, type Records } from '../../src/store/records.js';

const HOUR = 3_600_000;
const digestOf = (body: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);

/** The periodic pass on its one timer, driven by fake time over a real store on disk. */
describe('store maintenance', () => {
  let dir: string;
  let store: Store;
  let records: Records;
  let index: CacheIndex;
  let maintenance: Maintenance;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-maint-'));
    // Only the clock and the maintenance interval: the lock library's own setTimeout stays real.
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
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

  async function put(size: number): Promise<Digest> {
    const body = randomBytes(size);
    const digest = digestOf(body);
    await store.blobs.putVerified(digest, body);
    return digest;
  }

  function startMaintenance(idleTtl: string): void {
    const config = parseConfig({ store: { path: dir, maxSize: '1GiB', idleTtl } }, {});
    index = createCacheIndex({ store, maxSizeBytes: config.store.maxSizeBytes, idleTtlMs: config.store.idleTtlMs });
    maintenance = createMaintenance({ config, store, index, records, log: createSilentLogger() });
  }

  it('runs every tenth of the idle TTL, between one and ten minutes', () => {
    expect(maintenanceIntervalMs(30 * 24 * HOUR)).toBe(10 * 60_000);
    expect(maintenanceIntervalMs(HOUR)).toBe(6 * 60_000);
    expect(maintenanceIntervalMs(60_000)).toBe(60_000);
  });

  it('evicts what was not served for idleTtl on its own timer, and keeps what a hit refreshed', async () => {
    const idle = await put(1000);
    const served = await put(2000);
    startMaintenance('1h');
    expect(await index.load()).toBe('scan');
    maintenance.start();

    /** Minute by minute, letting each pass the timer starts finish (passes do real I/O). */
    const advance = async (minutes: number): Promise<void> => {
      for (let i = 0; i < minutes; i++) {
        await vi.advanceTimersByTimeAsync(60_000);
        await maintenance.idle();
      }
    };
    await advance(50);
    expect(await store.blobs.stat(idle)).toBe(1000);
    index.touch(served);
    await advance(20);
    // Only the timer ran passes here.
    expect(await store.blobs.stat(idle)).toBeUndefined();
    expect(await store.blobs.stat(served)).toBe(2000);
    expect(index.has(served)).toBe(true);
    expect(index.sizeBytes).toBe(2000);
  });

  it('drops tag records whose manifest is gone and keeps those still of use', async () => {
    const kept = await put(300);
    const gone = await put(400);
    startMaintenance('30d');
    await index.load();
    const record = (digest: Digest) => ({
      digest,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      sizeBytes: 1,
      checkedAtMs: Date.now(),
    });
    await records.putTag('docker.io', 'library/kept', 'v1', record(kept));
    await records.putTag('docker.io', 'library/gone', 'v1', record(gone));
    await store.blobs.remove(gone);
    await maintenance.run();
    expect(await records.findTag('docker.io', 'library/kept', 'v1')).toBeDefined();
    expect(await records.findTag('docker.io', 'library/gone', 'v1')).toBeUndefined();
    expect(index.has(gone)).toBe(false);
  });
});
