import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ifMissing } from './fs-errors.js';
import type { StoreLayout } from './layout.js';

/** A file under blobs/ as the disk has it: the disk is the truth for what exists. */
export interface ScannedBlob {
  readonly sizeBytes: number;
  /** Recency on disk: commit time, moved forward by touches on hits. */
  readonly mtimeMs: number;
}

const HEX = /^[0-9a-f]{64}$/;
/** Stats in flight at once: enough to keep the thread pool busy, few enough to share it. */
const STAT_CONCURRENCY = 64;

/**
 * Every committed blob by its hex digest. Files that are not digests are skipped, and so
 * is what eviction removes meanwhile (ENOENT); any other error (a permission, an I/O
 * error) is thrown: read as "empty", it would make the store forget what it holds.
 */
export async function scanBlobs(layout: StoreLayout): Promise<Map<string, ScannedBlob>> {
  const found = new Map<string, ScannedBlob>();
  const shards = await readdir(layout.blobsDir, { withFileTypes: true }).catch(ifMissing([]));
  for (const shard of shards) {
    if (!shard.isDirectory() || !/^[0-9a-f]{2}$/.test(shard.name)) continue;
    const dir = join(layout.blobsDir, shard.name);
    const names = (await readdir(dir).catch(ifMissing([]))).filter((n) => HEX.test(n) && n.startsWith(shard.name));
    for (let i = 0; i < names.length; i += STAT_CONCURRENCY) {
      const batch = names.slice(i, i + STAT_CONCURRENCY);
      const infos = await Promise.all(batch.map((n) => stat(join(dir, n)).catch(ifMissing(undefined))));
      infos.forEach((info, k) => {
        if (info?.isFile()) found.set(batch[k] as string, { sizeBytes: info.size, mtimeMs: info.mtimeMs });
      });
    }
  }
  return found;
}
