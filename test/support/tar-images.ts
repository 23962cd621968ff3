import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { pushBlob, pushManifest, seededBytes, sha256, TYPES, type Platform } from './images.js';

/**
 * Images that clients which unpack (dockerd, podman, containerd) accept: each layer is a
 * real `tar` holding one file of seeded random bytes, gzipped, and the config lists the
 * uncompressed digests as `rootfs.diff_ids`, which those clients check while unpacking.
 * Built at test time from seeds, so there are no binary fixtures.
 */
export interface TarLayerSpec {
  readonly seed: string;
  /** Bytes of the file inside the tar (the gzipped blob is a little larger). */
  readonly size: number;
}

export interface TarImageSpec {
  readonly mediaTypes: 'oci' | 'docker';
  readonly layers: readonly TarLayerSpec[];
  readonly platform: Platform;
}

/** One platform's image as the registry holds it. */
export interface PublishedManifest {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
  readonly platform: Platform;
  readonly configDigest: string;
  readonly layerDigests: readonly string[];
}

export interface PublishedImage {
  /** The digest a client resolves the tag to: the manifest, or the index over them. */
  readonly topDigest: string;
  readonly multiArch: boolean;
  readonly manifests: readonly PublishedManifest[];
  /** Every blob (layers and configs) of every platform, once each. */
  readonly blobDigests: readonly string[];
}

/** A tar with one regular file `seed/<seed>.bin`, fixed owner and mtime, gzipped. */
export async function tarLayer(layer: TarLayerSpec): Promise<{ tar: Buffer; gz: Buffer }> {
  const chunks: Buffer[] = [];
  for await (const chunk of seededBytes(layer.seed, layer.size)) chunks.push(chunk as Buffer);
  const archive = pack();
  const out: Buffer[] = [];
  archive.on('data', (chunk: unknown) => out.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    archive.once('end', resolve);
    archive.once('error', reject);
  });
  archive.entry(
    { name: `seed/${layer.seed}.bin`, size: layer.size, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 },
    Buffer.concat(chunks),
  );
  archive.finalize();
  await ended;
  const tar = Buffer.concat(out);
  return { tar, gz: gzipSync(tar) };
}

/** Pushes layers, config and manifest; tags the manifest when `tag` is given. */
export async function pushTarImage(
  registryUrl: string,
  repo: string,
  tag: string | undefined,
  spec: TarImageSpec,
): Promise<PublishedImage> {
  const types = TYPES[spec.mediaTypes];
  const layers: { digest: string; size: number; diffId: string }[] = [];
  for (const layer of spec.layers) {
    const { tar, gz } = await tarLayer(layer);
    layers.push({ digest: await pushBlob(registryUrl, repo, gz), size: gz.length, diffId: sha256(tar) });
  }
  const { os, architecture, variant } = spec.platform;
  const config = Buffer.from(
    JSON.stringify({
      architecture,
      os,
      ...(variant ? { variant } : {}),
      created: '2024-01-01T00:00:00Z',
      config: { Cmd: ['/seed'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created: '2024-01-01T00:00:00Z', created_by: 'oci-mirror test' })),
    }),
  );
  const configDigest = await pushBlob(registryUrl, repo, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: types.manifest,
      config: { mediaType: types.config, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: types.layer, digest: l.digest, size: l.size })),
    }),
  );
  const digest = await pushManifest(registryUrl, repo, tag ?? sha256(manifest), manifest, types.manifest);
  const layerDigests = layers.map((l) => l.digest);
  return {
    topDigest: digest,
    multiArch: false,
    manifests: [{ digest, mediaType: types.manifest, size: manifest.length, platform: spec.platform, configDigest, layerDigests }],
    blobDigests: [...layerDigests, configDigest],
  };
}

/** Pushes each platform's image by digest, then an OCI index or Docker manifest list over them, tagged. */
export async function pushTarIndex(
  registryUrl: string,
  repo: string,
  tag: string,
  spec: { readonly mediaTypes: 'oci' | 'docker'; readonly images: readonly TarImageSpec[] },
): Promise<PublishedImage> {
  const manifests: PublishedManifest[] = [];
  for (const image of spec.images) manifests.push(...(await pushTarImage(registryUrl, repo, undefined, image)).manifests);
  const type = TYPES[spec.mediaTypes].index;
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: type,
      manifests: manifests.map((m) => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: m.platform })),
    }),
  );
  const topDigest = await pushManifest(registryUrl, repo, tag, body, type);
  const blobs = new Set(manifests.flatMap((m) => [...m.layerDigests, m.configDigest]));
  return { topDigest, multiArch: true, manifests, blobDigests: [...blobs] };
}

/** The platform a client on this machine pulls by default. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };
  const architecture = arch[process.arch];
  if (!architecture) throw new Error(`no test image for ${process.arch}`);
  return { os: 'linux', architecture };
}

/** The manifest a client on this machine pulls out of `image`. */
export function hostManifest(image: PublishedImage): PublishedManifest {
  const { architecture } = hostPlatform();
  const found = image.manifests.find((m) => m.platform.architecture === architecture);
  if (!found) throw new Error(`image has no ${architecture} manifest`);
  return found;
}
