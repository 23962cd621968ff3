import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseDigest } from '../../src/oci/digest.js';
import { createLayout, isProcessTempName, lockNames, parseFillRecordName, processTempName } from '../../src/store/layout.js';
import { createStoreLocks } from '../../src/store/lock.js';

const HEX = 'ab'.padEnd(64, '0');
const digest = parseDigest(`sha256:${HEX}`);

/** The tree on disk is a format: stores written by earlier versions must keep working. */
describe('store layout', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-layout-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps every path where existing stores have it', () => {
    const layout = createLayout('/s');
    expect(layout.blobPath(digest)).toBe(`/s/blobs/sha256/ab/${HEX}`);
    expect(layout.manifestMetaPath(digest)).toBe(`/s/manifests/sha256/ab/${HEX}.json`);
    expect(layout.tagPath('hub', 'library/alpine', '3')).toBe('/s/repositories/hub/library/alpine/_tags/3.json');
    expect(layout.linkPath('hub', 'library/alpine', digest)).toBe(`/s/repositories/hub/library/alpine/_links/${HEX}`);
    expect(layout.fillRecordPath(digest)).toBe(`/s/tmp/fills/${HEX}.json`);
    expect(layout.pinsPath).toBe('/s/pins.json');
    expect(layout.snapshotPath).toBe('/s/index.json');
    expect(layout.markerPath).toBe('/s/oci-mirror-store.json');
    expect(layout.lockPath(lockNames.fill(digest))).toBe(`/s/locks/fill-${HEX}.lock`);
    expect(layout.lockPath(lockNames.evict)).toBe('/s/locks/evict.lock');
    expect(layout.lockPath(lockNames.process('p1-00@h'))).toBe('/s/locks/process-p1-00@h.lock');
  });

  it('reads back the names it writes, and nothing else', () => {
    const name = processTempName({ instance: '0123456789abcdef' });
    expect(name).toBe('0123456789abcdef');
    expect(isProcessTempName(name)).toBe(true);
    // Written by earlier versions: still the mirror's, still swept once its lock is not held.
    expect(isProcessTempName('p42-0badc0de@node-a')).toBe(true);
    expect(isProcessTempName('fills')).toBe(false);
    expect(isProcessTempName('passwd')).toBe(false);
    expect(isProcessTempName('0123456789abcdef.bak')).toBe(false);
    expect(parseFillRecordName(`${HEX}.json`)).toBe(digest);
    expect(parseFillRecordName(`${HEX}.json.tmp`)).toBeUndefined();
  });

  it('takes a lock as the directory locks/<name>.lock', async () => {
    const locks = createStoreLocks(dir);
    const lease = await locks.tryLock(lockNames.fill(digest));
    expect(lease?.held).toBe(true);
    expect(await readdir(join(dir, 'locks'))).toEqual([`fill-${HEX}.lock`]);
    expect(await locks.tryLock(lockNames.fill(digest))).toBeUndefined();
    expect(await locks.isLocked(lockNames.fill(digest))).toBe(true);
    await lease?.release();
    expect(await locks.isLocked(lockNames.fill(digest))).toBe(false);
    expect(await readdir(join(dir, 'locks'))).toEqual([]);
  });
});
