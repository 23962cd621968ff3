/**
 * One walk over an image: the manifest, the child manifests of an index (those whose
 * platform is selected), and the blobs each image manifest references. The caller says
 * how a manifest is loaded (from the store, from the mirror, from a bundle); the walk
 * itself does no I/O and never reads a blob.
 */
import type { Digest } from './digest.js';
import { findManifest, parseManifest, references, type Descriptor, type Manifest } from './manifest.js';
import { platformMatches, type Platform } from './platform.js';

export interface LoadedManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Buffer;
  readonly manifest: Manifest;
}

export type ImagePart<M extends LoadedManifest = LoadedManifest> =
  /** A manifest: the root (no descriptor) or an index entry (its descriptor, with its platform). */
  | { readonly kind: 'manifest'; readonly loaded: M; readonly descriptor?: Descriptor }
  /** An index entry the loader does not have. */
  | { readonly kind: 'absent'; readonly descriptor: Descriptor }
  /** A config or layer; not loaded. */
  | { readonly kind: 'blob'; readonly descriptor: Descriptor };

/** What a loader is asked for: an index entry's descriptor, or just the digest of a root. */
export interface ManifestTarget {
  readonly digest: Digest;
  readonly mediaType?: string;
}

/** Loads the manifest a target names; undefined when it is not there. */
export type ManifestLoader<M extends LoadedManifest = LoadedManifest> = (target: ManifestTarget) => Promise<M | undefined>;

export interface WalkOptions {
  /** Index entries to follow; undefined follows every one. */
  readonly platforms?: readonly Platform[] | undefined;
}

/** The digest of any part of an image. */
export function partDigest(part: ImagePart): Digest {
  return part.kind === 'manifest' ? part.loaded.digest : part.descriptor.digest;
}

/** Parses the bytes into a manifest ready for the walk; throws MANIFEST_INVALID. */
export function loadedManifest(digest: Digest, mediaType: string | undefined, body: Buffer): LoadedManifest {
  const manifest = parseManifest(body, mediaType);
  return { digest, mediaType: manifest.mediaType, body, manifest };
}

/**
 * Yields every part of the image under `root`, each digest once, depth first (a manifest,
 * then what it references). Nested indexes are followed; the platform selection applies at
 * every index.
 */
export async function* walkImage<M extends LoadedManifest>(
  root: M,
  load: ManifestLoader<M>,
  options: WalkOptions = {},
): AsyncGenerator<ImagePart<M>> {
  const seen = new Set<Digest>([root.digest]);
  yield { kind: 'manifest', loaded: root };
  yield* below(root.manifest, load, options, seen);
}

async function* below<M extends LoadedManifest>(
  manifest: Manifest,
  load: ManifestLoader<M>,
  options: WalkOptions,
  seen: Set<Digest>,
): AsyncGenerator<ImagePart<M>> {
  for (const descriptor of references(manifest)) {
    if (seen.has(descriptor.digest)) continue;
    if (manifest.kind !== 'index') {
      seen.add(descriptor.digest);
      yield { kind: 'blob', descriptor };
      continue;
    }
    if (!platformMatches(descriptor.platform, options.platforms)) continue;
    seen.add(descriptor.digest);
    const child = await load(descriptor);
    if (!child) {
      yield { kind: 'absent', descriptor };
      continue;
    }
    yield { kind: 'manifest', loaded: child, descriptor };
    yield* below(child.manifest, load, options, seen);
  }
}

/** Reads a manifest's stored bytes (and the media type it was stored with) by digest. */
export type ManifestReader = (digest: Digest) => Promise<{ readonly mediaType?: string | undefined; readonly body: Buffer } | undefined>;

/**
 * Loads manifests from stored bytes. Bytes that are not a manifest we can read count as
 * absent: they reference nothing we could follow.
 */
export function storedManifests(read: ManifestReader): ManifestLoader {
  return async (target) => {
    const stored = await read(target.digest);
    const manifest = stored && findManifest(stored.body, stored.mediaType ?? target.mediaType);
    return stored && manifest && { digest: target.digest, mediaType: manifest.mediaType, body: stored.body, manifest };
  };
}
