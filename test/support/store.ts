import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';

/**
 * Files under the store's tmp/ (recursively), relative to it. Empty directories do not
 * count: a live process keeps its own `tmp/<process>/` and `tmp/fills/`.
 */
export async function tempFiles(storeDir: string): Promise<string[]> {
  const root = join(storeDir, 'tmp');
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => relative(root, join(e.parentPath, e.name)));
}
