/**
 * How a blob download starts, once per digest across every process on the store:
 * take the `fill-<hex>` lock and lead (fetch, spool, say where the spool is), or follow
 * the spool of the process holding the lock, or find the blob committed meanwhile.
 * Without a writable store (no lock, no room) the blob is relayed for this process alone.
 * The fill lock and the fill record are named here and nowhere else in the mirror.
 */
import type { RelayReason } from '../metrics.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import type { FillRecord } from '../store/fill-records.js';
import { lockNames } from '../store/layout.js';
import type { Store } from '../store/store.js';
import type { Lease } from '../store/lock.js';
import type { UpstreamResponse } from '../upstream/client.js';
import { contentLength } from '../upstream/body.js';
import { upstreamFor, type MirrorDeps } from './context.js';
import { Fill } from './fill.js';
import { RemoteFill } from './remote-fill.js';
import { createResumer, type ResumeOptions, type Resumer } from './resume.js';
import type { Source } from './source.js';

export interface FillStart {
  /** Undefined: another process committed the blob meanwhile; serve it from the store. */
  acquire(route: Route, digest: Digest): Promise<Source | undefined>;
  /** Fetches now for one request, without the lock, and stores nothing. */
  relay(route: Route, digest: Digest): Promise<Source>;
  /** Resolves when every fill led here has let go of its lock and record. */
  idle(): Promise<void>;
}

const FOLLOW_POLL_MS = 50;

export function createFillStart(deps: MirrorDeps): FillStart {
  const { metrics, log, store, index, health } = deps;
  const now = deps.now ?? Date.now;
  const owner = store.owner;
  const leading = new Set<Promise<void>>();

  /**
   * Why the leader's download is relayed rather than spooled, or undefined to spool it.
   * What to evict for it is the store budget's decision (`makeRoom`), never the fill's.
   */
  async function relayReason(sizeBytes: number | undefined): Promise<RelayReason | undefined> {
    if (!health.writable()) return 'store_unwritable';
    // A store that cannot say whether there is room is no place to spool: the blob is relayed.
    const room = await index.makeRoom(sizeBytes).catch(() => undefined);
    if (!room) return 'store_unwritable';
    if (room.fits) return undefined;
    // Too large for the budget says nothing about the store; a full disk does.
    if (room.reason === 'too_large') return 'too_large';
    const full = new Error(`${room.freeBytes} bytes free, ${room.neededBytes} needed`);
    health.failed(Object.assign(full, { code: 'ENOSPC' }), 'blob');
    return 'disk_full';
  }

  /**
   * GETs the blob; spools it when leading and the store has room, else relays it (for
   * `alone` when there is no leader), counting why.
   */
  async function fetch(route: Route, digest: Digest, leader: FillClaim | undefined, alone: RelayReason): Promise<Fill> {
    const startedAtMs = now();
    const get = getBlob(route, digest);
    const response = await get({});
    const sizeBytes = contentLength(response.headers['content-length']);
    const labels = { upstream: route.upstream };
    const relayed = leader ? await relayReason(sizeBytes) : alone;
    if (relayed) metrics.relays.inc({ reason: relayed });
    const options = {
      digest,
      sizeBytes,
      store,
      now,
      spool: relayed === undefined,
      resumer: resumerFor(route, digest, { startedAtMs, etag: response.headers['etag'], request: get }),
      onUpstreamBytes: (n: number) => metrics.upstreamBytes.inc(labels, n),
      onRefetchedBytes: (n: number) => metrics.upstreamRefetchedBytes.inc(labels, n),
      onWriteFailure: (err: unknown) => {
        health.failed(err, 'blob');
        void leader?.removeRecord();
      },
    };
    return Fill.begin(options, response.body);
  }

  /** A GET of the blob through the registry, with extra headers (Range, If-Range to resume). */
  function getBlob(route: Route, digest: Digest): (headers: Readonly<Record<string, string>>) => Promise<UpstreamResponse> {
    const { upstream } = upstreamFor(deps, route);
    return (headers) =>
      upstream.request({ method: 'GET', repository: route.repository, path: `blobs/${digest}`, headers, notFound: 'BLOB_UNKNOWN' });
  }

  /** Resumes a cut body within the upstream's policy; each attempt counted and logged with its offset. */
  function resumerFor(route: Route, digest: Digest, first: Pick<ResumeOptions, 'startedAtMs' | 'etag' | 'request'>): Resumer {
    const { config } = upstreamFor(deps, route);
    const fields = { digest, upstream: route.upstream, repository: route.repository };
    return createResumer({
      ...first,
      policy: config.resume,
      now,
      onResume: (event) => {
        metrics.upstreamResumes.inc({ upstream: route.upstream, outcome: event.outcome });
        const entry = { ...fields, offset: event.offset, attempt: event.attempt, outcome: event.outcome, reason: event.reason };
        if (event.outcome === 'failed') log.warn(entry, 'fill resume failed');
        else log.info(entry, 'fill resumed');
      },
    });
  }

  /** Holding the fill lock: fetch, and tell other processes where the spool is. */
  async function lead(route: Route, digest: Digest, claim: FillClaim, lease: Lease): Promise<Fill> {
    try {
      await claim.writeRecord({ owner });
      const fill = await fetch(route, digest, claim, 'unshared');
      // Off the path to the first byte; the record is removed only after it is written.
      const recorded = fill.spoolPath ? claim.writeRecord({ owner, spool: fill.spoolPath, ...sized(fill.sizeBytes) }) : undefined;
      // Committed, relayed or failed: the lock and record go either way (a failure is the fill's to report).
      const over = fill.done
        .catch(() => undefined)
        .then(() => recorded)
        .finally(() => letGo(claim, lease));
      leading.add(over);
      void over.finally(() => leading.delete(over));
      return fill;
    } catch (err) {
      await letGo(claim, lease);
      throw err;
    }
  }

  async function letGo(claim: FillClaim, lease: Lease): Promise<void> {
    await claim.removeRecord();
    await lease.release();
  }

  /**
   * The lock's last holder may have committed the blob after this request missed the
   * store: then there is nothing to fetch, and a lease taken is given back. A failed
   * look gives it back too, and throws.
   */
  async function committedMeanwhile(claim: FillClaim, lease: Lease | undefined): Promise<boolean> {
    let stored = true;
    try {
      stored = (await store.blobs.stat(claim.digest)) !== undefined;
      return stored;
    } finally {
      if (stored && lease) await letGo(claim, lease);
    }
  }

  async function acquire(route: Route, digest: Digest): Promise<Source | undefined> {
    const { config } = upstreamFor(deps, route);
    const deadline = now() + config.timeouts.connectMs + config.timeouts.headersMs + 10_000;
    const claim = fillClaim(store, digest);
    for (;;) {
      const lease = await claim.tryLock().catch((err: unknown) => {
        health.failed(err, 'lock');
        return null;
      });
      // No lock without a writable store: fetch for this process alone, relayed.
      if (lease === null) return fetch(route, digest, undefined, 'store_unwritable');
      if (await committedMeanwhile(claim, lease)) return undefined;
      if (lease) return lead(route, digest, claim, lease);
      const record = await claim.findRecord();
      if (record?.spool) {
        // The spool pauses while its writer resumes a cut body: up to the longest back-off and a new request.
        const { connectMs, headersMs, bodyMs } = config.timeouts;
        const stallMs = bodyMs + 5_000 + (config.resume.maxResumes > 0 ? 8 * config.resume.backoffMs + connectMs + headersMs : 0);
        const options = { digest, sizeBytes: record.sizeBytes, store, stallMs, now, writerAlive: () => claim.writerAlive() };
        const remote = await RemoteFill.follow(options, record.spool);
        if (remote) return remote;
        continue;
      }
      if (now() > deadline) {
        throw new RegistryError('UNAVAILABLE', 'another process is fetching this blob and has not started', { statusCode: 503 });
      }
      await new Promise((resolve) => setTimeout(resolve, FOLLOW_POLL_MS));
    }
  }

  async function relay(route: Route, digest: Digest): Promise<Source> {
    const fill = await fetch(route, digest, undefined, 'unshared');
    void fill.done.then(
      () => fill.release(),
      () => fill.release(),
    );
    return fill;
  }

  return {
    acquire,
    relay,
    async idle() {
      await Promise.allSettled([...leading]);
    },
  };
}

/**
 * One digest's cross-process claim: the `fill-<hex>` lock and the record beside it that
 * says who leads and where the spool is. Records only speed up other processes, so
 * writing or removing one never fails a pull (a full disk must not cost the blob).
 */
interface FillClaim {
  readonly digest: Digest;
  tryLock(): Promise<Lease | undefined>;
  findRecord(): Promise<FillRecord | undefined>;
  writeRecord(record: FillRecord): Promise<void>;
  removeRecord(): Promise<void>;
  /** The leader still holds the lock and its record. */
  writerAlive(): Promise<boolean>;
}

function fillClaim(store: Store, digest: Digest): FillClaim {
  const lockName = lockNames.fill(digest);
  return {
    digest,
    tryLock: () => store.locks.tryLock(lockName),
    findRecord: () => store.fills.find(digest),
    writeRecord: (record) => store.fills.write(digest, record).catch(() => undefined),
    removeRecord: () => store.fills.remove(digest).catch(() => undefined),
    writerAlive: async () => (await store.fills.find(digest)) !== undefined && (await store.locks.isLocked(lockName)),
  };
}

function sized(sizeBytes: number | undefined): { sizeBytes?: number } {
  return sizeBytes === undefined ? {} : { sizeBytes };
}
