/**
 * Where things live in the store directory. The disk is the truth for what exists:
 * a file under blobs/ is complete and verified (it only ever arrives by rename from
 * tmp/ after its sha256 and size were checked).
 *
 *   <root>/
 *     blobs/sha256/<hex[0:2]>/<hex>               verified content: layers, configs, manifests
 *     manifests/sha256/<hex[0:2]>/<hex>.json      {"mediaType"} of content that is a manifest
 *     repositories/<upstream>/<repository>/
 *       _tags/<tag>.json                          tag → digest record (see records.ts)
 *       _links/<hex>                              digest confirmed for this repository by an
 *                                                 upstream with credentials
 *     tmp/<process>/                              temp files of one live process (fills in
 *                                                 progress, metadata being written); removed
 *                                                 by the next start-up once that process is gone
 *     tmp/fills/<hex>.json                        {spool, sizeBytes, owner} of a fill in progress,
 *                                                 so other processes can follow its spool
 *     locks/<name>.lock                           cross-process locks (lock.ts): fill-<hex>,
 *                                                 evict, process-<process>
 *     index.json                                  recency snapshot (cache-index.ts); a hint, the
 *                                                 disk is the truth for what exists
 *
 * Upstream keys, repository names and tags are validated before they get here
 * (oci/reference.ts grammar: no `..`, no leading `.` or `_`, no `%`), so they are safe path
 * parts, and `_tags`/`_links` can never collide with a repository component.
 */
import { join } from 'node:path';
import { digestHex, type Digest } from '../oci/digest.js';

export interface StoreLayout {
  readonly root: string;
  readonly tmpDir: string;
  readonly blobsDir: string;
  readonly fillsDir: string;
  readonly snapshotPath: string;
  blobPath(digest: Digest): string;
  manifestMetaPath(digest: Digest): string;
  fillMetaPath(digest: Digest): string;
  tagPath(upstream: string, repository: string, tag: string): string;
  tagsDir(upstream: string, repository: string): string;
  linkPath(upstream: string, repository: string, digest: Digest): string;
}

export function createLayout(root: string): StoreLayout {
  const shard = (digest: Digest): [string, string] => {
    const hex = digestHex(digest);
    return [hex.slice(0, 2), hex];
  };
  return {
    root,
    tmpDir: join(root, 'tmp'),
    blobsDir: join(root, 'blobs', 'sha256'),
    fillsDir: join(root, 'tmp', 'fills'),
    snapshotPath: join(root, 'index.json'),
    blobPath(digest) {
      const [dir, hex] = shard(digest);
      return join(root, 'blobs', 'sha256', dir, hex);
    },
    manifestMetaPath(digest) {
      const [dir, hex] = shard(digest);
      return join(root, 'manifests', 'sha256', dir, `${hex}.json`);
    },
    fillMetaPath(digest) {
      return join(root, 'tmp', 'fills', `${digestHex(digest)}.json`);
    },
    tagPath(upstream, repository, tag) {
      return join(root, 'repositories', upstream, repository, '_tags', `${tag}.json`);
    },
    tagsDir(upstream, repository) {
      return join(root, 'repositories', upstream, repository, '_tags');
    },
    linkPath(upstream, repository, digest) {
      return join(root, 'repositories', upstream, repository, '_links', digestHex(digest));
    },
  };
}
