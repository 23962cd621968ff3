/**
 * Import: a bundle (ours, or any OCI layout tar such as skopeo's `oci-archive`) → the
 * store, as if each image had been pulled from the registry it names. All or nothing:
 * every blob is hashed while it is read and staged in a temp file; only when the whole
 * tar was read, every digest matched and index.json parsed, are the blobs renamed into
 * the store and the manifests and tag records written. A flipped byte or a truncated
 * tar leaves the store as it was, and the error names the offending entry.
 */
import type { Readable } from 'node:stream';
import type { Config } from '../config/types.js';
import { createUpstreamTable } from '../oci/upstream-table.js';
import type { Digest } from '../oci/digest.js';
import { parseImageRef } from '../oci/image-ref.js';
import { loadedManifest, storedManifests, walkImage } from '../oci/walk.js';
import { DigestMismatchError } from '../store/blobs.js';
import type { Store } from '../store/store.js';
import type { CacheIndex } from '../store/cache-index.js';
import type { Records } from '../store/records.js';
import { digestOfPath, INDEX_FILE, LAYOUT_FILE, readLayoutIndex, type BundleImage } from './layout.js';
import { readTar } from './tar.js';

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
  /** Blobs written to the store / already there. */
  readonly added: number;
  readonly present: number;
  readonly bytes: number;
}

/** index.json is small; anything larger is not one. */
const MAX_INDEX_BYTES = 16 * 1024 * 1024;

export async function importBundle(deps: ImportDeps, input: Readable, onBytes: (n: number) => void): Promise<ImportReport> {
  const staged = new Map<Digest, { path: string; sizeBytes: number }>();
  const present = new Map<Digest, number>();
  let indexBody: Buffer | undefined;
  let bytes = 0;
  try {
    await readTar(input, async (entry) => {
      if (!entry.isFile) return;
      const digest = digestOfPath(entry.name);
      if (digest) {
        if (staged.has(digest) || (await deps.store.blobs.stat(digest)) === entry.sizeBytes) {
          present.set(digest, entry.sizeBytes);
          for await (const chunk of entry.body) onBytes(chunk.length);
          return;
        }
        const path = await deps.store.blobs.stage(digest, counted(entry.body, onBytes), entry.sizeBytes).catch((err: unknown) => {
          if (err instanceof DigestMismatchError) {
            throw new Error(`bundle entry ${entry.name} is corrupt: its content is ${err.actual}, not ${digest}`);
          }
          throw err;
        });
        staged.set(digest, { path, sizeBytes: entry.sizeBytes });
        bytes += entry.sizeBytes;
      } else if (entry.name === INDEX_FILE) {
        indexBody = await readAll(entry.body, MAX_INDEX_BYTES);
      } else if (entry.name === LAYOUT_FILE) {
        const layout = JSON.parse((await readAll(entry.body, 4096)).toString('utf8')) as { imageLayoutVersion?: unknown };
        if (typeof layout.imageLayoutVersion !== 'string') throw new Error('oci-layout has no imageLayoutVersion');
      }
    }).catch((err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(message.startsWith('bundle entry') ? message : `the bundle is not a complete tar: ${message}`, { cause: err });
    });
    if (!indexBody) throw new Error('not an OCI image layout: index.json is missing (a truncated bundle?)');
    const layout = readLayoutIndex(indexBody);
    let added = 0;
    for (const [digest, { path, sizeBytes }] of staged) {
      await deps.store.blobs.commitStaged(path, digest);
      staged.delete(digest);
      deps.index.touch(digest, sizeBytes);
      added += 1;
    }
    for (const [digest, sizeBytes] of present) deps.index.touch(digest, sizeBytes);
    const images: { name: string; digest: Digest }[] = [];
    const skipped: { name: string; reason: string }[] = layout.unnamed.map((digest) => ({ name: digest as string, reason: 'no image name in index.json (give the archive a name when you create it)' }));
    for (const image of layout.images) {
      try {
        await register(deps, image);
        images.push({ name: image.name, digest: image.digest });
      } catch (err) {
        skipped.push({ name: image.name, reason: (err as Error).message });
      }
    }
    return { images, skipped, added, present: present.size, bytes };
  } finally {
    // Best effort: a temp file left behind is swept with the temp area; the import's own error matters more.
    for (const { path } of staged.values()) await deps.store.blobs.discardStaged(path).catch(() => undefined);
  }
}

/** Files one image under its registry, repository and tag, with media types for its manifests. */
async function register(deps: ImportDeps, image: BundleImage): Promise<void> {
  const ref = parseImageRef(image.name, createUpstreamTable(deps.config));
  const body = await manifestBody(deps.store, image.digest);
  const root = loadedManifest(image.digest, image.mediaType || undefined, body);
  const children = storedManifests(async (digest) => {
    const childBody = await deps.store.blobs.read(digest);
    return childBody && { body: childBody };
  });
  const digests: Digest[] = [];
  for await (const part of walkImage(root, children)) {
    if (part.kind === 'manifest') {
      const mediaType = part.descriptor ? part.descriptor.mediaType : image.mediaType || root.mediaType;
      await deps.store.manifests.put(part.loaded.digest, mediaType, part.loaded.body);
      digests.push(part.loaded.digest);
    } else if (part.kind === 'blob') {
      const { digest } = part.descriptor;
      if ((await deps.store.blobs.stat(digest)) === undefined) throw new Error(`the bundle lacks blob ${digest}`);
      digests.push(digest);
    }
  }
  for (const digest of digests) await deps.records.putLink(ref.upstream, ref.repository, digest);
  if (ref.reference.kind === 'tag') {
    await deps.records.putTag(ref.upstream, ref.repository, ref.reference.tag, {
      digest: image.digest,
      mediaType: image.mediaType,
      sizeBytes: body.length,
      checkedAtMs: (deps.now ?? Date.now)(),
      imported: true,
    });
  }
}

async function manifestBody(store: Store, digest: Digest): Promise<Buffer> {
  const body = await store.blobs.read(digest);
  if (!body) throw new Error(`the bundle lacks manifest ${digest}`);
  return body;
}

async function* counted(body: AsyncIterable<Buffer>, onBytes: (n: number) => void): AsyncIterable<Buffer> {
  for await (const chunk of body) {
    onBytes(chunk.length);
    yield chunk;
  }
}

async function readAll(body: AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > maxBytes) throw new Error(`an entry is larger than ${maxBytes} bytes where a small file was expected`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
