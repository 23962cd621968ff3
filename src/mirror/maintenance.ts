/**
 * The store's housekeeping, on one unref'd timer (never one per entry): rescan the
 * disk, evict idle content and content over budget (cache-index.ts), drop tag records
 * whose manifest is gone or that are past any use, remove temp files of dead
 * processes, save the recency snapshot. A pass is also started when a commit takes
 * the store over its budget; passes never overlap.
 *
 * A tag record is past use only when it is neither fresh, nor within `maxStale`, nor
 * served within `idleTtl`: serving a tag refreshes its use (records.ts), online or
 * offline. Offline, and for imported tags, no upstream could ever renew a record, so
 * those never expire by age; nor does the record a pin resolves through (pins.ts).
 */
import type { Logger } from '../log.js';
import type { Config } from '../config/types.js';
import type { Store } from '../store/store.js';
import type { CacheIndex, EvictionReport } from '../store/cache-index.js';
import type { Records, StoredTag } from '../store/records.js';
import type { Metrics } from '../metrics.js';
import { pinnedTags, tagKey } from './pins.js';

export interface Maintenance {
  /** Runs a pass now (or joins the one running). */
  run(): Promise<EvictionReport | undefined>;
  /** Waits for the pass running now, if any; starts none. */
  idle(): Promise<void>;
  start(): void;
  /** Stops the timer, waits for a running pass, saves the snapshot. */
  close(): Promise<void>;
}

export interface MaintenanceDeps {
  readonly config: Config;
  readonly store: Store;
  readonly index: CacheIndex;
  readonly records: Records;
  readonly log: Logger;
  /** Gauges of images and pinned bytes, set after each pass. */
  readonly metrics?: Pick<Metrics, 'storeImages' | 'storePinnedBytes'>;
  readonly now?: () => number;
}

/** A tenth of the idle TTL, within [1 min, 10 min]: TTL is honoured within 10 %. */
export function maintenanceIntervalMs(idleTtlMs: number): number {
  return Math.min(10 * 60_000, Math.max(60_000, Math.floor(idleTtlMs / 10)));
}

/** The first pass reconciles a snapshot with the disk soon after start-up. */
const FIRST_PASS_MS = 5_000;

export function createMaintenance(deps: MaintenanceDeps): Maintenance {
  const { index, store, records, log, config } = deps;
  const now = deps.now ?? Date.now;
  let timers: NodeJS.Timeout[] = [];
  let running: Promise<EvictionReport | undefined> | undefined;

  /** Tag records are worth keeping while pinned, or while their manifest is stored and they are of use. */
  async function keepTag(stored: StoredTag, pinned: ReadonlySet<string>): Promise<boolean> {
    if (pinned.has(tagKey(stored.upstream, stored.repository, stored.tag))) return true;
    const policy = config.upstreams[stored.upstream];
    if (!policy) return false;
    // The disk is the truth: a manifest the index has not met yet (stored by another
    // process, or while a rescan ran) still keeps its tag.
    if (!index.has(stored.record.digest) && (await store.manifests.findType(stored.record.digest)) === undefined) return false;
    if (config.offline || stored.record.imported) return true;
    const at = now();
    const fresh = at - stored.record.checkedAtMs < policy.freshForMs + policy.maxStaleMs;
    return fresh || at - stored.lastUsedMs < config.store.idleTtlMs;
  }

  async function pass(): Promise<EvictionReport | undefined> {
    const startedMs = now();
    try {
      const report = await index.maintain();
      if (report.images !== undefined) deps.metrics?.storeImages.set(report.images);
      if (report.pinnedBytes !== undefined) deps.metrics?.storePinnedBytes.set(report.pinnedBytes);
      const pinned = await pinnedTags({ config, records });
      const dropped = await records.sweepTags((stored) => keepTag(stored, pinned));
      const temp = await store.sweepTemp();
      if (report.removed > 0 || dropped > 0 || temp > 0) {
        log.info(
          {
            removed: report.removed,
            removedBytes: report.removedBytes,
            ...report.byReason,
            tagsDropped: dropped,
            tempRemoved: temp,
            sizeBytes: report.sizeBytes,
            entries: report.entries,
            images: report.images,
            durationMs: now() - startedMs,
          },
          'store maintained',
        );
      }
      return report;
    } catch (err) {
      log.error({ err }, 'store maintenance failed');
      return undefined;
    }
  }

  function run(): Promise<EvictionReport | undefined> {
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  }

  return {
    run,
    async idle() {
      await running;
    },
    start() {
      timers = [setTimeout(() => void run(), FIRST_PASS_MS), setInterval(() => void run(), maintenanceIntervalMs(config.store.idleTtlMs))];
      for (const timer of timers) timer.unref();
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers = [];
      await running;
      await index.saveSnapshot().catch((err: unknown) => log.warn({ err }, 'could not save the store index'));
    },
  };
}
