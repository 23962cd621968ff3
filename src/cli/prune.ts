import type { Config } from '../config/types.js';
import { formatBytes } from '../config/units.js';
import type { EvictionReport } from '../store/cache-index.js';
import { openStore } from './store-access.js';

export interface PruneRequest {
  readonly targetBytes?: number;
  readonly olderThanMs?: number;
  readonly apply: boolean;
}

/** How long to wait for a running mirror's eviction pass to finish before giving up. */
const LOCK_WAIT_MS = 60_000;
const LOCK_RETRY_MS = 500;

/**
 * Evicts now, by size and/or age, under the same `evict` lock as running mirrors (safe
 * beside them: they refetch what is gone, and reconcile on their next pass). Dry run
 * unless `apply`. Returns the report; `print` gets the lines for a person.
 */
export async function runPrune(config: Config, request: PruneRequest, print: (line: string) => void): Promise<EvictionReport> {
  print(`reading the store at ${config.store.path} …`);
  const access = await openStore(config);
  try {
    const { index } = access;
    print(`${formatBytes(index.sizeBytes)} in ${index.entries} entries (index from ${access.loadedFrom})`);
    const deadline = Date.now() + LOCK_WAIT_MS;
    let report: EvictionReport;
    for (;;) {
      report = await index.prune({ ...request, dryRun: !request.apply });
      if (!report.skipped || Date.now() > deadline) break;
      print('another process is evicting; waiting …');
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
    if (report.skipped) throw new Error('the store stayed locked by another evicting process; try again');
    const verb = report.dryRun ? 'would remove' : 'removed';
    const after = report.dryRun ? report.sizeBytes - report.removedBytes : report.sizeBytes;
    print(
      `${verb} ${report.removed} entries, ${formatBytes(report.removedBytes)} ` +
        `(${report.byReason.ttl} idle, ${report.byReason.size} for size); the store ${report.dryRun ? 'would hold' : 'holds'} ${formatBytes(after)}`,
    );
    if (report.dryRun) print('dry run: nothing was deleted; add --apply to delete');
    return report;
  } finally {
    await access.close();
  }
}
