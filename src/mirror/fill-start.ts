/**
 * How a blob download starts, once per digest across every process on the store:
 * take the `fill-<hex>` lock and lead (fetch, spool, say where the spool is), or follow
 * the spool of the process holding the lock, or find the blob committed meanwhile.
 * Without a writable store (no lock, no room) the blob is relayed for this process alone.
 */
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import { lockNames } from '../store/layout.js';
import type { Lease } from '../store/lock.js';
import { contentLength, upstreamFor, type MirrorDeps } from './context.js';
import { Fill } from './fill.js';
import { RemoteFill } from './remote-fill.js';

/** A download this process serves from: its own fill, or one another process writes. */
export type Source = Fill | RemoteFill;

export interface FillStart {
  /** Undefined: another process committed the blob meanwhile; serve it from the store. */
  acquire(route: Route, digest: Digest): Promise<Source | undefined>;
  /** Fetches now, without the lock: `spool: false` relays and stores nothing. */
  begin(route: Route, digest: Digest, spool: boolean): Promise<Fill>;
  /** Resolves when every fill led here has let go of its lock and record. */
  idle(): Promise<void>;
}

/** Free space kept beyond a blob's size before it is spooled. */
const DISK_RESERVE_BYTES = 64 * 1024 * 1024;
const FOLLOW_POLL_MS = 50;

export function createFillStart(deps: MirrorDeps): FillStart {
  const { metrics, store, index, health } = deps;
  const owner = store.owner;
  const leading = new Set<Promise<void>>();

  /** Room for `sizeBytes` more on the disk, evicting if that makes it; false when not. */
  async function hasRoom(sizeBytes: number | undefined): Promise<boolean> {
    if (!health.writable()) return false;
    const needed = (sizeBytes ?? 0) + DISK_RESERVE_BYTES;
    let free = await store.blobs.freeBytes();
    if (free >= needed) return true;
    await index.prune({ targetBytes: Math.max(0, index.sizeBytes - (needed - free)), dryRun: false });
    free = await store.blobs.freeBytes();
    if (free >= needed) return true;
    health.failed(Object.assign(new Error(`${free} bytes free, ${needed} needed`), { code: 'ENOSPC' }), 'blob');
    return false;
  }

  async function begin(route: Route, digest: Digest, spool: boolean): Promise<Fill> {
    const { upstream } = upstreamFor(deps, route);
    const response = await upstream.request({
      method: 'GET',
      repository: route.repository,
      path: `blobs/${digest}`,
      notFound: 'BLOB_UNKNOWN',
    });
    const sizeBytes = contentLength(response.headers['content-length']);
    return Fill.begin(
      {
        digest,
        sizeBytes,
        store,
        spool: spool && (await hasRoom(sizeBytes).catch(() => false)),
        onUpstreamBytes: (n) => metrics.upstreamBytes.inc({ upstream: route.upstream }, n),
        onWriteFailure: (err) => {
          health.failed(err, 'blob');
          void store.fills.remove(digest).catch(() => undefined);
        },
      },
      response.body,
    );
  }

  /** Holding the fill lock: fetch, and tell other processes where the spool is. */
  async function lead(route: Route, digest: Digest, lease: Lease): Promise<Fill | undefined> {
    try {
      if ((await store.blobs.stat(digest)) !== undefined) throw new Committed();
      // Records only speed up other processes; a full disk must not fail the pull over one.
      await store.fills.write(digest, { owner }).catch(() => undefined);
      const fill = await begin(route, digest, true);
      // Off the path to the first byte; the record is removed only after it is written.
      const recorded = fill.spoolPath
        ? store.fills.write(digest, { owner, spool: fill.spoolPath, ...sized(fill.sizeBytes) }).catch(() => undefined)
        : Promise.resolve();
      const over = fill.done
        .catch(() => undefined)
        .then(() => recorded)
        .finally(() => letGo(digest, lease));
      leading.add(over);
      void over.finally(() => leading.delete(over));
      return fill;
    } catch (err) {
      await letGo(digest, lease);
      if (err instanceof Committed) return undefined;
      throw err;
    }
  }

  async function letGo(digest: Digest, lease: Lease): Promise<void> {
    await store.fills.remove(digest).catch(() => undefined);
    await lease.release();
  }

  /**
   * One fetch per digest across every process on this store: take the fill lock and
   * lead, or follow the spool of the process that holds it.
   */
  async function acquire(route: Route, digest: Digest): Promise<Source | undefined> {
    const { config } = upstreamFor(deps, route);
    const deadline = Date.now() + config.timeouts.connectMs + config.timeouts.headersMs + 10_000;
    const lockName = lockNames.fill(digest);
    for (;;) {
      const lease = await store.locks.tryLock(lockName).catch((err: unknown) => {
        // No lock without a writable store: fetch for this process alone, relayed.
        health.failed(err, 'lock');
        return null;
      });
      if (lease === null) return begin(route, digest, false);
      if (lease) return lead(route, digest, lease);
      if ((await store.blobs.stat(digest)) !== undefined) return undefined;
      const record = await store.fills.find(digest);
      if (record?.spool) {
        const stallMs = config.timeouts.bodyMs + 5_000;
        const remote = await RemoteFill.follow({ digest, sizeBytes: record.sizeBytes, store, stallMs }, record.spool);
        if (remote) return remote;
        continue;
      }
      if (Date.now() > deadline) {
        throw new RegistryError('UNAVAILABLE', 'another process is fetching this blob and has not started', { statusCode: 503 });
      }
      await new Promise((resolve) => setTimeout(resolve, FOLLOW_POLL_MS));
    }
  }

  return {
    acquire,
    begin,
    async idle() {
      await Promise.allSettled([...leading]);
    },
  };
}

/** Thrown inside `lead` when another process committed the blob first. */
class Committed extends Error {}

function sized(sizeBytes: number | undefined): { sizeBytes?: number } {
  return sizeBytes === undefined ? {} : { sizeBytes };
}
