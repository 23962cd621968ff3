/**
 * Manifests are blobs (blobs.ts) with a sidecar, `manifests/sha256/<hex[0:2]>/<hex>.json`,
 * holding the media type the upstream served them with: a manifest is served with its
 * original bytes and type, never rewritten. Without its sidecar a blob is not a manifest
 * here, and the next request fetches it again.
 */
import { readFile } from 'node:fs/promises';
import type { Digest } from '../oci/digest.js';
import type { Blobs } from './blobs.js';
import { ifMissing, parseJson } from './fs-errors.js';
import type { StoreLayout } from './layout.js';
import type { TempArea } from './temp-area.js';

export interface StoredManifest {
  readonly mediaType: string;
  readonly body: Buffer;
}

export interface ManifestMeta {
  read(digest: Digest): Promise<StoredManifest | undefined>;
  findType(digest: Digest): Promise<string | undefined>;
  /** Stores the verified bytes (unless present) and then the media type. */
  put(digest: Digest, mediaType: string, body: Buffer): Promise<void>;
}

export function createManifestMeta(layout: StoreLayout, blobs: Blobs, temp: TempArea): ManifestMeta {
  async function findType(digest: Digest): Promise<string | undefined> {
    const text = await readFile(layout.manifestMetaPath(digest), 'utf8').catch(ifMissing(undefined));
    const meta = text === undefined ? undefined : (parseJson(text) as { mediaType?: unknown } | null | undefined);
    return typeof meta?.mediaType === 'string' ? meta.mediaType : undefined;
  }

  return {
    async read(digest) {
      const mediaType = await findType(digest);
      if (mediaType === undefined) return undefined;
      const body = await blobs.read(digest);
      return body && { mediaType, body };
    },
    findType,
    async put(digest, mediaType, body) {
      if ((await blobs.stat(digest)) !== body.length) await blobs.putVerified(digest, body);
      await temp.writeAtomic(layout.manifestMetaPath(digest), JSON.stringify({ mediaType }));
    },
  };
}
