/**
 * Export: cached images → one streamed bundle (layout.ts). Only complete images go in:
 * every manifest and blob they need must be in the store. An index's platforms that
 * were never pulled (`warm --platform`) are left out; the index still names them, and
 * a client asking for one at the far side gets MANIFEST_UNKNOWN.
 */
import { createReadStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ImageRef } from '../oci/image-ref.js';
import { compilePattern } from '../oci/repository-pattern.js';
import { loadedManifest, storedManifests, walkImage } from '../oci/walk.js';
import type { Store } from '../store/store.js';
import type { Records } from '../store/records.js';
import { blobPath, layoutIndex, LAYOUT_FILE, LAYOUT_VERSION, INDEX_FILE, type BundleImage } from './layout.js';
import { createTarWriter } from './tar.js';

export interface ExportDeps {
  readonly store: Store;
  readonly records: Records;
}

/** What to export: named images, or every tagged image (optionally matching a pattern). */
export type ExportSelection =
  | { readonly kind: 'refs'; readonly images: readonly { text: string; ref: ImageRef }[] }
  | { readonly kind: 'all'; readonly pattern?: string };

export interface ExportPlan {
  readonly images: readonly BundleImage[];
  readonly failed: readonly { name: string; reason: string }[];
  /** Every blob to write, once. */
  readonly blobs: ReadonlyMap<Digest, number>;
  readonly totalBytes: number;
}

/** Resolves the selection against the store; writes nothing. */
export async function planExport(deps: ExportDeps, selection: ExportSelection): Promise<ExportPlan> {
  const images: BundleImage[] = [];
  const failed: { name: string; reason: string }[] = [];
  const blobs = new Map<Digest, number>();
  for (const { name, digest } of await selected(deps, selection)) {
    if (!digest) {
      failed.push({ name, reason: 'not in the cache (no tag record): warm it first' });
      continue;
    }
    try {
      const { mediaType, sizeBytes, content } = await closure(deps.store, digest);
      images.push({ name, digest, mediaType, sizeBytes });
      for (const [d, size] of content) blobs.set(d, size);
    } catch (err) {
      failed.push({ name, reason: (err as Error).message });
    }
  }
  let totalBytes = 0;
  for (const size of blobs.values()) totalBytes += size;
  return { images, failed, blobs, totalBytes };
}

/** Streams the plan's bundle into `out`; `onBytes` as blob bytes go out. */
export async function writeBundle(deps: ExportDeps, plan: ExportPlan, out: Writable, onBytes: (n: number) => void): Promise<void> {
  const tar = createTarWriter(out);
  await tar.addBuffer(LAYOUT_FILE, Buffer.from(JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION })));
  for (const [digest, sizeBytes] of plan.blobs) {
    const blob = await deps.store.blobs.open(digest);
    if (!blob || blob.sizeBytes !== sizeBytes) throw new Error(`${digest} left the store during the export; run it again`);
    const body = createReadStream('', { fd: blob.handle, highWaterMark: 1024 * 1024 });
    await tar.addStream(blobPath(digest), sizeBytes, body, onBytes);
  }
  await tar.addBuffer(INDEX_FILE, layoutIndex(plan.images));
  await tar.finish();
}

async function selected(deps: ExportDeps, selection: ExportSelection): Promise<{ name: string; digest: Digest | undefined }[]> {
  if (selection.kind === 'refs') {
    return Promise.all(
      selection.images.map(async ({ ref }) => {
        const reference = ref.reference;
        const base = `${ref.upstream}/${ref.repository}`;
        if (reference.kind === 'digest') return { name: `${base}@${reference.digest}`, digest: reference.digest };
        const record = await deps.records.findTag(ref.upstream, ref.repository, reference.tag);
        return { name: `${base}:${reference.tag}`, digest: record?.digest };
      }),
    );
  }
  const pattern = selection.pattern === undefined ? undefined : compilePattern(selection.pattern);
  const found: { name: string; digest: Digest }[] = [];
  for (const repo of await deps.records.listRepositories()) {
    const base = `${repo.upstream}/${repo.repository}`;
    if (pattern && !pattern.test(base)) continue;
    for (const [tag, digest] of repo.tags) found.push({ name: `${base}:${tag}`, digest });
  }
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

/** The image's manifests and blobs, all of which must be stored; index children only when present. */
async function closure(store: Store, top: Digest): Promise<{ mediaType: string; sizeBytes: number; content: Map<Digest, number> }> {
  const stored = await store.manifests.read(top);
  if (!stored) throw new Error(`manifest ${top} is not in the cache`);
  const root = loadedManifest(top, stored.mediaType, stored.body);
  const content = new Map<Digest, number>();
  let platforms = 0;
  for await (const part of walkImage(
    root,
    storedManifests((digest) => store.manifests.read(digest)),
  )) {
    if (part.kind === 'manifest') {
      content.set(part.loaded.digest, part.loaded.body.length);
      if (part.descriptor) platforms += 1;
    } else if (part.kind === 'blob') {
      content.set(part.descriptor.digest, await requireBlob(store, part.descriptor.digest));
    }
  }
  if (root.manifest.kind === 'index' && platforms === 0) throw new Error(`no platform of index ${top} is in the cache`);
  return { mediaType: stored.mediaType, sizeBytes: stored.body.length, content };
}

async function requireBlob(store: Store, digest: Digest): Promise<number> {
  const size = await store.blobs.stat(digest);
  if (size === undefined) throw new Error(`blob ${digest} is not in the cache (evicted, or never pulled): warm the image again`);
  return size;
}
