/**
 * A blob request, top to bottom: local → in flight → fetch → commit, as Distribution's
 * `registry/proxy/proxyblobstore.go` ServeBlob reads, but with one download per digest
 * shared by every request and every process on the store, streamed to each as it arrives.
 *
 *   1. local      the store holds the blob (complete and verified): serve the file.      hit
 *   2. in flight  this process has a flight for the digest: read its source.      coalesced
 *   3. fetch      start a flight: claim the digest across processes (fill-start.ts) and
 *                 lead the download, follow the spool of the process that leads it, or
 *                 find it committed meanwhile (then back to 1).                        miss
 *   4. commit     the source verifies and commits (fill.ts), or relays when the store
 *                 cannot take it; the flight ends and new requests start again at 1.
 *
 * A flight, the one per-digest state of this process:
 *
 *   claiming ──(source: lead, follow, or relay)──▶ streaming ──(source settles)──▶ ended
 *       │                                                                           ▲
 *       └──(committed meanwhile, or the claim failed)───────────────────────────────┘
 *
 * A request that finds a flight it cannot read from — a relay that already handed on
 * bytes it kept nowhere — fetches for itself alone, relayed and not stored (miss).
 * HEAD never starts a flight: on a miss it is an upstream HEAD, nothing is downloaded.
 */
import { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import { resolveRange, type ByteRange, type RangeSpec } from '../oci/range.js';
import { closeBody, contentLength } from '../upstream/body.js';
import { offlineMiss, upstreamFor, type MirrorDeps } from './context.js';
import { ensureLinked, rememberLink } from './links.js';
import { FillError } from './fill.js';
import { createFillStart } from './fill-start.js';
import type { FillSource } from './fill-reader.js';
import type { Source } from './source.js';
import { StoreReader } from './store-reader.js';

export interface BlobResult {
  readonly digest: Digest;
  /** The whole blob's size; undefined only while a fill from a length-less upstream runs. */
  readonly sizeBytes: number | undefined;
  /** Set when a Range was served (206). */
  readonly range: ByteRange | undefined;
  readonly body: Readable;
  /** Hands a chunk of `body` back for reuse once it has left the process (cache hits). */
  readonly recycle?: (chunk: Buffer) => void;
  /**
   * Counts body bytes as they reach the client (`served_bytes_total`, bandwidth saved):
   * the HTTP layer calls it as the socket takes them, so a broken transfer counts what
   * was sent, not what was read.
   */
  readonly served: (bytes: number) => void;
  /**
   * Set when the blob was handed off (`BlobOptions.handOff`): its file's path under the
   * store's blobs/sha256/ directory, for the front to send; `body` is empty, `range` unset.
   */
  readonly handedOff?: string;
  readonly outcome: 'hit' | 'miss' | 'coalesced';
}

export interface BlobHead {
  readonly digest: Digest;
  readonly sizeBytes: number;
  readonly outcome: 'hit' | 'miss' | 'coalesced';
}

export interface BlobOptions {
  /**
   * A blob the store holds is not read here: the answer names its file (`handedOff`) for
   * a front that sends files itself (nginx X-Accel-Redirect) and resolves Range from the
   * request it holds. Recency and hit metrics are recorded as for a read.
   */
  readonly handOff?: boolean;
}

export interface Blobs {
  getBlob(route: Route, digest: Digest, range: RangeSpec | undefined, options?: BlobOptions): Promise<BlobResult>;
  headBlob(route: Route, digest: Digest): Promise<BlobHead>;
  /** Fills in progress (tests assert none is left behind). */
  readonly fillsInFlight: number;
  /** Resolves when every fill in progress has settled. */
  drain(): Promise<void>;
}

/** One download of one digest in this process, from its start until its source settles. */
interface Flight {
  /** The route that started it: its repository is known to hold the digest upstream. */
  readonly origin: Route;
  /** Undefined: another process committed the blob meanwhile; serve it from the store. */
  readonly source: Promise<Source | undefined>;
}

type Served = Omit<BlobResult, 'outcome'>;
/** Serves a blob from the store: read here, or handed off to the front. */
type Local = (digest: Digest, spec: RangeSpec | undefined) => Promise<Served | undefined>;
/** Why a flight gave a request nothing: it ended without storing the blob, or cannot take a late reader. */
type Missed = 'ended' | 'unjoinable';

export function createBlobs(deps: MirrorDeps): Blobs {
  const flights = new Map<Digest, Flight>();
  const { metrics, log, store, index, health } = deps;
  const now = deps.now ?? Date.now;
  const start = createFillStart(deps);

  async function getBlob(route: Route, digest: Digest, spec: RangeSpec | undefined, options?: BlobOptions): Promise<BlobResult> {
    const { upstream } = upstreamFor(deps, route);
    if (upstream.hasCredentials) await confirmLinked(route, digest);
    // 1. Local.
    const local = options?.handOff ? handOff : fromStore;
    const hit = await local(digest, spec);
    if (hit) return { ...hit, outcome: 'hit' };
    // 2. In flight, or 3. fetch. Found or started with no await in between, so concurrent
    // misses share one flight; a flight that ended without storing the blob is replaced once.
    for (let attempt = 0; ; attempt++) {
      const found = flights.get(digest);
      if (!found && deps.config.offline) throw offlineMiss(deps, 'BLOB_UNKNOWN', `blob ${digest}`);
      const flight = found ?? startFlight(route, digest);
      const served = await join(flight, digest, spec, found ? 'cache' : 'upstream', local);
      if (typeof served === 'object') return { ...served, outcome: found ? 'coalesced' : 'miss' };
      if (served === 'unjoinable' || attempt > 0) break;
    }
    if (deps.config.offline) throw offlineMiss(deps, 'BLOB_UNKNOWN', `blob ${digest}`);
    const source = await start.relay(route, digest);
    return { ...readFrom(source, digest, spec, 'upstream'), outcome: 'miss' };
  }

  /**
   * An upstream with credentials may hold blobs some of its repositories cannot read: a
   * blob stored or in flight is served to another repository only once the upstream
   * confirmed that repository holds it. A fetch of our own is itself that check.
   */
  async function confirmLinked(route: Route, digest: Digest): Promise<void> {
    const flight = flights.get(digest);
    if (flight && flight.origin.upstream === route.upstream && flight.origin.repository === route.repository) return;
    if (flight || (await store.blobs.stat(digest)) !== undefined) await ensureLinked(deps, route, digest, 'blobs');
  }

  async function fromStore(digest: Digest, spec: RangeSpec | undefined): Promise<Served | undefined> {
    const blob = await store.blobs.open(digest);
    if (!blob) return undefined;
    let range: ByteRange | undefined;
    try {
      range = spec && resolveRange(spec, blob.sizeBytes);
    } catch (err) {
      await blob.handle.close();
      throw err;
    }
    index.touch(digest, blob.sizeBytes);
    if (blob.sizeBytes === 0) {
      // createReadStream would read one byte for end 0; an empty blob has none.
      await blob.handle.close();
      return { digest, sizeBytes: 0, range, body: Readable.from([]), served: countBytes('cache') };
    }
    const stream = new StoreReader(blob.handle, range?.start ?? 0, range?.end ?? blob.sizeBytes - 1);
    stream.on('close', index.use(digest));
    return {
      digest,
      sizeBytes: blob.sizeBytes,
      range,
      body: stream,
      recycle: (chunk) => stream.recycle(chunk),
      served: countBytes('cache'),
    };
  }

  /**
   * 1. Local, for a front that sends the file itself: nothing is opened or read here. The
   * Range stays the front's to answer (nginx resolves it from the request); it is resolved
   * here only to refuse what cannot be satisfied, as a read would, and to count the bytes.
   * A blob evicted between this answer and the front's open is a 404 from the front.
   */
  async function handOff(digest: Digest, spec: RangeSpec | undefined): Promise<Served | undefined> {
    const sizeBytes = await store.blobs.stat(digest);
    if (sizeBytes === undefined) return undefined;
    const range = spec && resolveRange(spec, sizeBytes);
    index.touch(digest, sizeBytes);
    // Counted as handed off: the front sends the bytes, the mirror never writes any.
    countBytes('cache')(range ? range.end - range.start + 1 : sizeBytes);
    const handedOff = store.layout.blobShardPath(digest);
    return { digest, sizeBytes, range: undefined, body: Readable.from([]), handedOff, served: () => undefined };
  }

  /** Reads from a flight as its source grows; the store once the source is done with. */
  async function join(
    flight: Flight,
    digest: Digest,
    spec: RangeSpec | undefined,
    from: FillSource,
    local: Local,
  ): Promise<Served | Missed> {
    const source = await flight.source;
    if (!source || source.complete) return (await local(digest, spec)) ?? 'ended';
    if (source.error) throw unavailable(source.error);
    if (!source.joinable) return 'unjoinable';
    return readFrom(source, digest, spec, from);
  }

  function readFrom(source: Source, digest: Digest, spec: RangeSpec | undefined, from: FillSource): Served {
    const range = spec && source.sizeBytes !== undefined ? resolveRange(spec, source.sizeBytes) : undefined;
    // Bytes are counted as they reach the client (`served`), not as the reader reads them.
    const body = source.openReader(range, from, () => undefined);
    metrics.fillWaiters.inc();
    body.once('close', () => metrics.fillWaiters.dec());
    return { digest, sizeBytes: source.sizeBytes, range, body, recycle: (chunk) => body.recycle(chunk), served: countBytes(from) };
  }

  function startFlight(route: Route, digest: Digest): Flight {
    const flight: Flight = { origin: route, source: start.acquire(route, digest) };
    flights.set(digest, flight);
    flight.source.then(
      (source) => (source ? watch(flight, source) : flights.delete(digest)),
      () => flights.delete(digest),
    );
    return flight;
  }

  /** 4. Commit: the flight ends when its source settles; what follows is bookkeeping. */
  function watch(flight: Flight, source: Source): void {
    const { digest, remote } = source;
    const fields = { digest, upstream: flight.origin.upstream, repository: flight.origin.repository, remote };
    metrics.fillsInFlight.inc();
    log.info({ ...fields, sizeBytes: source.sizeBytes }, remote ? 'fill followed' : 'fill started');
    const end = (result: 'committed' | 'relayed' | 'aborted', extra: object): void => {
      flights.delete(digest);
      source.release();
      metrics.fillsInFlight.dec();
      // A followed fill is counted by the process that leads it.
      if (!remote) metrics.fills.inc({ result });
      const entry = {
        ...fields,
        sizeBytes: source.writtenBytes,
        durationMs: now() - source.startedAtMs,
        waiters: source.readerCount,
        ...extra,
      };
      if (result === 'aborted') log.warn(entry, 'fill aborted');
      else log.info(entry, result === 'committed' ? 'fill committed' : 'fill relayed without caching');
    };
    source.done.then(
      (outcome) => {
        end(outcome, {});
        if (outcome === 'relayed') return;
        index.touch(digest, source.writtenBytes);
        if (!remote) {
          health.succeeded();
          void rememberLink(deps, flight.origin, digest);
        }
        if (index.overBudget()) void deps.maintain();
      },
      (err: unknown) => {
        const reason = err instanceof FillError ? err.reason : 'upstream';
        if (reason === 'digest' || reason === 'size') metrics.verifyFailures.inc({ kind: 'blob' });
        end('aborted', { reason, err });
      },
    );
  }

  function countBytes(from: FillSource): (n: number) => void {
    return (n) => {
      metrics.bytesServed.inc({ source: from }, n);
      if (from === 'cache') metrics.bandwidthSaved.inc(n);
    };
  }

  async function headBlob(route: Route, digest: Digest): Promise<BlobHead> {
    const { upstream } = upstreamFor(deps, route);
    const stored = await store.blobs.stat(digest);
    const flight = flights.get(digest);
    if (stored !== undefined || flight) {
      if (upstream.hasCredentials) await ensureLinked(deps, route, digest, 'blobs');
      if (stored !== undefined) {
        index.touch(digest, stored);
        return { digest, sizeBytes: stored, outcome: 'hit' };
      }
      // A flight that failed to start is answered like no flight: by the upstream below.
      const source = await flight?.source.catch(() => undefined);
      if (source?.sizeBytes !== undefined) return { digest, sizeBytes: source.sizeBytes, outcome: 'coalesced' };
    }
    if (deps.config.offline) throw offlineMiss(deps, 'BLOB_UNKNOWN', `blob ${digest}`);
    // HEAD never starts a fill: a client's HEAD is a question, and answering it with a download
    // would fetch every blob it merely checks for (OCI distribution spec, "Checking if content exists").
    const response = await upstream.request({
      method: 'HEAD',
      repository: route.repository,
      path: `blobs/${digest}`,
      notFound: 'BLOB_UNKNOWN',
    });
    closeBody(response.body);
    const sizeBytes = contentLength(response.headers['content-length']);
    if (sizeBytes === undefined) {
      throw new RegistryError('UNAVAILABLE', 'upstream HEAD gave no Content-Length', { statusCode: 502 });
    }
    if (upstream.hasCredentials) await rememberLink(deps, route, digest);
    return { digest, sizeBytes, outcome: 'miss' };
  }

  return {
    getBlob,
    headBlob,
    get fillsInFlight() {
      return flights.size;
    },
    async drain() {
      while (flights.size > 0) {
        await Promise.allSettled([...flights.values()].map((f) => f.source.then((source) => source?.done)));
      }
      await start.idle();
    },
  };
}

function unavailable(cause: Error | undefined): RegistryError {
  return new RegistryError('UNAVAILABLE', `fetching the blob from upstream failed: ${cause?.message ?? 'unknown'}`, {
    cause,
  });
}
