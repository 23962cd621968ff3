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
import { findDigest, type Digest } from '../oci/digest.js';

export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const LAYOUT_VERSION = '1.0.0';
export const REF_NAME = 'org.opencontainers.image.ref.name';
export const SOURCE_NAME = 'io.oci-mirror.image';
const INDEX_MEDIA_TYPE = 'application/vnd.oci.image.index.v1+json';

export interface BundleImage {
  /** `registry/repository:tag` or `registry/repository@digest`. */
  readonly name: string;
  readonly digest: Digest;
  readonly mediaType: string;
  readonly sizeBytes: number;
}

export function blobPath(digest: Digest): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

/** The digest a path under blobs/ names; undefined for any other path. */
export function digestOfPath(path: string): Digest | undefined {
  const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(path);
  return m ? findDigest(`sha256:${m[1]}`) : undefined;
}

export function layoutIndex(images: readonly BundleImage[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: INDEX_MEDIA_TYPE,
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
  const doc = JSON.parse(body.toString('utf8')) as { manifests?: unknown };
  if (!Array.isArray(doc.manifests)) throw new Error('index.json has no manifests list');
  const images: BundleImage[] = [];
  const unnamed: Digest[] = [];
  for (const item of doc.manifests as unknown[]) {
    const d = item as { mediaType?: unknown; digest?: unknown; size?: unknown; annotations?: Record<string, unknown> };
    const digest = findDigest(typeof d.digest === 'string' ? d.digest : undefined);
    if (!digest || typeof d.size !== 'number' || typeof d.mediaType !== 'string') {
      throw new Error(`index.json lists an invalid descriptor: ${JSON.stringify(item).slice(0, 200)}`);
    }
    const name = d.annotations?.[SOURCE_NAME] ?? d.annotations?.[REF_NAME];
    if (typeof name === 'string' && name !== '') images.push({ name, digest, mediaType: d.mediaType, sizeBytes: d.size });
    else unnamed.push(digest);
  }
  return { images, unnamed };
}
