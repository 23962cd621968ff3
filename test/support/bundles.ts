import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/**
 * Bundles written byte by byte, so a test controls what a tar writer would not let it
 * get wrong: the end-of-archive marker, a cut, what follows, lying names and headers.
 */
export interface TarFile {
  readonly name: string;
  readonly body: Buffer;
  /** The header's size field, when it should lie about the body. */
  readonly headerSize?: number;
  /** '0' (a file) unless given. */
  readonly type?: string;
}

const BLOCK = 512;

export function sha256(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

/** A ustar header: name, mode, ids, size, mtime, checksum, type, magic. */
export function tarHeader(name: string, sizeBytes: number, type = '0'): Buffer {
  const header = Buffer.alloc(BLOCK);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100, 'latin1');
  header.write('0000000\0', 108, 'latin1');
  header.write('0000000\0', 116, 'latin1');
  if (sizeBytes < 8 ** 11) header.write(`${sizeBytes.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  else {
    // GNU base-256, for 8 GiB and more: the high bit set, then the size big-endian.
    header[124] = 0x80;
    header.writeBigUInt64BE(BigInt(sizeBytes), 128);
  }
  header.write('00000000000\0', 136, 'latin1');
  header.write(type, 156, 'latin1');
  header.write('ustar\x0000', 257, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return header;
}

/** The entries, each padded to a block; `end: false` leaves out the end-of-archive marker. */
export function tarOf(files: readonly TarFile[], options: { end?: boolean; trailing?: Buffer } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const file of files) {
    parts.push(tarHeader(file.name, file.headerSize ?? file.body.length, file.type), file.body);
    parts.push(Buffer.alloc((BLOCK - (file.body.length % BLOCK)) % BLOCK));
  }
  if (options.end !== false) parts.push(Buffer.alloc(2 * BLOCK));
  if (options.trailing) parts.push(options.trailing);
  return Buffer.concat(parts);
}

export const OCI = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

/** One small OCI image: its blobs by digest, and its manifest. */
export interface DemoImage {
  readonly config: Buffer;
  readonly layer: Buffer;
  readonly manifest: Buffer;
  readonly digest: string;
}

export function demoImage(layerBytes = 4096, manifestOverride?: (m: Record<string, unknown>) => Record<string, unknown>): DemoImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layer = randomBytes(layerBytes);
  const doc = {
    schemaVersion: 2,
    mediaType: OCI.manifest,
    config: { mediaType: OCI.config, digest: sha256(config), size: config.length },
    layers: [{ mediaType: OCI.layer, digest: sha256(layer), size: layer.length }],
  };
  const manifest = Buffer.from(JSON.stringify(manifestOverride ? manifestOverride(doc) : doc));
  return { config, layer, manifest, digest: sha256(manifest) };
}

export function blobEntry(body: Buffer): TarFile {
  return { name: `blobs/sha256/${sha256(body).slice(7)}`, body };
}

/** index.json naming `images`, each `{ name, digest, size, mediaType }`. */
export function indexEntry(images: readonly { name: string; digest: string; size: number; mediaType?: string }[]): TarFile {
  const manifests = images.map((i) => ({
    mediaType: i.mediaType ?? OCI.manifest,
    digest: i.digest,
    size: i.size,
    annotations: { 'org.opencontainers.image.ref.name': i.name },
  }));
  return { name: 'index.json', body: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI.index, manifests })) };
}

export const LAYOUT_ENTRY: TarFile = { name: 'oci-layout', body: Buffer.from('{"imageLayoutVersion":"1.0.0"}') };

/** The whole bundle of one image, named `name`. */
export function imageEntries(image: DemoImage, name: string): TarFile[] {
  return [
    LAYOUT_ENTRY,
    blobEntry(image.config),
    blobEntry(image.layer),
    blobEntry(image.manifest),
    indexEntry([{ name, digest: image.digest, size: image.manifest.length }]),
  ];
}

/**
 * Every file of the store but its temp area and locks, with a hash of its content: equal
 * snapshots mean no blob, media type record, tag or link was added, changed or removed.
 */
export async function storeSnapshot(storeDir: string): Promise<Record<string, string>> {
  const entries = await readdir(storeDir, { recursive: true, withFileTypes: true });
  const files: Record<string, string> = {};
  for (const entry of entries) {
    const path = relative(storeDir, join(entry.parentPath, entry.name));
    if (!entry.isFile() || /^(tmp|locks)\//.test(path) || path === 'index.json') continue;
    files[path] = sha256(await readFile(join(storeDir, path)));
  }
  return files;
}
