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

/**
 * Resolves once the store's tmp/ holds no file, or throws after `timeoutMs`. A fill
 * record or staged sidecar is removed just after its fill settles (after `drain()`), and
 * the file system sends no event for that, so this polls, bounded.
 */
export async function expectNoTempFiles(storeDir: string, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let left = await tempFiles(storeDir);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    left = await tempFiles(storeDir);
  }
  if (left.length > 0) throw new Error(`temp files left in the store: ${left.join(', ')}`);
}
