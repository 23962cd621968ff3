import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { request } from 'undici';

/**
 * Test images from seeded random data: reproducible digests, no binary fixtures.
 * Layer bytes are an AES-256-CTR keystream (incompressible, hundreds of MB/s); the
 * registry does not look inside layers, and skopeo's `dir:` copies them as they are.
 */
export interface Seeded {
  readonly seed: string;
  readonly size: number;
}

const CHUNK = 1 << 20;

export function seededBytes(seed: string, size: number): Readable {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  let left = size;
  return new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const n = Math.min(CHUNK, left);
      left -= n;
      this.push(cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n)));
    },
  });
}

const digestMemo = new Map<string, Promise<string>>();

export function seededDigest(seed: string, size: number): Promise<string> {
  const key = `${seed}\0${size}`;
  let digest = digestMemo.get(key);
  if (!digest) {
    digest = (async () => {
      const hash = createHash('sha256');
      for await (const chunk of seededBytes(seed, size)) hash.update(chunk as Buffer);
      return `sha256:${hash.digest('hex')}`;
    })();
    digestMemo.set(key, digest);
  }
  return digest;
}

export function sha256(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

/** Monolithic upload (distribution spec §"Pushing a blob monolithically"). */
export async function pushBlob(registryUrl: string, repo: string, content: Seeded | Buffer): Promise<string> {
  const digest = Buffer.isBuffer(content) ? sha256(content) : await seededDigest(content.seed, content.size);
  const start = await request(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.body.dump();
  const location = start.headers['location'];
  if (start.statusCode !== 202 || typeof location !== 'string') {
    throw new Error(`upload start failed: ${start.statusCode}`);
  }
  const target = new URL(location, registryUrl);
  target.searchParams.set('digest', digest);
  const size = Buffer.isBuffer(content) ? content.length : content.size;
  const body = Buffer.isBuffer(content) ? content : seededBytes(content.seed, content.size);
  const put = await request(target, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body,
  });
  const text = await put.body.text();
  if (put.statusCode !== 201) throw new Error(`blob upload failed: ${put.statusCode} ${text}`);
  return digest;
}

export async function pushManifest(registryUrl: string, repo: string, reference: string, body: Buffer, mediaType: string): Promise<string> {
  const res = await request(`${registryUrl}/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'content-type': mediaType },
    body,
  });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`manifest push failed: ${res.statusCode} ${text}`);
  return sha256(body);
}

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** What an image is made of; `pushImage` turns it into blobs and a manifest. */
export interface ImageSpec {
  readonly mediaTypes: 'oci' | 'docker';
  readonly layers: readonly Seeded[];
  readonly platform?: Platform;
}

export function buildImage(spec: ImageSpec): ImageSpec {
  return spec;
}

export interface Pushed {
  readonly topDigest: string;
  readonly topMediaType: string;
  readonly manifests: readonly { digest: string; mediaType: string; size: number; platform?: Platform }[];
  readonly blobs: readonly { digest: string; size: number }[];
}

/** Manifest, index, config and layer media types of OCI and Docker images. */
export const TYPES = {
  oci: {
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    index: 'application/vnd.oci.image.index.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
  docker: {
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
} as const;

/** Pushes layers, config and manifest; tags it when `tag` is given. */
export async function pushImage(registryUrl: string, repo: string, tag: string | undefined, spec: ImageSpec): Promise<Pushed> {
  const types = TYPES[spec.mediaTypes];
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layers: { digest: string; size: number }[] = [];
  for (const layer of spec.layers) layers.push({ digest: await pushBlob(registryUrl, repo, layer), size: layer.size });
  const config = Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      config: {},
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
  return {
    topDigest: digest,
    topMediaType: types.manifest,
    manifests: [{ digest, mediaType: types.manifest, size: manifest.length, platform }],
    blobs: [...layers, { digest: configDigest, size: config.length }],
  };
}

/** Pushes each platform's image by digest, then an OCI index or Docker manifest list over them. */
export async function pushIndex(
  registryUrl: string,
  repo: string,
  tag: string,
  spec: { mediaTypes: 'oci' | 'docker'; images: readonly ImageSpec[] },
): Promise<Pushed> {
  const children: Pushed[] = [];
  for (const image of spec.images) children.push(await pushImage(registryUrl, repo, undefined, image));
  const type = TYPES[spec.mediaTypes].index;
  const manifests = children.map((c) => c.manifests[0]!);
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: type,
      manifests: manifests.map((m) => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: m.platform })),
    }),
  );
  const topDigest = await pushManifest(registryUrl, repo, tag, body, type);
  const blobs = new Map<string, { digest: string; size: number }>();
  for (const child of children) for (const blob of child.blobs) blobs.set(blob.digest, blob);
  return { topDigest, topMediaType: type, manifests, blobs: [...blobs.values()] };
}
