/**
 * Where things live in the store directory: every path and every lock name is built here,
 * and nowhere else. The disk is the truth for what exists: a file under blobs/ is complete
 * and verified (it only ever arrives by rename from tmp/ after its sha256 and size were
 * checked).
 *
 *   <root>/
 *     blobs/sha256/<hex[0:2]>/<hex>               verified content: layers, configs, manifests
 *     manifests/sha256/<hex[0:2]>/<hex>.json      {"mediaType"} of content that is a manifest
 *     repositories/<upstream>/<repository>/
 *       _tags/<tag>.json                          tag → digest record (see records.ts)
 *       _links/<hex>                              digest confirmed for this repository by an
 *                                                 upstream with credentials
 *       _lists/<key>.json                         a tags/list or referrers answer (lists.ts);
 *                                                 <key> is `tags-`/`referrers-` and a hash of
 *                                                 the rest of the request (digest, n, last)
 *     tmp/<instance>/                             temp files of one open store (fills in progress,
 *                                                 metadata being written), named by its instance id
 *                                                 (16 hex, new at every start; earlier versions
 *                                                 wrote tmp/p<pid>-<nonce>@<host>/); removed once
 *                                                 its process lock is no longer held
 *     tmp/fills/<hex>.json                        {spool, sizeBytes, owner} of a fill in progress,
 *                                                 so other processes can follow its spool
 *     tmp/<anything else>                         not the mirror's: never removed
 *     locks/<name>.lock                           cross-process locks (lock.ts), named by
 *                                                 `lockNames`: fill-<hex>, evict, process-<tmp dir>
 *     oci-mirror-store.json                       marker: {"format", "createdBy"}; the mirror opens a
 *                                                 directory only if it has it, is empty, or holds
 *                                                 nothing but the names above (a store written
 *                                                 before the marker existed)
 *     pins.json                                   image references pinned by `warm --pin`
 *     index.json                                  recency snapshot (cache-index.ts); a hint, the
 *                                                 disk is the truth for what exists
 *
 * Upstream keys, repository names and tags are validated before they get here
 * (oci/reference.ts grammar: no `..`, no leading `.` or `_`, no `%`), so they are safe path
 * parts, and `_tags`/`_links`/`_lists` can never collide with a repository component.
 */
import { join } from 'node:path';
import { digestFromHex, digestHex, type Digest } from '../oci/digest.js';
import type { Owner } from './lock.js';

export interface StoreLayout {
  readonly root: string;
  readonly tmpDir: string;
  readonly blobsDir: string;
  /** Where manifest sidecars live (`manifestMetaPath`), sharded as blobs/ is. */
  readonly manifestsDir: string;
  readonly fillsDir: string;
  readonly repositoriesDir: string;
  readonly snapshotPath: string;
  readonly pinsPath: string;
  readonly markerPath: string;
  blobPath(digest: Digest): string;
  /** `<hex[0:2]>/<hex>`: a blob's path under `blobsDir`, as a front proxy's internal location names it. */
  blobShardPath(digest: Digest): string;
  manifestMetaPath(digest: Digest): string;
  fillRecordPath(digest: Digest): string;
  tagPath(upstream: string, repository: string, tag: string): string;
  linkPath(upstream: string, repository: string, digest: Digest): string;
  /** `key`: `[a-z]+-[0-9a-f]+`, made by store/lists.ts. */
  listPath(upstream: string, repository: string, key: string): string;
  /** The directory proper-lockfile makes for the lock `name`. */
  lockPath(name: string): string;
  /** A process's own temp directory, by its name (`processTempName`). */
  processTempDir(name: string): string;
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
    manifestsDir: join(root, 'manifests', 'sha256'),
    fillsDir: join(root, 'tmp', 'fills'),
    repositoriesDir: join(root, 'repositories'),
    snapshotPath: join(root, 'index.json'),
    pinsPath: join(root, 'pins.json'),
    markerPath: join(root, STORE_MARKER),
    blobPath(digest) {
      const [dir, hex] = shard(digest);
      return join(root, 'blobs', 'sha256', dir, hex);
    },
    blobShardPath(digest) {
      return shard(digest).join('/');
    },
    manifestMetaPath(digest) {
      const [dir, hex] = shard(digest);
      return join(root, 'manifests', 'sha256', dir, `${hex}.json`);
    },
    fillRecordPath(digest) {
      return join(root, 'tmp', 'fills', `${digestHex(digest)}.json`);
    },
    tagPath(upstream, repository, tag) {
      return join(root, 'repositories', upstream, repository, '_tags', `${tag}.json`);
    },
    listPath(upstream, repository, key) {
      return join(root, 'repositories', upstream, repository, '_lists', `${key}.json`);
    },
    linkPath(upstream, repository, digest) {
      return join(root, 'repositories', upstream, repository, '_links', digestHex(digest));
    },
    lockPath(name) {
      return join(root, 'locks', `${name}.lock`);
    },
    processTempDir(name) {
      return join(root, 'tmp', name);
    },
  };
}

/** Names of the cross-process locks (lock.ts). */
export const lockNames = {
  /** Held by the process fetching `digest` from upstream. */
  fill: (digest: Digest): string => `fill-${digestHex(digest)}`,
  /** Held by the process evicting: one at a time. */
  evict: 'evict',
  /** Held by a live process over its temp directory `tmp/<name>/`. */
  process: (name: string): string => `process-${name}`,
} as const;

/** The marker file that makes a directory a store (store-marker.ts). */
export const STORE_MARKER = 'oci-mirror-store.json';

/** Every name the store puts at its root: a directory holding only these is a store of an earlier version. */
export const STORE_ROOT_NAMES: readonly string[] = [
  'blobs',
  'manifests',
  'repositories',
  'tmp',
  'locks',
  'index.json',
  'pins.json',
  STORE_MARKER,
];

/** A process's temp directory is named by its owner's instance id: `tmp/<instance>/`, held by `process-<instance>`. */
export function processTempName(owner: Owner): string {
  return owner.instance;
}

/**
 * True for a temp directory name the mirror generates: this version's `<instance>` or an earlier
 * version's `p<pid>-<nonce>@<host>`. Both are judged by their lock `process-<name>` alone; any
 * other entry of tmp/ is not the mirror's and is left alone.
 */
export function isProcessTempName(name: string): boolean {
  return /^[0-9a-f]{16}$/.test(name) || /^p\d+-[0-9a-f]+@.+$/.test(name);
}

/** The digest a file name in tmp/fills/ records; undefined for anything else. */
export function parseFillRecordName(name: string): Digest | undefined {
  const parsed = /^([0-9a-f]{64})\.json$/.exec(name);
  return parsed ? digestFromHex(parsed[1] as string) : undefined;
}
