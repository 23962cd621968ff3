/**
 * Warming: fill the cache with whole images ahead of the first pull (and before an
 * air-gapped export). Content goes through the same path as a client's pull — the
 * mirror's fills, verification and locks — so warming beside a running server that
 * shares the store never fetches anything twice, and re-running resumes: what is
 * stored is a hit.
 */
import type { Digest } from '../oci/digest.js';
import type { ImageRef } from '../oci/image-ref.js';
import type { Descriptor } from '../oci/manifest.js';
import type { Route } from '../oci/path.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { formatReference } from '../oci/reference.js';
import { walkImage, type LoadedManifest, type ManifestLoader, type ManifestTarget } from '../oci/walk.js';

export interface WarmedManifest extends LoadedManifest {
  readonly cached: boolean;
}

/** How warming reaches content: the mirror in this process, or a running mirror over HTTP. */
export interface WarmSource {
  getManifest(route: Route, reference: string): Promise<WarmedManifest>;
  /** Reads the whole blob (verified on the way); `onBytes` as bytes arrive. */
  fetchBlob(route: Route, digest: Digest, onBytes: (n: number) => void): Promise<{ cached: boolean }>;
}

export type WarmEvent =
  | {
      readonly type: 'resolved';
      readonly ref: string;
      readonly digest: Digest;
      readonly platforms: readonly string[];
      readonly blobs: number;
      readonly bytes: number;
    }
  | { readonly type: 'progress'; readonly ref: string; readonly bytes: number }
  | { readonly type: 'blob'; readonly ref: string; readonly digest: Digest; readonly sizeBytes: number; readonly cached: boolean }
  | { readonly type: 'done'; readonly ref: string; readonly summary: WarmSummary }
  | { readonly type: 'failed'; readonly ref: string; readonly reason: string };

export interface WarmSummary {
  readonly ref: string;
  readonly digest: Digest;
  readonly platforms: readonly string[];
  readonly bytes: number;
  readonly cachedBytes: number;
  readonly fetchedBytes: number;
  readonly durationMs: number;
}

export interface WarmOptions {
  readonly platforms: readonly Platform[] | undefined;
  /** Blob downloads in flight at once, over all images. */
  readonly concurrency: number;
  readonly onEvent: (event: WarmEvent) => void;
}

/** Warms every image; one failing does not stop the others. Resolves with the summaries. */
export async function warmImages(
  source: WarmSource,
  images: readonly { text: string; ref: ImageRef }[],
  options: WarmOptions,
): Promise<{ done: WarmSummary[]; failed: { ref: string; reason: string }[] }> {
  const slots = createSlots(options.concurrency);
  const done: WarmSummary[] = [];
  const failed: { ref: string; reason: string }[] = [];
  await Promise.all(
    images.map(async ({ text, ref }) => {
      try {
        const summary = await warmImage(source, text, ref, options, slots);
        done.push(summary);
        options.onEvent({ type: 'done', ref: text, summary });
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        failed.push({ ref: text, reason });
        options.onEvent({ type: 'failed', ref: text, reason });
      }
    }),
  );
  return { done, failed };
}

async function warmImage(source: WarmSource, text: string, ref: ImageRef, options: WarmOptions, slots: Slots): Promise<WarmSummary> {
  const startedMs = Date.now();
  const route: Route = { upstream: ref.upstream, repository: ref.repository };
  const top = await slots.run(() => source.getManifest(route, formatReference(ref.reference)));
  const load = (target: ManifestTarget): Promise<WarmedManifest> => slots.run(() => source.getManifest(route, target.digest));
  const { manifests, blobs, platforms } = await resolve(top, load, options.platforms);
  const manifestBytes = manifests.reduce((sum, m) => sum + m.body.length, 0);
  const bytes = manifestBytes + blobs.reduce((sum, b) => sum + b.size, 0);
  options.onEvent({ type: 'resolved', ref: text, digest: top.digest, platforms, blobs: blobs.length, bytes });
  let cachedBytes = manifests.filter((m) => m.cached).reduce((sum, m) => sum + m.body.length, 0);
  await Promise.all(
    blobs.map((blob) =>
      slots.run(async () => {
        const { cached } = await source.fetchBlob(route, blob.digest, (n) => options.onEvent({ type: 'progress', ref: text, bytes: n }));
        if (cached) cachedBytes += blob.size;
        options.onEvent({ type: 'blob', ref: text, digest: blob.digest, sizeBytes: blob.size, cached });
      }),
    ),
  );
  return {
    ref: text,
    digest: top.digest,
    platforms,
    bytes,
    cachedBytes,
    fetchedBytes: bytes - cachedBytes,
    durationMs: Date.now() - startedMs,
  };
}

/**
 * The manifests and blobs to warm. For an index, the selected platforms' manifests (at
 * least one must match) and their blobs; the index itself references no blob.
 */
async function resolve(
  top: WarmedManifest,
  load: ManifestLoader<WarmedManifest>,
  selected: readonly Platform[] | undefined,
): Promise<{ manifests: WarmedManifest[]; blobs: Descriptor[]; platforms: string[] }> {
  const manifests: WarmedManifest[] = [];
  const blobs: Descriptor[] = [];
  const platforms: string[] = [];
  for await (const part of walkImage(top, load, { platforms: selected })) {
    if (part.kind === 'blob') blobs.push(part.descriptor);
    else if (part.kind === 'manifest') {
      manifests.push(part.loaded);
      if (part.descriptor?.platform) platforms.push(formatPlatform(part.descriptor.platform));
    }
  }
  if (top.manifest.kind === 'index' && manifests.length === 1) throw new Error('no manifest in the index matches the selected platforms');
  return { manifests, blobs, platforms };
}

interface Slots {
  run<T>(work: () => Promise<T>): Promise<T>;
}

/** At most `limit` pieces of work at once, first come first served. */
function createSlots(limit: number): Slots {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    async run(work) {
      if (active >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
      active += 1;
      try {
        return await work();
      } finally {
        active -= 1;
        waiting.shift()?.();
      }
    },
  };
}
