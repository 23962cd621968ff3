import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runImport } from '../../src/cli/bundle.js';
import { parseConfig } from '../../src/config/index.js';
import type { Config } from '../../src/config/types.js';
import { fetchHashed } from '../support/http.js';
import { startMirror } from '../support/mirror.js';
import { tempFiles } from '../support/store.js';
import {
  blobEntry,
  demoImage,
  imageEntries,
  indexEntry,
  LAYOUT_ENTRY,
  OCI,
  sha256,
  storeSnapshot,
  tarOf,
  type DemoImage,
} from '../support/bundles.js';

const run = promisify(execFile);
const UPSTREAMS = { 'docker.io': { url: 'http://127.0.0.1:9', library: true } };

/**
 * Import against bundles an attacker (or a bad USB stick) would hand over: each refused
 * bundle names its problem and leaves the store exactly as it was — no blob, no media type
 * record, no tag, no link — and no temp file behind.
 */
describe('import refuses bundles that do not carry what they claim', () => {
  let work: string;
  let storeDir: string;
  let config: Config;
  let demo: DemoImage;
  let n = 0;

  const configFor = (store: Record<string, unknown>): Config =>
    parseConfig({ store: { path: storeDir, ...store }, offline: true, upstreams: UPSTREAMS, log: { level: 'silent' } }, {});

  async function importFile(bytes: Buffer, cfg = config): Promise<{ images: { name: string; digest: string }[]; unreferenced: number }> {
    const file = join(work, `bundle-${(n += 1)}.tar`);
    await writeFile(file, bytes);
    return importPath(file, cfg);
  }

  async function importPath(file: string, cfg = config): Promise<{ images: { name: string; digest: string }[]; unreferenced: number }> {
    let text = '';
    await runImport(cfg, file, 'json', { write: (t) => void (text += t) }, new PassThrough());
    return JSON.parse(text.trim().split('\n').at(-1) ?? '{}') as { images: { name: string; digest: string }[]; unreferenced: number };
  }

  /** The import fails with `message`, and the store is as it was. */
  async function expectRefused(bytes: Buffer | string, message: RegExp, cfg = config): Promise<void> {
    const before = await storeSnapshot(storeDir);
    const attempt = typeof bytes === 'string' ? importPath(bytes, cfg) : importFile(bytes, cfg);
    await expect(attempt).rejects.toThrow(message);
    expect(await storeSnapshot(storeDir)).toEqual(before);
    expect(await tempFiles(storeDir)).toEqual([]);
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'oci-mirror-hostile-'));
    storeDir = join(work, 'store');
    config = configFor({});
    demo = demoImage();
    const report = await importFile(tarOf(imageEntries(demo, 'docker.io/library/demo:1.0')));
    expect(report.images).toEqual([{ name: 'docker.io/library/demo:1.0', digest: demo.digest }]);
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('an index-only bundle cannot relabel a stored manifest', async () => {
    const relabel = indexEntry([
      { name: 'docker.io/library/demo:1.0', digest: demo.digest, size: demo.manifest.length, mediaType: OCI.index },
    ]);
    await expectRefused(
      tarOf([LAYOUT_ENTRY, relabel]),
      /index\.json calls manifest sha256:[0-9a-f]{64} a .*index.*, but it is a .*manifest/,
    );
  });

  it('an index-only bundle cannot tag stored content in another repository', async () => {
    const steal = indexEntry([{ name: 'docker.io/library/other:1', digest: demo.digest, size: demo.manifest.length }]);
    await expectRefused(
      tarOf([LAYOUT_ENTRY, steal]),
      new RegExp(`image docker.io/library/other:1: the bundle lacks its manifest ${demo.digest}`),
    );
  });

  it('an index-only bundle may tag content its repository already has', async () => {
    const retag = indexEntry([{ name: 'docker.io/library/demo:stable', digest: demo.digest, size: demo.manifest.length }]);
    const report = await importFile(tarOf([LAYOUT_ENTRY, retag]));
    expect(report.images).toEqual([{ name: 'docker.io/library/demo:stable', digest: demo.digest }]);
  });

  it('an image that lacks a blob refuses the whole bundle, the complete image with it', async () => {
    const whole = demoImage();
    const partial = demoImage();
    const entries = [
      ...imageEntries(whole, 'docker.io/library/whole:1').slice(0, 4),
      blobEntry(partial.config),
      blobEntry(partial.manifest),
      indexEntry([
        { name: 'docker.io/library/whole:1', digest: whole.digest, size: whole.manifest.length },
        { name: 'docker.io/library/partial:1', digest: partial.digest, size: partial.manifest.length },
      ]),
    ];
    await expectRefused(tarOf(entries), new RegExp(`image docker.io/library/partial:1: the bundle lacks blob ${sha256(partial.layer)}`));
  });

  it('a manifest whose config digest is a path is not a manifest', async () => {
    const bad = demoImage(4096, (m) => ({ ...m, config: { mediaType: OCI.config, digest: '../../etc/passwd', size: 10 } }));
    const entries = [
      LAYOUT_ENTRY,
      blobEntry(bad.layer),
      blobEntry(bad.manifest),
      indexEntry([{ name: 'docker.io/library/bad:1', digest: bad.digest, size: bad.manifest.length }]),
    ];
    await expectRefused(tarOf(entries), /manifest sha256:[0-9a-f]{64} is not valid: config\.digest/);
  });

  it('sizes must match the bytes: a descriptor that lies about a layer', async () => {
    const liar = demoImage(4096, (m) => ({ ...m, layers: [{ ...(m['layers'] as object[])[0], size: 1 }] }));
    const entries = imageEntries(liar, 'docker.io/library/liar:1');
    await expectRefused(tarOf(entries), /is 4096 bytes, but is described as 1/);
  });

  it('import /dev/zero ends with a clear error', async () => {
    await expectRefused('/dev/zero', /the bundle is empty/);
  });

  it('a tar cut exactly at an entry boundary is not complete, and commits nothing', async () => {
    const image = demoImage();
    await expectRefused(
      tarOf(imageEntries(image, 'docker.io/library/cut:1'), { end: false }),
      /not a complete tar: .*end-of-archive marker/,
    );
  });

  it('a tar cut inside an entry is not complete', async () => {
    const image = demoImage(64 * 1024);
    const bytes = tarOf(imageEntries(image, 'docker.io/library/cut:2'));
    await expectRefused(bytes.subarray(0, 512 * 3 + 1000), /not a complete tar: the tar ends inside an entry/);
  });

  it('a blob larger than store.maxSize is refused from its header, before it is staged', async () => {
    const huge = tarOf([LAYOUT_ENTRY, { name: `blobs/sha256/${'a'.repeat(64)}`, body: Buffer.alloc(512), headerSize: 2 * 1024 ** 3 }]);
    await expectRefused(
      huge,
      /bundle entry blobs\/sha256\/a{64}: the bundle brings more than store\.maxSize \(1(\.0)?\s?GiB\)/,
      configFor({ maxSize: '1GiB' }),
    );
  });

  it('a blob larger than the free space is refused from its header, before it is staged', async () => {
    const huge = tarOf([LAYOUT_ENTRY, { name: `blobs/sha256/${'b'.repeat(64)}`, body: Buffer.alloc(512), headerSize: 2 ** 50 }]);
    await expectRefused(
      huge,
      /bundle entry blobs\/sha256\/b{64} \(.*\) does not fit: .* free on the store's file system/,
      configFor({ maxSize: '2000TiB' }),
    );
  });

  it('reads past trailing garbage after the end-of-archive marker, as GNU tar does', async () => {
    const image = demoImage();
    const report = await importFile(tarOf(imageEntries(image, 'docker.io/library/padded:1'), { trailing: randomBytes(20_000) }));
    expect(report.images).toEqual([{ name: 'docker.io/library/padded:1', digest: image.digest }]);
  });

  it.each(['gnu', 'posix'])(
    'reads what GNU tar --format=%s writes: ./ prefixes, directories, PAX headers, record padding',
    async (format) => {
      const image = demoImage();
      const dir = join(work, `layout-${(n += 1)}`);
      for (const entry of imageEntries(image, 'docker.io/library/gnu:1')) {
        await mkdir(dirname(join(dir, entry.name)), { recursive: true });
        await writeFile(join(dir, entry.name), entry.body);
      }
      const file = join(work, `gnu-${n}.tar`);
      await run('tar', [`--format=${format}`, '-C', dir, '-cf', file, '.']);
      expect((await stat(file)).size % 10240).toBe(0);
      if (format === 'posix') expect((await readFile(file)).includes(Buffer.from('PaxHeaders'))).toBe(true);
      const report = await importPath(file);
      expect(report.images).toEqual([{ name: 'docker.io/library/gnu:1', digest: image.digest }]);
    },
  );

  it('keeps no blob that no image references', async () => {
    const image = demoImage();
    const extras = Array.from({ length: 50 }, () => randomBytes(100));
    const entries = imageEntries(image, 'docker.io/library/lean:1');
    const before = Object.keys(await storeSnapshot(storeDir)).filter((p) => p.startsWith('blobs/'));
    const report = await importFile(tarOf([...entries.slice(0, 4), ...extras.map(blobEntry), entries[4]!]));
    expect(report.unreferenced).toBe(50);
    const added = Object.keys(await storeSnapshot(storeDir)).filter((p) => p.startsWith('blobs/') && !before.includes(p));
    // The config is the same bytes as every demo image's, stored already.
    const hexes = [image.layer, image.manifest].map((b) => sha256(b).slice(7));
    expect(added.map((p) => p.split('/').at(-1)).sort()).toEqual(hexes.sort());
    expect(await tempFiles(storeDir)).toEqual([]);
  });

  it('a live mirror on the same store serves an imported re-tag at once', async () => {
    const mirror = await startMirror({ upstreams: UPSTREAMS, offline: true }, { storeDir });
    try {
      const first = await fetchHashed(`${mirror.url}/v2/library/demo/manifests/1.0`, { headers: { accept: OCI.manifest } });
      expect(first.headers['docker-content-digest']).toBe(demo.digest);
      const next = demoImage();
      await importFile(tarOf(imageEntries(next, 'docker.io/library/demo:1.0')));
      const second = await fetchHashed(`${mirror.url}/v2/library/demo/manifests/1.0`, { headers: { accept: OCI.manifest } });
      expect(second.headers['docker-content-digest']).toBe(next.digest);
    } finally {
      await mirror.stop();
    }
  });
});
