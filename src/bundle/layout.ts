/**
 * The bundle format: a tar of an OCI image layout (image-spec `image-layout.md`), so
 * `skopeo copy oci-archive:bundle.tar:<ref>` reads it too.
 *
 *   oci-layout                     {"imageLayoutVersion": "1.0.0"}
 *   blobs/sha256/<hex>             every blob and manifest, once, whatever shares it
 *   index.json                     one descriptor per image, annotated with its name
 *
 * Each image's descriptor carries `org.opencontainers.image.ref.name` (the full name,
 * `docker.io/library/alpine:3.20`; the image-spec grammar allows `/` and `:`) and
 * `io.oci-mirror.image` with the same, which import reads to file the image under the
 * registry it came from. index.json is written last, after every blob it names.
 */
import { digestFromHex, digestHex, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { parseManifest, type Descriptor } from '../oci/manifest.js';
import { MEDIA_TYPES } from '../oci/media-types.js';

export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const LAYOUT_VERSION = '1.0.0';
export const REF_NAME = 'org.opencontainers.image.ref.name';
export const SOURCE_NAME = 'io.oci-mirror.image';

export interface BundleImage {
  /** `registry/repository:tag` or `registry/repository@digest`. */
  readonly name: string;
  readonly digest: Digest;
  readonly mediaType: string;
  readonly sizeBytes: number;
}

export function blobPath(digest: Digest): string {
  return `blobs/sha256/${digestHex(digest)}`;
}

/** The digest a path under blobs/ names; undefined for any other path. */
export function digestOfPath(path: string): Digest | undefined {
  const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(path);
  return m?.[1] === undefined ? undefined : digestFromHex(m[1]);
}

export function layoutIndex(images: readonly BundleImage[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: images.map((image) => ({
        mediaType: image.mediaType,
        digest: image.digest,
        size: image.sizeBytes,
        annotations: { [REF_NAME]: image.name, [SOURCE_NAME]: image.name },
      })),
    }),
  );
}

/** The images an index.json names (ours, or skopeo's with a bare ref.name). */
export function readLayoutIndex(body: Buffer): { images: BundleImage[]; unnamed: Digest[] } {
  const index = parseLayoutIndex(body);
  const images: BundleImage[] = [];
  const unnamed: Digest[] = [];
  for (const { digest, mediaType, size, annotations } of index.manifests) {
    const name = annotations?.[SOURCE_NAME] ?? annotations?.[REF_NAME];
    if (name) images.push({ name, digest, mediaType, sizeBytes: size });
    else unnamed.push(digest);
  }
  return { images, unnamed };
}

/** image-spec `image-layout.md`: index.json is an image index. */
function parseLayoutIndex(body: Buffer): { readonly manifests: readonly Descriptor[] } {
  let index;
  try {
    index = parseManifest(body, MEDIA_TYPES.ociIndex);
  } catch (err) {
    if (!(err instanceof RegistryError && err.code === 'MANIFEST_INVALID')) throw err;
    throw new Error(`index.json is not an image index: ${err.message}`, { cause: err });
  }
  if (index.kind !== 'index') throw new Error('index.json has no manifests list');
  return index;
}
