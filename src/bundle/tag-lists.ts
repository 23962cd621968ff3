/**
 * Imported tags reach `tags/list` too: an offline mirror answers it from the store
 * (mirror/lists.ts), so each repository an import tags gets its list, the union of the
 * list the store had and the bundle's tags. A list the store did not have is dated 0, so
 * a connected mirror asks its upstream at once rather than take a bundle's list for fresh.
 */
import { parseJson } from '../store/fs-errors.js';
import { createLists, type ListRequest } from '../store/lists.js';
import type { Store } from '../store/store.js';

export interface ImportedTag {
  readonly upstream: string;
  readonly repository: string;
  readonly tag: string;
}

export async function recordImportedTags(store: Store, imported: readonly ImportedTag[]): Promise<void> {
  const lists = createLists(store);
  const byRepository = new Map<string, { req: ListRequest; tags: Set<string> }>();
  for (const { upstream, repository, tag } of imported) {
    const key = `${upstream}/${repository}`;
    const entry = byRepository.get(key) ?? {
      req: { upstream, repository, kind: 'tags', path: 'tags/list', query: undefined },
      tags: new Set<string>(),
    };
    entry.tags.add(tag);
    byRepository.set(key, entry);
  }
  for (const { req, tags } of byRepository.values()) {
    const stored = await lists.find(req);
    const all = [...new Set([...(stored ? tagsOf(stored.body) : []), ...tags])].sort();
    await lists.put(req, {
      headers: { 'content-type': 'application/json' },
      body: Buffer.from(JSON.stringify({ name: req.repository, tags: all })),
      checkedAtMs: stored?.checkedAtMs ?? 0,
    });
  }
}

function tagsOf(body: Buffer): string[] {
  const list = parseJson(body.toString('utf8')) as { tags?: unknown } | undefined;
  return Array.isArray(list?.tags) ? list.tags.filter((t): t is string => typeof t === 'string') : [];
}
