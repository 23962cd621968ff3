/**
 * Cached `tags/list` and `referrers` answers, one file per (upstream, repository, request):
 * what the upstream said, and when. Unlike blobs these are not content-addressed, so they
 * are facts with an age, served under the tag freshness policy (mirror/lists.ts).
 */
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { ifMissing, parseJson } from './fs-errors.js';
import type { Store } from './store.js';

export type ListKind = 'tags' | 'referrers';

export interface ListRecord {
  /** Lower-case names: content-type, link, docker-content-digest, oci-filters-applied. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** When the upstream last sent it (ms since epoch). */
  readonly checkedAtMs: number;
}

export interface ListRequest {
  readonly upstream: string;
  readonly repository: string;
  readonly kind: ListKind;
  /** After `/v2/<repository>/`, e.g. `tags/list` or `referrers/sha256:…`. */
  readonly path: string;
  /** Raw query, e.g. `n=10&last=a`; `n`/`last` pages are cached apart. */
  readonly query: string | undefined;
}

export interface Lists {
  find(req: ListRequest): Promise<ListRecord | undefined>;
  put(req: ListRequest, record: ListRecord): Promise<void>;
  remove(req: ListRequest): Promise<void>;
}

export function createLists(store: Store): Lists {
  const pathOf = (req: ListRequest): string => store.layout.listPath(req.upstream, req.repository, listKey(req));
  return {
    async find(req) {
      const text = await readFile(pathOf(req), 'utf8').catch(ifMissing(undefined));
      return text === undefined ? undefined : parseListRecord(text);
    },
    async put(req, record) {
      const { headers, body, checkedAtMs } = record;
      await store.temp.writeAtomic(pathOf(req), JSON.stringify({ headers, body: body.toString('base64'), checkedAtMs }));
    },
    async remove(req) {
      await rm(pathOf(req), { force: true });
    },
  };
}

/** `tags-<hash>`: the kind readable, the path and query (of any length or alphabet) hashed. */
export function listKey(req: Pick<ListRequest, 'kind' | 'path' | 'query'>): string {
  const hash = createHash('sha256')
    .update(`${req.path}?${req.query ?? ''}`)
    .digest('hex')
    .slice(0, 32);
  return `${req.kind}-${hash}`;
}

/** A damaged or foreign file is a miss, never an error. */
function parseListRecord(text: string): ListRecord | undefined {
  const value = parseJson(text);
  if (value === null || typeof value !== 'object') return undefined;
  const { headers, body, checkedAtMs } = value as Record<string, unknown>;
  if (typeof body !== 'string' || typeof checkedAtMs !== 'number' || headers === null || typeof headers !== 'object') return undefined;
  const flat: Record<string, string> = {};
  for (const [name, v] of Object.entries(headers)) if (typeof v === 'string') flat[name] = v;
  return { headers: flat, body: Buffer.from(body, 'base64'), checkedAtMs };
}
