/**
 * The manifest model: one parse of the bytes into an image manifest (OCI image spec
 * `manifest.md`, Docker image manifest v2 schema 2), an image index or manifest list
 * (`image-index.md`), or a Docker schema 1 manifest, which is stored and served as is but
 * never walked. Every feature that needs to know what an image holds starts here.
 */
import { RegistryError } from './errors.js';
import { parseDigest, type Digest } from './digest.js';
import { MEDIA_TYPES } from './media-types.js';
import type { Platform } from './platform.js';

/** OCI image spec `descriptor.md`: what a manifest names, by digest and size. */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  /** Index entries only. */
  readonly platform?: Platform;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface ImageManifest {
  readonly kind: 'image';
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  /** The manifest this one refers to (a signature, an SBOM): distribution spec §"Listing Referrers". */
  readonly subject?: Descriptor;
}

export interface ImageIndex {
  readonly kind: 'index';
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
  readonly subject?: Descriptor;
}

/** Docker schema 1 (deprecated): its `fsLayers` are not followed. */
export interface LegacyManifest {
  readonly kind: 'schema1';
  readonly mediaType: string;
}

export type Manifest = ImageManifest | ImageIndex | LegacyManifest;

const INDEX_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]);
const SCHEMA1_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.dockerSchema1, MEDIA_TYPES.dockerSchema1Signed]);

/**
 * Parses and checks the shape of a manifest; throws MANIFEST_INVALID. The kind comes from
 * the body's own `mediaType`, else `mediaType` (the Content-Type it came with), else its
 * shape, as `manifestMediaType` decides.
 */
export function parseManifest(body: Uint8Array, mediaType?: string): Manifest {
  const doc = readJson(body);
  if (!isRecord(doc)) throw invalid('a manifest is a JSON object');
  const type = mediaTypeOf(doc, mediaType);
  if (SCHEMA1_TYPES.has(type)) return { kind: 'schema1', mediaType: type };
  if (doc['schemaVersion'] !== 2) throw invalid('schemaVersion must be 2');
  const subject = doc['subject'] === undefined ? {} : { subject: descriptor(doc['subject'], 'subject') };
  if (INDEX_TYPES.has(type)) {
    return { kind: 'index', mediaType: type, manifests: descriptors(doc['manifests'], 'manifests'), ...subject };
  }
  return {
    kind: 'image',
    mediaType: type,
    config: descriptor(doc['config'], 'config'),
    layers: descriptors(doc['layers'], 'layers'),
    ...subject,
  };
}

/** The manifest, or undefined when the bytes are not one we can read (other errors are thrown). */
export function findManifest(body: Uint8Array, mediaType?: string): Manifest | undefined {
  try {
    return parseManifest(body, mediaType);
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'MANIFEST_INVALID') return undefined;
    throw err;
  }
}

/**
 * What a manifest holds: config and layers, or an index's child manifests. `subject` is
 * left out on purpose: a referrer does not keep the image it refers to alive.
 */
export function references(manifest: Manifest): readonly Descriptor[] {
  switch (manifest.kind) {
    case 'image':
      return [manifest.config, ...manifest.layers];
    case 'index':
      return manifest.manifests;
    case 'schema1':
      return [];
  }
}

/** The media type a stored manifest is served with: its own field, else the upstream's word, else a guess from its shape. */
export function manifestMediaType(body: Uint8Array, fallback?: string): string {
  const doc = findJson(body);
  return isRecord(doc) ? mediaTypeOf(doc, fallback) : (fallback ?? MEDIA_TYPES.ociManifest);
}

function mediaTypeOf(doc: Readonly<Record<string, unknown>>, fallback: string | undefined): string {
  if (typeof doc['mediaType'] === 'string') return doc['mediaType'];
  if (fallback) return fallback;
  if (Array.isArray(doc['manifests'])) return MEDIA_TYPES.ociIndex;
  if (doc['schemaVersion'] === 1) return MEDIA_TYPES.dockerSchema1Signed;
  return MEDIA_TYPES.ociManifest;
}

function descriptors(value: unknown, field: string): Descriptor[] {
  if (!Array.isArray(value)) throw invalid(`${field} must be an array of descriptors`);
  return value.map((item: unknown, i) => descriptor(item, `${field}[${i}]`));
}

function descriptor(value: unknown, field: string): Descriptor {
  if (!isRecord(value)) throw invalid(`${field} must be a descriptor`);
  const { mediaType, digest, size, platform, annotations } = value;
  if (typeof mediaType !== 'string') throw invalid(`${field}.mediaType must be a string`);
  if (typeof digest !== 'string') throw invalid(`${field}.digest must be a string`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${field}.size must be a non-negative integer`);
  }
  return {
    mediaType,
    digest: descriptorDigest(digest, field),
    size,
    ...(platform === undefined ? {} : { platform: platformOf(platform, `${field}.platform`) }),
    ...(annotations === undefined ? {} : { annotations: annotationsOf(annotations, `${field}.annotations`) }),
  };
}

/** OCI image spec `annotations.md`: a map of strings to strings. */
function annotationsOf(value: unknown, field: string): Readonly<Record<string, string>> {
  if (!isRecord(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    throw invalid(`${field} must map strings to strings`);
  }
  return value as Readonly<Record<string, string>>;
}

function descriptorDigest(digest: string, field: string): Digest {
  try {
    return parseDigest(digest);
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'DIGEST_INVALID') throw invalid(`${field}.digest: ${err.message}`, err);
    throw err;
  }
}

function platformOf(value: unknown, field: string): Platform {
  if (!isRecord(value)) throw invalid(`${field} must be an object`);
  const { os, architecture, variant } = value;
  if (typeof os !== 'string' || typeof architecture !== 'string') throw invalid(`${field} needs os and architecture`);
  if (variant !== undefined && typeof variant !== 'string') throw invalid(`${field}.variant must be a string`);
  return { os, architecture, ...(variant ? { variant } : {}) };
}

function readJson(body: Uint8Array): unknown {
  const doc = findJson(body);
  if (doc === undefined) throw invalid('a manifest is JSON');
  return doc;
}

/** The parsed JSON, or undefined when the bytes are not JSON. */
function findJson(body: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')) as unknown;
  } catch (err) {
    if (err instanceof SyntaxError) return undefined;
    throw err;
  }
}

function isRecord(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(message: string, cause?: unknown): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message, cause === undefined ? {} : { cause });
}
