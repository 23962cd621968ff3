import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runExport, runImport, type ExportRequest } from '../../src/cli/bundle.js';
import { parseConfig } from '../../src/config/index.js';
import type { Config } from '../../src/config/types.js';
import { demoImage, imageEntries, storeSnapshot, tarOf } from '../support/bundles.js';

const UPSTREAMS = { 'docker.io': { url: 'http://127.0.0.1:9', library: true } };

/** Export writes the bundle where it is asked to, and nowhere else. */
describe('export --output', () => {
  let work: string;
  let storeDir: string;
  let config: Config;

  const request = (output: string): ExportRequest => ({ refs: ['demo:1.0'], all: false, output });

  async function exportTo(output: string, stdout = new PassThrough()): Promise<number> {
    return runExport(config, request(output), 'json', { write: () => undefined }, stdout);
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'oci-mirror-output-'));
    storeDir = join(work, 'store');
    config = parseConfig({ store: { path: storeDir }, offline: true, upstreams: UPSTREAMS, log: { level: 'silent' } }, {});
    const bundle = join(work, 'seed.tar');
    await writeFile(bundle, tarOf(imageEntries(demoImage(), 'docker.io/library/demo:1.0')));
    await runImport(config, bundle, 'json', { write: () => undefined }, new PassThrough());
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('- streams the bundle to stdout and writes no file', async () => {
    const stdout = new PassThrough();
    const chunks: Buffer[] = [];
    stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    const before = await readdir(work);
    expect(await exportTo('-', stdout)).toBe(0);
    const tar = Buffer.concat(chunks);
    expect(tar.subarray(0, 10).toString()).toBe('oci-layout');
    expect(tar.includes(Buffer.from('index.json'))).toBe(true);
    expect(await readdir(work)).toEqual(before);
  });

  it('a .partial symlink left in place is replaced, never written through', async () => {
    const victim = join(work, 'victim');
    await writeFile(victim, 'precious');
    const out = join(work, 'linked.tar');
    await symlink(victim, `${out}.partial`);
    expect(await exportTo(out)).toBe(0);
    expect(await readFile(victim, 'utf8')).toBe('precious');
    expect((await lstat(out)).isFile()).toBe(true);
    expect((await readFile(out)).subarray(0, 10).toString()).toBe('oci-layout');
    await expect(lstat(`${out}.partial`)).rejects.toThrow(/ENOENT/);
  });

  it('refuses a device as output, suggesting -, and creates nothing beside it', async () => {
    await expect(exportTo('/dev/stdout')).rejects.toThrow(/--output \/dev\/stdout exists and is not a regular file; give --output - /);
    await expect(lstat('/dev/stdout.partial')).rejects.toThrow(/ENOENT/);
    await expect(exportTo('/dev/null')).rejects.toThrow(/is not a regular file/);
    await expect(lstat('/dev/null.partial')).rejects.toThrow(/ENOENT/);
  });

  it('refuses a directory or a link as output', async () => {
    const dir = join(work, 'a-dir');
    await mkdir(dir);
    await expect(exportTo(dir)).rejects.toThrow(/is not a regular file/);
    const link = join(work, 'a-link.tar');
    await symlink(join(work, 'victim'), link);
    await expect(exportTo(link)).rejects.toThrow(/is not a regular file/);
    expect(await readFile(join(work, 'victim'), 'utf8')).toBe('precious');
  });

  it('refuses any path inside the store, also through a link to it', async () => {
    const before = await storeSnapshot(storeDir);
    const blobs = await readdir(join(storeDir, 'blobs', 'sha256'), { recursive: true, withFileTypes: true });
    const blob = blobs.find((e) => e.isFile())!;
    await expect(exportTo(join(blob.parentPath, blob.name))).rejects.toThrow(/is inside the store \(store\.path /);
    await expect(exportTo(join(storeDir, 'bundle.tar'))).rejects.toThrow(/is inside the store/);
    const door = join(work, 'door');
    await symlink(join(storeDir, 'blobs'), door);
    await expect(exportTo(join(door, 'bundle.tar'))).rejects.toThrow(/is inside the store/);
    expect(await storeSnapshot(storeDir)).toEqual(before);
  });
});
