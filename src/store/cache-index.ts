/**
 * What the store holds and how recently each entry was served: the size budget (LRU
 * with watermarks) and the idle TTL. Entries are digests of files under blobs/ —
 * layers, configs and manifests alike. Serving a manifest refreshes the content it
 * references (mirror/image-recency.ts), so an image ages as one.
 *
 * - Eviction takes whole images (images.ts), least recently used first, an image's
 *   recency being its most recently served manifest's: its manifests first, then the
 *   blobs it leaves unreferenced. A blob shared by two images goes only when neither is
 *   kept, so a kept manifest never lacks a layer. Content no stored manifest reaches is
 *   evicted on its own recency.
 *
 * - Recency lives in an lru-cache (least recently served first), persisted to
 *   index.json (atomically) as a hint for restarts; the disk is the truth for what
 *   exists, so every maintenance pass rescans blobs/ and merges. A hit also moves the
 *   file's mtime forward (at most once a minute), which is how processes sharing the
 *   store, and a restart without a snapshot, learn recency.
 * - Eviction runs in batches: once the stored bytes exceed the budget, the least
 *   recently served go until the low watermark (90 %) is reached. Entries in use by a
 *   reader, and protected digests (pinned images), are never removed. Removal is an
 *   unlink: a reader with the file open finishes (POSIX), a later request refetches.
 * - One process evicts at a time (the `evict` lock); the others skip that pass.
 */
import { LRUCache } from 'lru-cache';
import { readFile } from 'node:fs/promises';
import { digestFromHex, digestHex, type Digest } from '../oci/digest.js';
import { ifMissing } from './fs-errors.js';
import { lockNames } from './layout.js';
import type { Store } from './store.js';
import { scanBlobs } from './scan.js';
import { createManifestGraphReader, storeUnits, type StoreUnit } from './images.js';

export type EvictionReason = 'size' | 'ttl';

interface Entry {
  sizeBytes: number;
  lastUsedMs: number;
  /** When the file's mtime was last moved forward. */
  touchedMs: number;
}

export interface EvictionReport {
  readonly removed: number;
  readonly removedBytes: number;
  readonly byReason: Readonly<Record<EvictionReason, number>>;
  /** Stored bytes and entries after the pass (before it, for a dry run). */
  readonly sizeBytes: number;
  readonly entries: number;
  readonly dryRun: boolean;
  /** Another process held the evict lock; nothing was done. */
  readonly skipped: boolean;
  /** Images stored after the pass (manifests no other stored manifest references); absent when skipped. */
  readonly images?: number;
  /** Stored bytes of pinned images after the pass; absent when skipped. */
  readonly pinnedBytes?: number;
}

export interface EvictionPolicy {
  readonly maxSizeBytes: number;
  readonly idleTtlMs: number;
  /** Evict down to this fraction of the budget once it is exceeded. */
  readonly lowWatermark?: number;
}

export interface CacheIndexOptions extends EvictionPolicy {
  readonly store: Store;
  readonly now?: () => number;
  /** Digests that must survive eviction and every sweep: pinned images and all they reference. */
  readonly protectedDigests?: () => Promise<ReadonlySet<Digest>>;
  readonly onEvicted?: (reason: EvictionReason, count: number) => void;
  readonly onChange?: (totals: { sizeBytes: number; entries: number }) => void;
}

export interface PruneOptions {
  /** Evict (least recently served first) until at most this many bytes are stored. */
  readonly targetBytes?: number;
  /** Evict what was not served for this long. */
  readonly olderThanMs?: number;
  readonly dryRun: boolean;
}

/** Why a blob is relayed rather than stored: see `planRoom`. */
export type NoRoom = 'too_large' | 'disk_full';

/** Whether a blob about to be spooled fits on the disk, and the figures that decided it. */
export interface Room {
  readonly fits: boolean;
  readonly freeBytes: number;
  /** The blob's size plus the reserve kept free beyond it. */
  readonly neededBytes: number;
  /** Set when it does not fit. */
  readonly reason?: NoRoom;
}

/** The figures a blob's room is decided on, all in bytes. */
export interface RoomFigures {
  /** The blob's announced size (0 when not announced). */
  readonly sizeBytes: number;
  /** The blob plus the reserve kept free beyond it. */
  readonly neededBytes: number;
  readonly maxSizeBytes: number;
  readonly freeBytes: number;
  /** What eviction may remove now: stored bytes not protected and not in use. */
  readonly evictableBytes: number;
}

export interface CacheIndex {
  /** Reads the snapshot, or scans the disk when there is none or it is damaged. */
  load(): Promise<'snapshot' | 'scan'>;
  readonly sizeBytes: number;
  readonly entries: number;
  has(digest: Digest): boolean;
  /** Content served (or just committed): most recent now. Adds an entry the disk has. */
  touch(digest: Digest, sizeBytes?: number): void;
  /** Keeps `digest` from eviction until the returned release is called. */
  use(digest: Digest): () => void;
  /** The file is gone (removed as damaged). */
  forget(digest: Digest): void;
  /** True when stored bytes exceed the budget (a maintenance pass would evict). */
  overBudget(): boolean;
  /** Rescan, evict idle content, evict down to the low watermark, save the snapshot. */
  maintain(): Promise<EvictionReport>;
  /**
   * Room on the disk for a blob of `sizeBytes` (undefined: not announced) plus a reserve,
   * evicting the least recently served content only when that makes it, and only the
   * shortfall (`planRoom`). The fill asks before it spools; it never decides on eviction itself.
   */
  makeRoom(sizeBytes: number | undefined): Promise<Room>;
  /** The operator's eviction (CLI `prune`): by target size and/or age; dry run by default. */
  prune(options: PruneOptions): Promise<EvictionReport>;
  /** Digests from least to most recently served, with what the index knows of them. */
  list(): { digest: Digest; sizeBytes: number; lastUsedMs: number }[];
  saveSnapshot(): Promise<void>;
}

/** A hit moves the file's mtime at most this often: recency for other processes. */
const TOUCH_EVERY_MS = 60_000;
const SNAPSHOT_VERSION = 1;
/** Free space kept beyond a blob's size before it is spooled. */
const DISK_RESERVE_BYTES = 64 * 1024 * 1024;
/**
 * The largest share of the budget one blob may take. A bigger one would push most of
 * the store out for itself (and, over the whole budget, itself too on the next pass):
 * it is relayed instead, and nothing is evicted for it.
 */
export const MAX_BLOB_SHARE = 0.5;

/**
 * What an incoming blob may cost the store: nothing when it fits the free disk; else
 * exactly the shortfall, evicted, when eviction can cover it; else nothing at all, and
 * the blob is relayed. No request evicts content it cannot then use the room of.
 */
export function planRoom(room: RoomFigures): { evictBytes: number } | { reason: NoRoom } {
  if (room.sizeBytes > room.maxSizeBytes * MAX_BLOB_SHARE) return { reason: 'too_large' };
  const shortBytes = room.neededBytes - room.freeBytes;
  if (shortBytes <= 0) return { evictBytes: 0 };
  if (shortBytes > room.evictableBytes) return { reason: 'disk_full' };
  return { evictBytes: shortBytes };
}

export function createCacheIndex(options: CacheIndexOptions): CacheIndex {
  const { store } = options;
  const now = options.now ?? Date.now;
  const lowWatermark = options.lowWatermark ?? 0.9;
  let lru = emptyLru();
  let totalBytes = 0;
  let dirty = false;
  const inUse = new Map<string, number>();
  let running: Promise<EvictionReport> | undefined;
  /** Entries put while a rescan runs: committed after it may have read their shard. */
  let putDuringScan: Set<string> | undefined;
  const manifestGraph = createManifestGraphReader(store);

  function emptyLru(): LRUCache<string, Entry> {
    return new LRUCache<string, Entry>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: () => 1 });
  }

  /** Least recently served first. */
  function ordered(): [string, Entry][] {
    return [...lru.rkeys()].map((hex) => [hex, lru.peek(hex) as Entry]);
  }

  function changed(): void {
    dirty = true;
    options.onChange?.({ sizeBytes: totalBytes, entries: lru.size });
  }

  function put(hex: string, entry: Entry): void {
    const previous = lru.get(hex);
    totalBytes += entry.sizeBytes - (previous?.sizeBytes ?? 0);
    lru.set(hex, entry);
    putDuringScan?.add(hex);
  }

  function drop(hex: string): void {
    const previous = lru.peek(hex);
    if (!previous) return;
    totalBytes -= previous.sizeBytes;
    lru.delete(hex);
  }

  /** Replaces the index with `entries`, least recent first. */
  function rebuild(entries: [string, Entry][]): void {
    entries.sort((a, b) => a[1].lastUsedMs - b[1].lastUsedMs);
    lru = emptyLru();
    totalBytes = 0;
    for (const [hex, entry] of entries) put(hex, entry);
    changed();
  }

  async function readSnapshot(): Promise<[string, Entry][] | undefined> {
    const text = await readFile(store.layout.snapshotPath, 'utf8').catch(ifMissing(undefined));
    if (text === undefined) return undefined;
    try {
      const raw = JSON.parse(text) as { version?: unknown; entries?: unknown };
      if (raw.version !== SNAPSHOT_VERSION || !Array.isArray(raw.entries)) return undefined;
      const entries: [string, Entry][] = [];
      for (const item of raw.entries as unknown[]) {
        if (!Array.isArray(item)) return undefined;
        const [hex, sizeBytes, lastUsedMs] = item as unknown[];
        if (typeof hex !== 'string' || !/^[0-9a-f]{64}$/.test(hex)) return undefined;
        if (!isCount(sizeBytes) || !isCount(lastUsedMs)) return undefined;
        entries.push([hex, { sizeBytes, lastUsedMs, touchedMs: lastUsedMs }]);
      }
      return entries;
    } catch {
      return undefined;
    }
  }

  /** Disk and memory merged: the disk says what exists, the later of the two says when it was used. */
  async function reconcile(): Promise<void> {
    const added = new Set<string>();
    putDuringScan = added;
    // Still recording once the scan is done: a put that runs before this function resumes
    // is on neither side, and only `added` keeps it.
    const disk = await scanBlobs(store.layout).catch((err: unknown) => {
      putDuringScan = undefined;
      throw err;
    });
    putDuringScan = undefined;
    const merged: [string, Entry][] = [];
    for (const [hex, file] of disk) {
      const known = lru.peek(hex);
      const lastUsedMs = Math.max(known?.lastUsedMs ?? 0, Math.floor(file.mtimeMs));
      merged.push([hex, { sizeBytes: file.sizeBytes, lastUsedMs, touchedMs: known?.touchedMs ?? file.mtimeMs }]);
    }
    // Entries put while the scan ran may have been committed after it read their shard
    // (by identity, not by timestamp: a snapshot from a clock running ahead must not keep
    // what is gone).
    for (const [hex, entry] of lru.entries()) {
      if (!disk.has(hex) && added.has(hex)) merged.push([hex, entry]);
    }
    rebuild(merged);
  }

  /** Stored bytes eviction may remove now (not protected, not in use). */
  async function evictableBytes(): Promise<number> {
    const { keep } = await protectedSets();
    let bytes = 0;
    for (const [hex, entry] of lru.entries()) if (!keep.has(hex)) bytes += entry.sizeBytes;
    return bytes;
  }

  /** What must stay: pinned digests (apart, for the pinned bytes) and, with them, entries in use. */
  async function protectedSets(): Promise<{ pinned: Set<string>; keep: Set<string> }> {
    const digests = (await options.protectedDigests?.()) ?? new Set<Digest>();
    const pinned = new Set([...digests].map((d) => digestHex(d)));
    return { pinned, keep: new Set([...pinned, ...inUse.keys()]) };
  }

  /**
   * Picks victims unit by unit (images.ts), least recent first: idle ones (the order is by
   * last use, so they lead), then more until `targetBytes` is reached. A unit whose root is
   * kept stays whole; a member that a unit not (yet) chosen still reaches, or that is kept
   * itself, stays.
   */
  function chooseVictims(units: readonly StoreUnit[], keep: Set<string>, idleBefore: number | undefined, targetBytes: number | undefined) {
    const holders = new Map<string, number>();
    for (const unit of units) for (const hex of unit.members) holders.set(hex, (holders.get(hex) ?? 0) + 1);
    const victims: [string, Entry, EvictionReason][] = [];
    let remaining = totalBytes;
    for (const unit of units) {
      if (keep.has(unit.root)) continue;
      const idle = idleBefore !== undefined && unit.lastUsedMs < idleBefore;
      if (!idle && (targetBytes === undefined || remaining <= targetBytes)) break;
      for (const hex of unit.members) {
        const left = (holders.get(hex) ?? 1) - 1;
        holders.set(hex, left);
        const entry = lru.peek(hex);
        if (left > 0 || keep.has(hex) || !entry) continue;
        victims.push([hex, entry, idle ? 'ttl' : 'size']);
        remaining -= entry.sizeBytes;
      }
    }
    return victims;
  }

  async function evict(idleBefore: number | undefined, target: () => number | undefined, dryRun: boolean): Promise<EvictionReport> {
    const lease = await store.locks.tryLock(lockNames.evict);
    if (!lease) return report({ removed: 0, removedBytes: 0, byReason: { size: 0, ttl: 0 } }, dryRun, true);
    try {
      // The rescan may find more than this process knew of: the target is decided on the merged total.
      await reconcile();
      const { pinned, keep } = await protectedSets();
      const units = storeUnits(ordered(), await manifestGraph.load());
      const removal = await remove(chooseVictims(units, keep, idleBefore, target()), dryRun);
      if (!dryRun) {
        for (const reason of ['size', 'ttl'] as const) {
          if (removal.byReason[reason] > 0) options.onEvicted?.(reason, removal.byReason[reason]);
        }
        changed();
        await saveSnapshot();
      }
      const images = units.filter((u) => u.kind === 'image' && !removal.removedHexes.has(u.root)).length;
      let pinnedBytes = 0;
      for (const hex of pinned) pinnedBytes += lru.peek(hex)?.sizeBytes ?? 0;
      return { ...report(removal, dryRun, false), images, pinnedBytes };
    } finally {
      await lease.release();
    }
  }

  /** Removes the victims in order (an image's manifests before its blobs); a dry run only counts them. */
  async function remove(victims: readonly [string, Entry, EvictionReason][], dryRun: boolean) {
    const byReason: Record<EvictionReason, number> = { size: 0, ttl: 0 };
    const removedHexes = new Set<string>();
    let removedBytes = 0;
    for (const [hex, entry, reason] of victims) {
      // Taken into use since it was chosen: it stays.
      if (!dryRun && inUse.has(hex)) continue;
      byReason[reason] += 1;
      removedBytes += entry.sizeBytes;
      if (dryRun) continue;
      removedHexes.add(hex);
      drop(hex);
      await store.blobs.remove(digestFromHex(hex));
    }
    return { removed: Object.values(byReason).reduce((a, b) => a + b, 0), removedBytes, byReason, removedHexes };
  }

  function report(
    removal: { removed: number; removedBytes: number; byReason: Record<EvictionReason, number> },
    dryRun: boolean,
    skipped: boolean,
  ): EvictionReport {
    const { removed, removedBytes, byReason } = removal;
    return { removed, removedBytes, byReason, sizeBytes: totalBytes, entries: lru.size, dryRun, skipped };
  }

  async function saveSnapshot(): Promise<void> {
    const entries = ordered().map(([hex, e]) => [hex, e.sizeBytes, e.lastUsedMs]);
    dirty = false;
    await store.temp.writeAtomic(store.layout.snapshotPath, JSON.stringify({ version: SNAPSHOT_VERSION, entries }));
  }

  /** One pass at a time; a caller arriving meanwhile shares it. */
  function exclusive(work: () => Promise<EvictionReport>): Promise<EvictionReport> {
    running ??= work().finally(() => {
      running = undefined;
    });
    return running;
  }

  return {
    async load() {
      const snapshot = await readSnapshot();
      if (snapshot) {
        rebuild(snapshot);
        dirty = false;
        return 'snapshot';
      }
      await reconcile();
      return 'scan';
    },
    get sizeBytes() {
      return totalBytes;
    },
    get entries() {
      return lru.size;
    },
    has: (digest) => lru.has(digestHex(digest)),
    touch(digest, sizeBytes) {
      const hex = digestHex(digest);
      const known = lru.get(hex);
      if (!known && sizeBytes === undefined) return;
      const at = now();
      const entry = { sizeBytes: sizeBytes ?? (known as Entry).sizeBytes, lastUsedMs: at, touchedMs: known?.touchedMs ?? at };
      if (at - entry.touchedMs >= TOUCH_EVERY_MS) {
        entry.touchedMs = at;
        void store.blobs.touch(digest, at).catch(() => undefined);
      }
      put(hex, entry);
      changed();
    },
    use(digest) {
      const hex = digestHex(digest);
      inUse.set(hex, (inUse.get(hex) ?? 0) + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (inUse.get(hex) ?? 1) - 1;
        if (left > 0) inUse.set(hex, left);
        else inUse.delete(hex);
      };
    },
    forget(digest) {
      drop(digestHex(digest));
      changed();
    },
    overBudget: () => totalBytes > options.maxSizeBytes,
    maintain: () =>
      exclusive(() =>
        evict(
          now() - options.idleTtlMs,
          () => (totalBytes > options.maxSizeBytes ? Math.floor(options.maxSizeBytes * lowWatermark) : undefined),
          false,
        ),
      ),
    async makeRoom(sizeBytes) {
      const neededBytes = (sizeBytes ?? 0) + DISK_RESERVE_BYTES;
      const freeBytes = await store.blobs.freeBytes();
      const figures = { sizeBytes: sizeBytes ?? 0, neededBytes, maxSizeBytes: options.maxSizeBytes, freeBytes };
      const plan = planRoom({ ...figures, evictableBytes: freeBytes >= neededBytes ? 0 : await evictableBytes() });
      if ('reason' in plan) return { fits: false, freeBytes, neededBytes, reason: plan.reason };
      if (plan.evictBytes === 0) return { fits: true, freeBytes, neededBytes };
      // The target is taken after the pass's rescan: the shortfall, least recently served first.
      await exclusive(() => evict(undefined, () => Math.max(0, totalBytes - plan.evictBytes), false));
      const after = await store.blobs.freeBytes();
      if (after >= neededBytes) return { fits: true, freeBytes: after, neededBytes };
      return { fits: false, freeBytes: after, neededBytes, reason: 'disk_full' };
    },
    prune: (prune) =>
      exclusive(() =>
        evict(prune.olderThanMs === undefined ? undefined : now() - prune.olderThanMs, () => prune.targetBytes, prune.dryRun),
      ),
    list: () => ordered().map(([hex, e]) => ({ digest: digestFromHex(hex), sizeBytes: e.sizeBytes, lastUsedMs: e.lastUsedMs })),
    async saveSnapshot() {
      if (dirty) await saveSnapshot();
    },
  };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
