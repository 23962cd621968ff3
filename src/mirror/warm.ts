/**
 * Warming: fill the cache with whole images ahead of the first pull (and before an
 * air-gapped export). Content goes through the same path as a client's pull — the
 * mirror's fills, verification and locks — so warming beside a running server that
 * shares the store never fetches anything twice, and re-running resumes: what is
 * stored is a hit.
 */
import type { Digest } from '../oci/digest.js';
import type { ImageRef } from '../oci/image-ref.js';
import { INDEX_TYPES } from '../oci/media-types.js';
import { formatReference } from '../oci/reference.js';
import type { Route } from '../oci/path.js';

/** A platform as `os/architecture[/variant]`, e.g. `linux/arm64/v8`. */
export interface PlatformFilter {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface WarmedManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Buffer;
  readonly cached: boolean;
}

/** How warming reaches content: the mirror in this process, or a running mirror over HTTP. */
export interface WarmSource {
  getManifest(route: Route, reference: string): Promise<WarmedManifest>;
  /** Reads the whole blob (verified on the way); `onBytes` as bytes arrive. */
  fetchBlob(route: Route, digest: Digest, onBytes: (n: number) => void): Promise<{ cached: boolean }>;
}

export type WarmEvent =
  | { readonly type: 'resolved'; readonly ref: string; readonly digest: Digest; readonly platforms: readonly string[]; readonly blobs: number; readonly bytes: number }
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

interface Descriptor {
  readonly digest: Digest;
  readonly size: number;
  readonly platform?: PlatformFilter;
}

export interface WarmOptions {
  readonly platforms: readonly PlatformFilter[] | undefined;
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

async function warmImage(
  source: WarmSource,
  text: string,
  ref: ImageRef,
  options: WarmOptions,
  slots: Slots,
): Promise<WarmSummary> {
  const startedMs = Date.now();
  const route: Route = { upstream: ref.upstream, repository: ref.repository };
  const top = await slots.run(() => source.getManifest(route, formatReference(ref.reference)));
  const manifests: WarmedManifest[] = [top];
  const platforms: string[] = [];
  if (INDEX_TYPES.has(top.mediaType) || Array.isArray(parse(top.body).manifests)) {
    const children = descriptors(parse(top.body).manifests).filter((d) => matches(d.platform, options.platforms));
    if (children.length === 0) throw new Error('no manifest in the index matches the selected platforms');
    for (const child of children) {
      manifests.push(await slots.run(() => source.getManifest(route, child.digest)));
      if (child.platform) platforms.push(formatPlatform(child.platform));
    }
  }
  const blobs = new Map<Digest, Descriptor>();
  for (const manifest of manifests.slice(manifests.length > 1 ? 1 : 0)) {
    const doc = parse(manifest.body);
    for (const d of descriptors([doc.config, ...(Array.isArray(doc.layers) ? doc.layers : [])])) blobs.set(d.digest, d);
  }
  const manifestBytes = manifests.reduce((sum, m) => sum + m.body.length, 0);
  const bytes = manifestBytes + [...blobs.values()].reduce((sum, b) => sum + b.size, 0);
  options.onEvent({ type: 'resolved', ref: text, digest: top.digest, platforms, blobs: blobs.size, bytes });
  let cachedBytes = manifests.filter((m) => m.cached).reduce((sum, m) => sum + m.body.length, 0);
  await Promise.all(
    [...blobs.values()].map((blob) =>
      slots.run(async () => {
        const { cached } = await source.fetchBlob(route, blob.digest, (n) => options.onEvent({ type: 'progress', ref: text, bytes: n }));
        if (cached) cachedBytes += blob.size;
        options.onEvent({ type: 'blob', ref: text, digest: blob.digest, sizeBytes: blob.size, cached });
      }),
    ),
  );
  return { ref: text, digest: top.digest, platforms, bytes, cachedBytes, fetchedBytes: bytes - cachedBytes, durationMs: Date.now() - startedMs };
}

/** `linux/amd64`, `linux/arm64/v8`; undefined when the text is not one. */
export function parsePlatform(text: string): PlatformFilter | undefined {
  const [os, architecture, variant, ...rest] = text.split('/');
  if (!os || !architecture || rest.length > 0) return undefined;
  return { os, architecture, ...(variant ? { variant } : {}) };
}

function formatPlatform(p: PlatformFilter): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** A filter without a variant matches every variant (`linux/arm64` takes `linux/arm64/v8`). */
function matches(platform: PlatformFilter | undefined, filters: readonly PlatformFilter[] | undefined): boolean {
  if (!filters) return true;
  if (!platform) return false;
  return filters.some(
    (f) => f.os === platform.os && f.architecture === platform.architecture && (f.variant === undefined || f.variant === platform.variant),
  );
}

function parse(body: Buffer): { manifests?: unknown; config?: unknown; layers?: unknown } {
  try {
    const doc = JSON.parse(body.toString('utf8')) as unknown;
    return typeof doc === 'object' && doc !== null ? doc : {};
  } catch {
    return {};
  }
}

function descriptors(list: unknown): Descriptor[] {
  if (!Array.isArray(list)) return [];
  const found: Descriptor[] = [];
  for (const item of list as unknown[]) {
    const d = item as { digest?: unknown; size?: unknown; platform?: { os?: unknown; architecture?: unknown; variant?: unknown } } | undefined;
    if (typeof d?.digest !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(d.digest) || typeof d.size !== 'number') continue;
    const p = d.platform;
    const platform =
      typeof p?.os === 'string' && typeof p.architecture === 'string'
        ? { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) }
        : undefined;
    found.push({ digest: d.digest as Digest, size: d.size, ...(platform ? { platform } : {}) });
  }
  return found;
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
