import type { Config } from '../config/types.js';
import { formatBytes } from '../config/units.js';
import { digestHex, type Digest } from '../oci/digest.js';
import { partDigest, storedManifests, walkImage } from '../oci/walk.js';
import { createStore, type Store } from '../store/store.js';
import { createRecords } from '../store/records.js';
import { scanBlobs, type ScannedBlob } from '../store/scan.js';
import { createManifestGraphReader, storeUnits } from '../store/images.js';
import { pinnedDigests } from '../mirror/pins.js';

export interface RepositoryStats {
  readonly upstream: string;
  readonly repository: string;
  /** Stored bytes of everything its tags and links reach (shared content counts for each). */
  readonly sizeBytes: number;
}

export interface MirrorStats {
  readonly url: string;
  /** (hit + revalidated + coalesced) / every answered request, since the mirror started. */
  readonly hitRatio?: number;
  readonly requests?: number;
  readonly bandwidthSavedBytes?: number;
  readonly error?: string;
}

export interface StoreStats {
  readonly path: string;
  readonly sizeBytes: number;
  readonly entries: number;
  /** Images stored whole or in part: manifests no other stored manifest references. */
  readonly images: number;
  /** Stored bytes of pinned images (never evicted). */
  readonly pinnedBytes: number;
  readonly topRepositories: readonly RepositoryStats[];
  readonly mirror: MirrorStats;
}

const TOP = 10;
const METRICS_TIMEOUT_MS = 3_000;

/** Reads the store (read-only: the disk is scanned, nothing is written) and asks the mirror for its counters. */
export async function collectStats(config: Config, url: string): Promise<StoreStats> {
  const store = createStore(config.store.path);
  const files = await scanBlobs(store.layout);
  let sizeBytes = 0;
  for (const file of files.values()) sizeBytes += file.sizeBytes;
  const repositories = await repositorySizes(store, (d) => files.get(digestHex(d))?.sizeBytes);
  return {
    path: config.store.path,
    sizeBytes,
    entries: files.size,
    ...(await imageFigures(config, store, files)),
    topRepositories: repositories.sort((a, b) => b.sizeBytes - a.sizeBytes).slice(0, TOP),
    mirror: await mirrorStats(url),
  };
}

/** Images as eviction sees them (store/images.ts), and the bytes pins hold. */
async function imageFigures(config: Config, store: Store, files: ReadonlyMap<string, ScannedBlob>) {
  const entries = [...files].map(([hex, file]) => [hex, { lastUsedMs: file.mtimeMs }] as const);
  const units = storeUnits(entries, await createManifestGraphReader(store).load());
  let pinnedBytes = 0;
  for (const d of await pinnedDigests({ config, records: createRecords(store), store })) {
    pinnedBytes += files.get(digestHex(d))?.sizeBytes ?? 0;
  }
  return { images: units.filter((u) => u.kind === 'image').length, pinnedBytes };
}

async function repositorySizes(store: Store, sizeOf: (d: Digest) => number | undefined): Promise<RepositoryStats[]> {
  const reach = new Map<Digest, Digest[]>();
  const load = storedManifests((digest) => store.manifests.read(digest));
  async function reachable(root: Digest): Promise<Digest[]> {
    const known = reach.get(root);
    if (known) return known;
    const top = await load({ digest: root });
    const all = top ? [] : [root];
    if (top) for await (const part of walkImage(top, load)) all.push(partDigest(part));
    reach.set(root, all);
    return all;
  }
  const result: RepositoryStats[] = [];
  for (const repo of await createRecords(store).listRepositories()) {
    const digests = new Set<Digest>();
    for (const root of repo.digests) for (const d of await reachable(root)) digests.add(d);
    let sizeBytes = 0;
    for (const d of digests) sizeBytes += sizeOf(d) ?? 0;
    result.push({ upstream: repo.upstream, repository: repo.repository, sizeBytes });
  }
  return result;
}

async function mirrorStats(url: string): Promise<MirrorStats> {
  try {
    const response = await fetch(new URL('/metrics', url), { signal: AbortSignal.timeout(METRICS_TIMEOUT_MS) });
    if (!response.ok) return { url, error: `GET /metrics answered ${response.status}` };
    const text = await response.text();
    const served = sumSamples(text, 'oci_mirror_requests_total', (labels) => /outcome="(hit|revalidated|coalesced)"/.test(labels));
    const requests = sumSamples(text, 'oci_mirror_requests_total', (labels) => !labels.includes('outcome="error"'));
    const bandwidthSavedBytes = sumSamples(text, 'oci_mirror_bandwidth_saved_bytes_total', () => true);
    return { url, requests, bandwidthSavedBytes, ...(requests > 0 ? { hitRatio: served / requests } : {}) };
  } catch (err) {
    return { url, error: `no mirror answered: ${(err as Error).message}` };
  }
}

/** Sums the samples of one metric in Prometheus text format whose label set `match`es. */
function sumSamples(text: string, name: string, match: (labels: string) => boolean): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$/.exec(line);
    if (m && m[1] === name && match(m[2] ?? '')) sum += Number(m[3]);
  }
  return sum;
}

export function formatStats(stats: StoreStats): string[] {
  const lines = [
    `store ${stats.path}: ${formatBytes(stats.sizeBytes)} in ${stats.entries} entries; ${stats.images} images cached, ` +
      `${formatBytes(stats.pinnedBytes)} pinned`,
  ];
  if (stats.topRepositories.length > 0) {
    lines.push('top repositories by stored bytes:');
    for (const r of stats.topRepositories) lines.push(`  ${formatBytes(r.sizeBytes).padStart(10)}  ${r.upstream}/${r.repository}`);
  }
  const m = stats.mirror;
  if (m.error) lines.push(`mirror at ${m.url}: ${m.error}`);
  else {
    const ratio = m.hitRatio === undefined ? 'no requests yet' : `${(m.hitRatio * 100).toFixed(1)} %`;
    lines.push(
      `mirror at ${m.url}: hit ratio ${ratio} over ${m.requests ?? 0} requests since start; ${formatBytes(m.bandwidthSavedBytes ?? 0)} saved`,
    );
  }
  return lines;
}
