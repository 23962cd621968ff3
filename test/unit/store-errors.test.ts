import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createCacheIndex } from '../../src/store/cache-index.js';
import { createLayout } from '../../src/store/layout.js';
import { scanBlobs } from '../../src/store/scan.js';
import { createStore, type Store } from '../../src/store/store.js';

const digestOf = (body: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);

/**
 * A directory the store cannot read is an error, never an empty store: read as empty, the
 * index would forget what the disk holds and temp files of dead processes would stay.
 * (Tests run as root, where mode 000 stops nothing: a file where a directory belongs
 * gives the same kind of error, ENOTDIR, on every machine.)
 */
describe('store read errors', () => {
  let dir: string;
  let store: Store;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-errors-'));
    store = createStore(dir);
    await store.init();
  });

  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Replaces a store directory by a plain file. */
  async function breakDir(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
    await writeFile(path, 'not a directory');
  }

  it('a missing blobs/ is an empty store', async () => {
    await rm(store.layout.blobsDir, { recursive: true });
    expect((await scanBlobs(createLayout(dir))).size).toBe(0);
  });

  it('the scan throws when blobs/ cannot be read, instead of finding nothing', async () => {
    const body = Buffer.from('held');
    await store.blobs.putVerified(digestOf(body), body);
    expect((await scanBlobs(store.layout)).size).toBe(1);
    await breakDir(store.layout.blobsDir);
    await expect(scanBlobs(store.layout)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('the index refuses to load from a blobs/ it cannot read', async () => {
    await breakDir(store.layout.blobsDir);
    const index = createCacheIndex({ store, maxSizeBytes: 1 << 30, idleTtlMs: 60_000 });
    await expect(index.load()).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('the temp sweep throws when tmp/fills/ cannot be read, instead of finding nothing', async () => {
    await breakDir(store.layout.fillsDir);
    await expect(store.sweepTemp()).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});
