import { describe, expect, it } from 'vitest';
import { createDigester, digestOf, parseDigest, type Digest } from '../../src/oci/digest.js';
import { RegistryError } from '../../src/oci/errors.js';
import { findManifest, manifestMediaType, parseManifest, references, type Descriptor } from '../../src/oci/manifest.js';
import { MEDIA_TYPES } from '../../src/oci/media-types.js';
import { parsePlatform, platformMatches } from '../../src/oci/platform.js';
import { loadedManifest, partDigest, storedManifests, walkImage, type LoadedManifest } from '../../src/oci/walk.js';

const json = (doc: unknown): Buffer => Buffer.from(JSON.stringify(doc));
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const CONFIG = 'application/vnd.oci.image.config.v1+json';

function blob(text: string, mediaType = LAYER): Descriptor {
  const body = Buffer.from(text);
  return { mediaType, digest: digestOf(body), size: body.length };
}

function image(config: Descriptor, layers: Descriptor[]): Buffer {
  return json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config, layers });
}

function entry(body: Buffer, platform?: string): Descriptor {
  const parsed = platform === undefined ? undefined : parsePlatform(platform);
  return { mediaType: MEDIA_TYPES.ociManifest, digest: digestOf(body), size: body.length, ...(parsed ? { platform: parsed } : {}) };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof RegistryError ? err.code : 'not a RegistryError';
  }
  return undefined;
}

describe('digests', () => {
  it('hashes whole and streamed bytes to the same validated digest', () => {
    const body = Buffer.from('hello');
    const digester = createDigester();
    digester.update(body.subarray(0, 2));
    digester.update(body.subarray(2));
    expect(digester.digest()).toBe(digestOf(body));
    expect(digestOf(body)).toBe(parseDigest('sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'));
  });
});

describe('parseManifest', () => {
  const config = blob('config', CONFIG);
  const layers = [blob('layer one'), blob('layer two')];

  it('parses an OCI image manifest and names its config and layers', () => {
    const manifest = parseManifest(image(config, layers));
    expect(manifest).toEqual({ kind: 'image', mediaType: MEDIA_TYPES.ociManifest, config, layers });
    expect(references(manifest)).toEqual([config, ...layers]);
  });

  it('parses a Docker schema 2 manifest by its Content-Type when the body has no mediaType', () => {
    const body = json({ schemaVersion: 2, config, layers });
    const manifest = parseManifest(body, MEDIA_TYPES.dockerManifest);
    expect(manifest.kind).toBe('image');
    expect(manifest.mediaType).toBe(MEDIA_TYPES.dockerManifest);
  });

  it('parses an index and a Docker manifest list, naming their child manifests with platforms', () => {
    const child = entry(image(config, layers), 'linux/arm64/v8');
    for (const mediaType of [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]) {
      const manifest = parseManifest(json({ schemaVersion: 2, mediaType, manifests: [child] }));
      expect(manifest).toEqual({ kind: 'index', mediaType, manifests: [child] });
      expect(references(manifest)).toEqual([child]);
    }
    // Without any media type, an index is known by its manifests list.
    expect(parseManifest(json({ schemaVersion: 2, manifests: [child] })).kind).toBe('index');
  });

  it('keeps subject apart: a referrer does not hold the image it refers to', () => {
    const subject = entry(image(config, layers));
    const referrer = parseManifest(json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config, layers: [], subject }));
    expect(referrer).toMatchObject({ kind: 'image', subject });
    expect(references(referrer)).toEqual([config]);
  });

  it('takes Docker schema 1 as a manifest that references nothing', () => {
    const manifest = parseManifest(json({ schemaVersion: 1, name: 'a', tag: 'b', fsLayers: [] }));
    expect(manifest).toEqual({ kind: 'schema1', mediaType: MEDIA_TYPES.dockerSchema1Signed });
    expect(references(manifest)).toEqual([]);
  });

  it.each([
    ['not JSON', Buffer.from('{not json')],
    ['not an object', json([1, 2])],
    ['a wrong schemaVersion', json({ schemaVersion: 3, config, layers })],
    ['a missing layers list', json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config })],
    ['a missing config', json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, layers })],
    ['a bad digest', image({ ...config, digest: 'sha256:nothex' as Digest }, layers)],
    ['an unsupported digest algorithm', image(config, [{ ...blob('x'), digest: `sha512:${'a'.repeat(128)}` as Digest }])],
    ['a negative size', image(config, [{ ...blob('x'), size: -1 }])],
    ['a fractional size', image(config, [{ ...blob('x'), size: 1.5 }])],
    ['a size beyond 2^53', image(config, [{ ...blob('x'), size: 2 ** 53 }])],
    ['a descriptor without mediaType', json({ schemaVersion: 2, config: { digest: config.digest, size: 1 }, layers })],
    ['an index whose manifests is not a list', json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: {} })],
    ['a platform without architecture', json({ schemaVersion: 2, manifests: [{ ...config, platform: { os: 'linux' } }] })],
    ['annotations that are not strings', image({ ...config, annotations: { a: 1 } as unknown as Record<string, string> }, layers)],
  ])('refuses %s with MANIFEST_INVALID', (_, body) => {
    expect(codeOf(() => parseManifest(body))).toBe('MANIFEST_INVALID');
    expect(findManifest(body)).toBeUndefined();
  });

  it('reports the media type a manifest is served with: its own, else the upstream word, else its shape', () => {
    expect(manifestMediaType(json({ mediaType: 'x/own' }), 'x/upstream')).toBe('x/own');
    expect(manifestMediaType(json({ schemaVersion: 2 }), 'x/upstream')).toBe('x/upstream');
    expect(manifestMediaType(json({ manifests: [] }))).toBe(MEDIA_TYPES.ociIndex);
    expect(manifestMediaType(json({ schemaVersion: 1 }))).toBe(MEDIA_TYPES.dockerSchema1Signed);
    expect(manifestMediaType(Buffer.from('garbage'))).toBe(MEDIA_TYPES.ociManifest);
  });
});

describe('platformMatches', () => {
  const arm64v8 = { os: 'linux', architecture: 'arm64', variant: 'v8' };
  it('takes everything without a selection, a variant only when asked, and no platform-less entry under one', () => {
    expect(platformMatches(undefined, undefined)).toBe(true);
    expect(platformMatches(arm64v8, [{ os: 'linux', architecture: 'arm64' }])).toBe(true);
    expect(platformMatches(arm64v8, [{ os: 'linux', architecture: 'arm64', variant: 'v7' }])).toBe(false);
    expect(platformMatches(arm64v8, [{ os: 'linux', architecture: 'amd64' }])).toBe(false);
    expect(platformMatches(undefined, [{ os: 'linux', architecture: 'amd64' }])).toBe(false);
  });
});

describe('walkImage', () => {
  const sharedConfig = blob('shared config', CONFIG);
  const amdLayer = blob('amd64 layer');
  const armLayer = blob('arm64 layer');
  const amd = image(sharedConfig, [amdLayer]);
  const arm = image(sharedConfig, [armLayer]);
  const manifests = [entry(amd, 'linux/amd64'), entry(arm, 'linux/arm64/v8')];
  const indexBody = json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests });
  const stored = new Map<Digest, Buffer>([
    [digestOf(amd), amd],
    [digestOf(arm), arm],
  ]);
  const root = loadedManifest(digestOf(indexBody), undefined, indexBody);

  function loaderCounting(): { load: ReturnType<typeof storedManifests>; asked: Digest[] } {
    const asked: Digest[] = [];
    const load = storedManifests(async (digest) => {
      asked.push(digest);
      const body = stored.get(digest);
      return body && { body };
    });
    return { load, asked };
  }

  async function collect(load: ReturnType<typeof storedManifests>, platforms?: string[]): Promise<string[]> {
    const parts: string[] = [];
    const selection = platforms?.map((p) => parsePlatform(p) ?? { os: '?', architecture: '?' });
    for await (const part of walkImage(root, load, { platforms: selection })) parts.push(`${part.kind} ${partDigest(part)}`);
    return parts;
  }

  it('yields the index, each platform manifest, then its blobs, every digest once', async () => {
    const { load, asked } = loaderCounting();
    expect(await collect(load)).toEqual([
      `manifest ${root.digest}`,
      `manifest ${digestOf(amd)}`,
      `blob ${sharedConfig.digest}`,
      `blob ${amdLayer.digest}`,
      `manifest ${digestOf(arm)}`,
      `blob ${armLayer.digest}`,
    ]);
    expect(asked).toEqual([digestOf(amd), digestOf(arm)]);
  });

  it('follows only the selected platforms and never loads the others', async () => {
    const { load, asked } = loaderCounting();
    expect(await collect(load, ['linux/arm64'])).toEqual([
      `manifest ${root.digest}`,
      `manifest ${digestOf(arm)}`,
      `blob ${sharedConfig.digest}`,
      `blob ${armLayer.digest}`,
    ]);
    expect(asked).toEqual([digestOf(arm)]);
    expect(await collect(loaderCounting().load, ['windows/amd64'])).toEqual([`manifest ${root.digest}`]);
  });

  it('reports an index entry the loader lacks as absent, and goes on', async () => {
    const load = storedManifests(async (digest) => (digest === digestOf(arm) ? { body: arm } : undefined));
    expect(await collect(load)).toEqual([
      `manifest ${root.digest}`,
      `absent ${digestOf(amd)}`,
      `manifest ${digestOf(arm)}`,
      `blob ${sharedConfig.digest}`,
      `blob ${armLayer.digest}`,
    ]);
  });

  it('walks a single image manifest to its blobs without loading anything', async () => {
    const single: LoadedManifest = loadedManifest(digestOf(amd), undefined, amd);
    const kinds: string[] = [];
    const never = storedManifests(() => Promise.reject(new Error('an image manifest loads nothing')));
    for await (const part of walkImage(single, never)) kinds.push(`${part.kind} ${partDigest(part)}`);
    expect(kinds).toEqual([`manifest ${digestOf(amd)}`, `blob ${sharedConfig.digest}`, `blob ${amdLayer.digest}`]);
  });
});
