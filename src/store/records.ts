import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { findDigest, type Digest } from '../oci/digest.js';
import { ifMissing, parseJson } from './fs-errors.js';
import type { Store } from './store.js';

/** What a tag pointed to when the upstream last said so. */
export interface TagRecord {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly sizeBytes: number;
  /** When the upstream last confirmed it (ms since epoch). */
  readonly checkedAtMs: number;
  /** Filed by an import: no upstream stands behind it, so it never expires by age alone. */
  readonly imported?: true;
}

/** A tag record as the sweep sees it. */
export interface StoredTag {
  readonly upstream: string;
  readonly repository: string;
  readonly tag: string;
  readonly record: TagRecord;
  /** When it was last served or written (ms since epoch): this process's memory, else the file's mtime. */
  readonly lastUsedMs: number;
}

export interface RepositoryRecords {
  readonly upstream: string;
  readonly repository: string;
  /** Every digest its tags and links name. */
  readonly digests: ReadonlySet<Digest>;
  readonly tags: ReadonlyMap<string, Digest>;
}

/** Per-repository facts: tag records and, for upstreams with credentials, confirmed digests. */
export interface Records {
  findTag(upstream: string, repository: string, tag: string): Promise<TagRecord | undefined>;
  putTag(upstream: string, repository: string, tag: string, record: TagRecord): Promise<void>;
  removeTag(upstream: string, repository: string, tag: string): Promise<void>;
  /**
   * The tag was served (GET or HEAD, online or offline): its record is in use. Kept in
   * memory, and persisted lazily as the file's mtime, at most once a minute, for other
   * processes and restarts.
   */
  tagServed(upstream: string, repository: string, tag: string): Promise<void>;
  /** Image references pinned by `warm --pin` (pins.json), beside the config's `store.pins`. */
  readPins(): Promise<string[]>;
  addPins(refs: readonly string[]): Promise<void>;
  /** Every repository with records, and the digests its tags and links name. */
  listRepositories(): Promise<RepositoryRecords[]>;
  /** Removes every tag record `keep` rejects; answers how many went. */
  sweepTags(keep: (tag: StoredTag) => boolean | Promise<boolean>): Promise<number>;
  hasLink(upstream: string, repository: string, digest: Digest): Promise<boolean>;
  putLink(upstream: string, repository: string, digest: Digest): Promise<void>;
}

/** A served tag moves its record's mtime at most this often (as blobs do, cache-index.ts). */
const TOUCH_EVERY_MS = 60_000;

export function createRecords(store: Store, options: { readonly now?: () => number } = {}): Records {
  const { layout } = store;
  const now = options.now ?? Date.now;
  const root = layout.repositoriesDir;

  /** Tag records and links under repositories/, with the repository they belong to. */
  async function recordFiles(): Promise<{ path: string; upstream: string; repository: string; kind: '_tags' | '_links' }[]> {
    const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(ifMissing([]));
    const files = [];
    for (const entry of entries) {
      const kind = basename(entry.parentPath);
      if (!entry.isFile() || (kind !== '_tags' && kind !== '_links')) continue;
      if (kind === '_tags' && !entry.name.endsWith('.json')) continue;
      const [upstream = '', ...parts] = relative(root, dirname(entry.parentPath)).split(sep);
      files.push({ path: join(entry.parentPath, entry.name), upstream, repository: parts.join('/'), kind } as const);
    }
    return files;
  }
  const tags = new Map<string, { record: TagRecord; ino: number; mtimeMs: number }>();
  const links = new Set<string>();
  /** By record path: when this process last served the tag, and last moved the file's mtime. */
  const served = new Map<string, { atMs: number; touchedMs: number }>();

  function forget(path: string): void {
    tags.delete(path);
    served.delete(path);
  }

  /** The later of this process's last use and the file's mtime (another process's use, or a write). */
  async function lastUsedMs(path: string): Promise<number | undefined> {
    const mtimeMs = (await stat(path).catch(ifMissing(undefined)))?.mtimeMs;
    if (mtimeMs === undefined) return undefined;
    return Math.max(Math.floor(mtimeMs), served.get(path)?.atMs ?? 0);
  }

  return {
    async findTag(upstream, repository, tag) {
      const path = layout.tagPath(upstream, repository, tag);
      // Another process (an import, a warm) replaces the file by rename: a new inode or
      // mtime means the cached record is stale. One stat, against a read and a parse.
      const file = await stat(path).catch(ifMissing(undefined));
      const cached = tags.get(path);
      if (!file) {
        tags.delete(path);
        return undefined;
      }
      if (cached && cached.ino === file.ino && cached.mtimeMs === file.mtimeMs) return cached.record;
      const record = parseTagRecord(await readFile(path, 'utf8').catch(ifMissing(undefined)));
      if (record) tags.set(path, { record, ino: file.ino, mtimeMs: file.mtimeMs });
      return record;
    },
    async putTag(upstream, repository, tag, record) {
      const path = layout.tagPath(upstream, repository, tag);
      tags.delete(path);
      const at = now();
      served.set(path, { atMs: at, touchedMs: at });
      await store.temp.writeAtomic(path, JSON.stringify(record));
    },
    async removeTag(upstream, repository, tag) {
      const path = layout.tagPath(upstream, repository, tag);
      forget(path);
      await rm(path, { force: true });
    },
    async tagServed(upstream, repository, tag) {
      const path = layout.tagPath(upstream, repository, tag);
      const at = now();
      const known = served.get(path);
      if (known && at - known.touchedMs < TOUCH_EVERY_MS) {
        known.atMs = at;
        return;
      }
      served.set(path, { atMs: at, touchedMs: at });
      // Gone meanwhile (swept, or removed as evicted): nothing to keep in use.
      await utimes(path, at / 1000, at / 1000).catch(ifMissing(undefined));
    },
    async readPins() {
      const text = await readFile(layout.pinsPath, 'utf8').catch(ifMissing(undefined));
      const pins = text === undefined ? undefined : parseJson(text);
      return Array.isArray(pins) ? pins.filter((p): p is string => typeof p === 'string') : [];
    },
    async addPins(refs) {
      const pins = new Set([...(await this.readPins()), ...refs]);
      await store.temp.writeAtomic(layout.pinsPath, JSON.stringify([...pins].sort(), null, 2));
    },
    async listRepositories() {
      const found = new Map<string, { upstream: string; repository: string; digests: Set<Digest>; tags: Map<string, Digest> }>();
      for (const { path, upstream, repository, kind } of await recordFiles()) {
        const key = `${upstream}/${repository}`;
        const entry = found.get(key) ?? { upstream, repository, digests: new Set<Digest>(), tags: new Map<string, Digest>() };
        found.set(key, entry);
        const digest =
          kind === '_links'
            ? findDigest(`sha256:${basename(path)}`)
            : parseTagRecord(await readFile(path, 'utf8').catch(ifMissing(undefined)))?.digest;
        if (digest) entry.digests.add(digest);
        if (digest && kind === '_tags') entry.tags.set(basename(path, '.json'), digest);
      }
      return [...found.values()];
    },
    async sweepTags(keep) {
      let removed = 0;
      for (const { path, upstream, repository, kind } of await recordFiles()) {
        if (kind !== '_tags') continue;
        const record = parseTagRecord(await readFile(path, 'utf8').catch(ifMissing(undefined)));
        const usedMs = record && (await lastUsedMs(path));
        const tag = basename(path, '.json');
        if (record && usedMs !== undefined && (await keep({ upstream, repository, tag, record, lastUsedMs: usedMs }))) continue;
        forget(path);
        await rm(path, { force: true });
        removed += 1;
      }
      return removed;
    },
    async hasLink(upstream, repository, digest) {
      const path = layout.linkPath(upstream, repository, digest);
      if (links.has(path)) return true;
      const found = (await readFile(path).catch(ifMissing(undefined))) !== undefined;
      if (found) links.add(path);
      return found;
    },
    async putLink(upstream, repository, digest) {
      const path = layout.linkPath(upstream, repository, digest);
      if (links.has(path)) return;
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, '');
      links.add(path);
    },
  };
}

function parseTagRecord(text: string | undefined): TagRecord | undefined {
  const raw = text === undefined ? undefined : (parseJson(text) as Record<string, unknown> | null | undefined);
  if (typeof raw !== 'object' || raw === null) return undefined;
  const digest = findDigest(typeof raw['digest'] === 'string' ? raw['digest'] : undefined);
  const { mediaType, sizeBytes, checkedAtMs, imported } = raw;
  if (!digest || typeof mediaType !== 'string' || typeof sizeBytes !== 'number' || typeof checkedAtMs !== 'number') {
    return undefined;
  }
  return { digest, mediaType, sizeBytes, checkedAtMs, ...(imported === true ? { imported } : {}) };
}
