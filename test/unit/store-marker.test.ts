import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLayout } from '../../src/store/layout.js';
import { claimStore, StoreRefusedError } from '../../src/store/store-marker.js';
import { createStore } from '../../src/store/store.js';

/** Every path under `dir`, directories with a trailing slash: what a refusal must leave as it was. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.map((e) => relative(dir, join(e.parentPath, e.name)) + (e.isDirectory() ? '/' : '')).sort();
}

/**
 * The store is the mirror's own: it opens a directory it marked, an empty one, or a store of
 * an earlier version, and refuses anything else before creating or deleting a thing in it.
 */
describe('store marker', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-marker-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function marker(): Promise<unknown> {
    return JSON.parse(await readFile(join(dir, 'oci-mirror-store.json'), 'utf8')) as unknown;
  }

  it('refuses a directory of foreign files, and creates or deletes nothing in it', async () => {
    // What `store.path: /etc` looked like: unrelated files, and a tmp/ that is not ours.
    await writeFile(join(dir, 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
    await mkdir(join(dir, 'tmp'));
    await writeFile(join(dir, 'tmp', 'session'), 'keep me');
    const before = await tree(dir);
    const store = createStore(dir);
    const refused = await store.init().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(StoreRefusedError);
    expect((refused as Error).message).toBe(
      `store.path: ${dir} is not empty (passwd) and has no oci-mirror-store.json; refusing to use it as a store`,
    );
    expect(await tree(dir)).toEqual(before);
  });

  it('initialises an empty or absent directory with the marker', async () => {
    const store = createStore(dir);
    await store.init();
    await store.close();
    expect(await marker()).toEqual({ format: 1, createdBy: expect.stringMatching(/^oci-mirror \d+\.\d+\.\d+/) });
    const absent = join(dir, 'nested', 'store');
    const created = createStore(absent);
    await created.init();
    await created.close();
    expect(await readdir(absent)).toContain('oci-mirror-store.json');
  });

  it('adopts a store written before the marker existed, keeping what it holds', async () => {
    const blob = join(dir, 'blobs', 'sha256', 'ab', 'ab'.padEnd(64, '0'));
    await mkdir(join(blob, '..'), { recursive: true });
    await writeFile(blob, 'content');
    await mkdir(join(dir, 'repositories', 'hub', 'library', 'alpine', '_tags'), { recursive: true });
    await mkdir(join(dir, 'tmp', 'fills'), { recursive: true });
    await mkdir(join(dir, 'locks'));
    await mkdir(join(dir, 'lost+found'));
    await writeFile(join(dir, 'index.json'), '{}');
    await writeFile(join(dir, 'pins.json'), '[]');
    const store = createStore(dir);
    await store.init();
    await store.close();
    expect(await marker()).toMatchObject({ format: 1 });
    expect(await readFile(blob, 'utf8')).toBe('content');
    expect(await readFile(join(dir, 'pins.json'), 'utf8')).toBe('[]');
  });

  it('leaves entries of tmp/ it did not name alone, at start-up and in every sweep', async () => {
    const first = createStore(dir);
    await first.init();
    await first.close();
    await writeFile(join(dir, 'tmp', 'operator-notes.txt'), 'mine');
    await mkdir(join(dir, 'tmp', 'scratch'));
    await writeFile(join(dir, 'tmp', 'scratch', 'data'), 'mine too');
    const store = createStore(dir);
    await store.init();
    expect(await store.sweepTemp()).toBe(0);
    await store.close();
    expect(await readFile(join(dir, 'tmp', 'operator-notes.txt'), 'utf8')).toBe('mine');
    expect(await readFile(join(dir, 'tmp', 'scratch', 'data'), 'utf8')).toBe('mine too');
  });

  it('refuses a marker of a format it does not know', async () => {
    await writeFile(join(dir, 'oci-mirror-store.json'), JSON.stringify({ format: 2, createdBy: 'oci-mirror 9.0.0' }));
    await expect(createStore(dir).init()).rejects.toThrow(
      `store.path: ${dir} has store format 2, which this version (format 1) does not know; refusing to use it as a store`,
    );
    expect(await readdir(dir)).toEqual(['oci-mirror-store.json']);
  });

  // Judged by claimStore alone, which writes nothing but a marker, so these can never touch the real tree.
  it('refuses / and system directories outright, also through a link', async () => {
    await expect(claimStore(createLayout('/'), 'test')).rejects.toThrow(
      'store.path: / is the root directory; refusing to use it as a store',
    );
    for (const path of ['/etc', '/usr', '/var', '/home', '/root', '/proc/self']) {
      const refused = await claimStore(createLayout(path), 'test').then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(refused).toBeInstanceOf(StoreRefusedError);
      expect((refused as Error).message).toBe(`store.path: ${path} is a system directory; refusing to use it as a store`);
    }
    await symlink('/etc', join(dir, 'store'));
    await expect(claimStore(createLayout(join(dir, 'store')), 'test')).rejects.toThrow(/is a system directory/);
  });
});
