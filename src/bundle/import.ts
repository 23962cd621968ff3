/**
 * Import: a bundle (ours, or any OCI layout tar such as skopeo's `oci-archive`) → the
 * store, as if each image had been pulled from the registry it names. All or nothing:
 *
 *   1. read     the tar to its end-of-archive marker (tar-reader.ts). Each blob's size is
 *               checked against free space and `store.maxSize` from its header, before a
 *               byte is staged; then it is hashed into a temp file. A blob the store already
 *               holds is hashed and matched, not written again.
 *   2. plan     every image index.json names is checked against what the bundle carries
 *               (import-plan.ts). One image that is incomplete, misshapen or claims content
 *               the bundle does not carry refuses the whole bundle.
 *   3. commit   only then are the blobs the images reference renamed into the store (the
 *               rest are dropped), and manifest media types, links and tags written.
 *
 * A flipped byte, a cut tar or a lying index.json leaves the store as it was, and the
 * error names the offending entry or image.
 */
import type { Readable } from 'node:stream';
import type { Config } from '../config/types.js';
import { formatBytes } from '../config/units.js';
import { createDigester, type Digest } from '../oci/digest.js';
import { DigestMismatchError } from '../store/blobs.js';
import type { CacheIndex } from '../store/cache-index.js';
import type { Records } from '../store/records.js';
import type { Store } from '../store/store.js';
import { planImage, type CarriedBlob, type ImagePlan } from './import-plan.js';
import { digestOfPath, INDEX_FILE, LAYOUT_FILE, readLayoutIndex } from './layout.js';
import { readTar, TarFormatError, type TarEntry } from './tar-reader.js';
import { recordImportedTags } from './tag-lists.js';

export interface ImportDeps {
  readonly config: Config;
  readonly store: Store;
  readonly records: Records;
  readonly index: CacheIndex;
  readonly now?: () => number;
}

export interface ImportReport {
  readonly images: readonly { name: string; digest: Digest }[];
  readonly skipped: readonly { name: string; reason: string }[];
  /** Blobs written to the store / already there / carried but referenced by no image (not kept). */
  readonly added: number;
  readonly present: number;
  readonly unreferenced: number;
  readonly bytes: number;
}

/** index.json is small; anything larger is not one. */
const MAX_INDEX_BYTES = 16 * 1024 * 1024;

export async function importBundle(deps: ImportDeps, input: Readable, onBytes: (n: number) => void): Promise<ImportReport> {
  const carried = new Map<Digest, CarriedBlob>();
  try {
    const indexBody = await readBundle(deps, input, carried, onBytes);
    const layout = readLayoutIndex(indexBody);
    const plans: ImagePlan[] = [];
    for (const image of layout.images) {
      plans.push(
        await planImage(deps, carried, image).catch((err: unknown) => {
          throw new Error(`image ${image.name}: ${(err as Error).message}`, { cause: err });
        }),
      );
    }
    const { added, present, bytes } = await commitBlobs(deps, carried, new Set(plans.flatMap((p) => p.digests)));
    for (const plan of plans) await register(deps, plan);
    await recordImportedTags(
      deps.store,
      plans.flatMap(({ ref }) =>
        ref.reference.kind === 'tag' ? [{ upstream: ref.upstream, repository: ref.repository, tag: ref.reference.tag }] : [],
      ),
    );
    const unreferenced = [...carried.values()].filter((b) => b.stagedPath !== undefined).length;
    const skipped = layout.unnamed.map((digest) => ({
      name: digest,
      reason: 'no image name in index.json (give the archive a name when you create it)',
    }));
    return { images: plans.map((p) => ({ name: p.name, digest: p.root.digest })), skipped, added, present, unreferenced, bytes };
  } finally {
    // Best effort: a temp file left behind is swept with the temp area; the import's own error matters more.
    for (const { stagedPath } of carried.values()) if (stagedPath) await deps.store.blobs.discardStaged(stagedPath).catch(() => undefined);
  }
}

/** Reads the whole tar, staging its blobs into `carried`; answers index.json's bytes. */
async function readBundle(
  deps: ImportDeps,
  input: Readable,
  carried: Map<Digest, CarriedBlob>,
  onBytes: (n: number) => void,
): Promise<Buffer> {
  const budget = await createBudget(deps);
  let indexBody: Buffer | undefined;
  let entries = 0;
  await readTar(input, async (entry) => {
    entries += 1;
    if (!entry.isFile) return;
    const digest = digestOfPath(entry.name);
    if (digest) {
      if (!carried.has(digest)) carried.set(digest, await takeBlob(deps, budget, entry, digest, onBytes));
    } else if (entry.name === INDEX_FILE) {
      indexBody = await readAll(entry, MAX_INDEX_BYTES);
    } else if (entry.name === LAYOUT_FILE) {
      const layout = JSON.parse((await readAll(entry, 4096)).toString('utf8')) as { imageLayoutVersion?: unknown };
      if (typeof layout.imageLayoutVersion !== 'string') throw new Error('oci-layout has no imageLayoutVersion');
    }
  }).catch((err: unknown) => {
    if (!(err instanceof TarFormatError)) throw err;
    throw new Error(`the bundle is not a complete tar: ${err.message}`, { cause: err });
  });
  if (entries === 0) throw new Error('the bundle is empty: it ends before its first entry (is it a tar at all?)');
  if (!indexBody) throw new Error('not an OCI image layout: index.json is missing');
  return indexBody;
}

/** Stages a blob entry; one the store holds already is only hashed and matched. */
async function takeBlob(
  deps: ImportDeps,
  budget: Budget,
  entry: TarEntry,
  digest: Digest,
  onBytes: (n: number) => void,
): Promise<CarriedBlob> {
  const corrupt = (err: unknown): never => {
    if (err instanceof DigestMismatchError)
      throw new Error(`bundle entry ${entry.name} is corrupt: its content is ${err.actual}, not ${digest}`);
    throw err;
  };
  if ((await deps.store.blobs.stat(digest)) === entry.sizeBytes) {
    await matchDigest(counted(entry.body, onBytes), digest, entry.sizeBytes).catch(corrupt);
    return { sizeBytes: entry.sizeBytes };
  }
  budget.reserve(entry.name, entry.sizeBytes);
  const stagedPath = await deps.store.blobs.stage(digest, counted(entry.body, onBytes), entry.sizeBytes).catch(corrupt);
  return { sizeBytes: entry.sizeBytes, stagedPath };
}

async function matchDigest(body: AsyncIterable<Buffer>, digest: Digest, sizeBytes: number): Promise<void> {
  const hash = createDigester();
  let read = 0;
  for await (const chunk of body) {
    hash.update(chunk);
    read += chunk.length;
  }
  const actual = hash.digest();
  if (actual !== digest || read !== sizeBytes) throw new DigestMismatchError(digest, actual);
}

interface Budget {
  /** Throws, naming the entry, when `sizeBytes` more would not fit. */
  reserve(name: string, sizeBytes: number): void;
}

/** New content must fit on the file system and within `store.maxSize`, checked before it is staged. */
async function createBudget(deps: ImportDeps): Promise<Budget> {
  const freeBytes = await deps.store.blobs.freeBytes();
  const maxBytes = deps.config.store.maxSizeBytes;
  let newBytes = 0;
  let diskBytes = 0;
  return {
    reserve(name, sizeBytes) {
      if (newBytes + sizeBytes > maxBytes) {
        throw new Error(`bundle entry ${name}: the bundle brings more than store.maxSize (${formatBytes(maxBytes)}) of new content`);
      }
      // What a file takes on disk: whole 4 KiB blocks, and one more for its inode and directory entry.
      const blocks = Math.ceil(sizeBytes / 4096) * 4096 + 4096;
      if (diskBytes + blocks > freeBytes) {
        throw new Error(
          `bundle entry ${name} (${formatBytes(sizeBytes)}) does not fit: ${formatBytes(freeBytes - diskBytes)} free on the store's file system`,
        );
      }
      newBytes += sizeBytes;
      diskBytes += blocks;
    },
  };
}

/** Renames the staged blobs some image references into the store; the rest stay staged, to be dropped. */
async function commitBlobs(deps: ImportDeps, carried: Map<Digest, CarriedBlob>, needed: ReadonlySet<Digest>) {
  let added = 0;
  let present = 0;
  let bytes = 0;
  for (const [digest, blob] of carried) {
    if (!needed.has(digest)) continue;
    if (blob.stagedPath === undefined) present += 1;
    else {
      await deps.store.blobs.commitStaged(blob.stagedPath, digest);
      carried.set(digest, { sizeBytes: blob.sizeBytes });
      added += 1;
      bytes += blob.sizeBytes;
    }
    deps.index.touch(digest, blob.sizeBytes);
  }
  return { added, present, bytes };
}

/**
 * Files one image under its registry, repository and tag. A manifest's media type record
 * is written only where the store has none: what the store already knows is not rewritten.
 */
async function register(deps: ImportDeps, plan: ImagePlan): Promise<void> {
  const { ref, root } = plan;
  for (const manifest of plan.manifests) {
    if ((await deps.store.manifests.findType(manifest.digest)) === undefined) {
      await deps.store.manifests.put(manifest.digest, manifest.mediaType, manifest.body);
    }
  }
  for (const digest of plan.digests) await deps.records.putLink(ref.upstream, ref.repository, digest);
  if (ref.reference.kind === 'tag') {
    await deps.records.putTag(ref.upstream, ref.repository, ref.reference.tag, {
      digest: root.digest,
      mediaType: (await deps.store.manifests.findType(root.digest)) ?? root.mediaType,
      sizeBytes: root.body.length,
      checkedAtMs: (deps.now ?? Date.now)(),
      imported: true,
    });
  }
}

async function* counted(body: AsyncIterable<Buffer>, onBytes: (n: number) => void): AsyncIterable<Buffer> {
  for await (const chunk of body) {
    onBytes(chunk.length);
    yield chunk;
  }
}

async function readAll(entry: TarEntry, maxBytes: number): Promise<Buffer> {
  if (entry.sizeBytes > maxBytes) throw new Error(`bundle entry ${entry.name} is larger than ${maxBytes} bytes`);
  const chunks: Buffer[] = [];
  for await (const chunk of entry.body) chunks.push(chunk);
  return Buffer.concat(chunks);
}
