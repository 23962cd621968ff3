/**
 * What an imported image may claim. index.json is the one unverified file in a bundle,
 * so it decides nothing but names: each image's manifest, every child manifest and every
 * blob must be content the bundle carries (its bytes hashed on the way in), or content
 * already linked to the same repository. Manifests are parsed for shape (descriptors with
 * valid digests and sizes), every size must match the bytes, and each manifest's media
 * type comes from its own bytes (its `mediaType` field, else the descriptor that named
 * it, else its shape), never from index.json. An image is planned whole or refused.
 */
import { readFile } from 'node:fs/promises';
import type { Config } from '../config/types.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { createUpstreamTable } from '../oci/upstream-table.js';
import { loadedManifest, walkImage, type LoadedManifest, type ManifestTarget } from '../oci/walk.js';
import type { Records } from '../store/records.js';
import type { Store } from '../store/store.js';
import type { BundleImage } from './layout.js';

/** A blob the bundle holds: staged in a temp file, or already in the store (its bytes hashed and matched). */
export interface CarriedBlob {
  readonly sizeBytes: number;
  readonly stagedPath?: string;
}

export interface ImagePlan {
  readonly name: string;
  readonly ref: ImageRef;
  readonly root: LoadedManifest;
  readonly manifests: readonly LoadedManifest[];
  /** Every digest of the image: manifests and blobs. */
  readonly digests: readonly Digest[];
}

export interface PlanDeps {
  readonly config: Config;
  readonly store: Store;
  readonly records: Records;
}

/** Manifests are small; a larger "manifest" is refused before it is read. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export async function planImage(deps: PlanDeps, carried: ReadonlyMap<Digest, CarriedBlob>, image: BundleImage): Promise<ImagePlan> {
  const ref = parseImageRef(image.name, createUpstreamTable(deps.config));
  const sizeOf = async (digest: Digest): Promise<number | undefined> => {
    const blob = carried.get(digest);
    if (blob) return blob.sizeBytes;
    // Not in the bundle: only what this repository already has may be named.
    if (!(await deps.records.hasLink(ref.upstream, ref.repository, digest))) return undefined;
    return deps.store.blobs.stat(digest);
  };
  const load = async (target: ManifestTarget & { size?: number }): Promise<LoadedManifest | undefined> => {
    const sizeBytes = await sizeOf(target.digest);
    if (sizeBytes === undefined) return undefined;
    if (target.size !== undefined && target.size !== sizeBytes) throw sizeMismatch(target.digest, sizeBytes, target.size);
    if (sizeBytes > MAX_MANIFEST_BYTES) throw new Error(`manifest ${target.digest} is ${sizeBytes} bytes, too large for a manifest`);
    const body = await readBody(deps.store, carried.get(target.digest), target.digest);
    return parsed(target.digest, target.mediaType, body);
  };
  const root = await load({ digest: image.digest, size: image.sizeBytes });
  if (!root) throw new Error(`the bundle lacks its manifest ${image.digest}`);
  if (image.mediaType && image.mediaType !== root.mediaType) {
    throw new Error(`index.json calls manifest ${image.digest} a ${image.mediaType}, but it is a ${root.mediaType}`);
  }
  const manifests: LoadedManifest[] = [];
  const digests: Digest[] = [];
  for await (const part of walkImage(root, load)) {
    if (part.kind === 'manifest') {
      manifests.push(part.loaded);
      digests.push(part.loaded.digest);
    } else if (part.kind === 'blob') {
      const { digest, size } = part.descriptor;
      const sizeBytes = await sizeOf(digest);
      if (sizeBytes === undefined) throw new Error(`the bundle lacks blob ${digest}`);
      if (sizeBytes !== size) throw sizeMismatch(digest, sizeBytes, size);
      digests.push(digest);
    }
  }
  if (root.manifest.kind === 'index' && manifests.length === 1) throw new Error(`the bundle holds no platform of index ${image.digest}`);
  return { name: image.name, ref, root, manifests, digests };
}

function parsed(digest: Digest, mediaType: string | undefined, body: Buffer): LoadedManifest {
  try {
    return loadedManifest(digest, mediaType, body);
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'MANIFEST_INVALID')
      throw new Error(`manifest ${digest} is not valid: ${err.message}`, { cause: err });
    throw err;
  }
}

async function readBody(store: Store, blob: CarriedBlob | undefined, digest: Digest): Promise<Buffer> {
  const body = blob?.stagedPath === undefined ? await store.blobs.read(digest) : await readFile(blob.stagedPath);
  if (!body) throw new Error(`manifest ${digest} left the store during the import`);
  return body;
}

function sizeMismatch(digest: Digest, actual: number, claimed: number): Error {
  return new Error(`${digest} is ${actual} bytes, but is described as ${claimed}`);
}
