import { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import { resolveRange, type ByteRange, type RangeSpec } from '../oci/range.js';
import { closeBody, contentLength, ensureLinked, offlineMiss, rememberLink, upstreamFor, type MirrorDeps } from './context.js';
import { Fill, FillError } from './fill.js';
import { createFillStart, type Source } from './fill-start.js';
import { RemoteFill } from './remote-fill.js';
import { StoreReader } from './store-reader.js';
import type { FillSource } from './fill-reader.js';

export interface BlobResult {
  readonly digest: Digest;
  /** The whole blob's size; undefined only while a fill from a length-less upstream runs. */
  readonly sizeBytes: number | undefined;
  /** Set when a Range was served (206). */
  readonly range: ByteRange | undefined;
  readonly body: Readable;
  /** Hands a chunk of `body` back for reuse once it has left the process (cache hits). */
  readonly recycle?: (chunk: Buffer) => void;
  readonly outcome: 'hit' | 'miss' | 'coalesced';
}

export interface BlobHead {
  readonly digest: Digest;
  readonly sizeBytes: number;
  readonly outcome: 'hit' | 'miss' | 'coalesced';
}

export interface Blobs {
  getBlob(route: Route, digest: Digest, range: RangeSpec | undefined): Promise<BlobResult>;
  headBlob(route: Route, digest: Digest): Promise<BlobHead>;
  /** Fills in progress (tests assert none is left behind). */
  readonly fillsInFlight: number;
  /** Resolves when every fill in progress has settled. */
  drain(): Promise<void>;
}

/** Free space kept beyond a blob's size before it is spooled. */

interface Flight {
  readonly origin: Route;
  /** Undefined: another process committed the blob meanwhile; serve it from the store. */
  readonly fill: Promise<Source | undefined>;
}

export function createBlobs(deps: MirrorDeps): Blobs {
  const flights = new Map<Digest, Flight>();
  const { metrics, log, store, index, health } = deps;
  const start = createFillStart(deps);
  const { acquire, begin } = start;

  function countBytes(source: FillSource): (n: number) => void {
    return (n) => {
      metrics.bytesServed.inc({ source }, n);
      if (source === 'cache') metrics.bandwidthSaved.inc(n);
    };
  }

  async function fromStore(digest: Digest, spec: RangeSpec | undefined): Promise<Omit<BlobResult, 'outcome'> | undefined> {
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
      return { digest, sizeBytes: 0, range, body: Readable.from([]) };
    }
    const stream = new StoreReader(blob.handle, range?.start ?? 0, range?.end ?? blob.sizeBytes - 1);
    const count = countBytes('cache');
    const release = index.use(digest);
    stream.on('close', () => {
      release();
      count(stream.bytesRead);
    });
    return { digest, sizeBytes: blob.sizeBytes, range, body: stream, recycle: (chunk) => stream.recycle(chunk) };
  }

  function startFill(route: Route, digest: Digest): Flight {
    const fill = acquire(route, digest);
    const flight: Flight = { origin: route, fill };
    flights.set(digest, flight);
    fill.then(
      (source) => (source ? watchFill(flight, source) : flights.delete(digest)),
      () => flights.delete(digest),
    );
    return flight;
  }

  function watchFill(flight: Flight, fill: Source): void {
    const fields = { digest: fill.digest, upstream: flight.origin.upstream, repository: flight.origin.repository };
    const remote = fill instanceof RemoteFill;
    metrics.fillsInFlight.inc();
    log.info({ ...fields, sizeBytes: fill.sizeBytes, remote }, remote ? 'fill followed' : 'fill started');
    const finish = (result: 'committed' | 'relayed' | 'aborted', extra: object): void => {
      flights.delete(fill.digest);
      if (fill instanceof Fill) fill.release();
      metrics.fillsInFlight.dec();
      if (!remote) metrics.fills.inc({ result });
      const durationMs = Date.now() - fill.startedAtMs;
      const entry = { ...fields, sizeBytes: fill.writtenBytes, durationMs, waiters: fill.readerCount, remote, ...extra };
      if (result === 'aborted') log.warn(entry, 'fill aborted');
      else log.info(entry, result === 'committed' ? 'fill committed' : 'fill relayed without caching');
    };
    fill.done.then(
      (outcome) => {
        const result = outcome === 'relayed' ? 'relayed' : 'committed';
        finish(result, {});
        if (result === 'relayed') return;
        index.touch(fill.digest, fill.writtenBytes);
        if (!remote) {
          health.succeeded();
          void rememberLink(deps, flight.origin, fill.digest);
        }
        if (index.overBudget()) void deps.maintain();
      },
      (err: unknown) => {
        const reason = err instanceof FillError ? err.reason : 'upstream';
        if (reason === 'digest' || reason === 'size') metrics.verifyFailures.inc({ kind: 'blob' });
        finish('aborted', { reason, err });
      },
    );
  }

  /** Joins a flight; undefined when its blob is (now) best served from the store or not joinable. */
  async function joinFlight(
    digest: Digest,
    spec: RangeSpec | undefined,
    flight: Flight,
    source: FillSource,
  ): Promise<Omit<BlobResult, 'outcome'> | undefined> {
    const fill = await flight.fill;
    if (!fill || fill.complete) return fromStore(digest, spec);
    if (fill.error) throw unavailable(fill.error);
    if (fill instanceof Fill && !fill.joinable) return undefined;
    return readFrom(fill, digest, spec, source);
  }

  function readFrom(fill: Source, digest: Digest, spec: RangeSpec | undefined, source: FillSource): Omit<BlobResult, 'outcome'> {
    const range = spec && fill.sizeBytes !== undefined ? resolveRange(spec, fill.sizeBytes) : undefined;
    const body = fill.openReader(range, source, countBytes(source));
    metrics.fillWaiters.inc();
    body.once('close', () => metrics.fillWaiters.dec());
    return { digest, sizeBytes: fill.sizeBytes, range, body };
  }

  /** A second fetch that only streams through: the flight for this digest cannot take joiners. */
  async function relayAlone(route: Route, digest: Digest, spec: RangeSpec | undefined): Promise<Omit<BlobResult, 'outcome'>> {
    const fill = await begin(route, digest, false);
    const result = readFrom(fill, digest, spec, 'upstream');
    void fill.done.then(() => fill.release(), () => fill.release());
    return result;
  }

  async function getBlob(route: Route, digest: Digest, spec: RangeSpec | undefined): Promise<BlobResult> {
    const { upstream } = upstreamFor(deps, route);
    const known = (await deps.store.blobs.stat(digest)) !== undefined || flights.has(digest);
    if (known) {
      const flight = flights.get(digest);
      const sameOrigin = flight && flight.origin.upstream === route.upstream && flight.origin.repository === route.repository;
      if (upstream.hasCredentials && !sameOrigin) await ensureLinked(deps, route, digest, 'blobs');
    }
    const hit = await fromStore(digest, spec);
    if (hit) return { ...hit, outcome: 'hit' };
    const existing = flights.get(digest);
    if (existing) {
      const joined = await joinFlight(digest, spec, existing, 'cache');
      if (joined) return { ...joined, outcome: 'coalesced' };
    }
    if (deps.config.offline) throw offlineMiss(deps, 'BLOB_UNKNOWN', `blob ${digest}`);
    const current = flights.get(digest);
    if (current && current === existing) return { ...(await relayAlone(route, digest, spec)), outcome: 'miss' };
    const flight = current ?? startFill(route, digest);
    const started = await joinFlight(digest, spec, flight, 'upstream');
    if (started) return { ...started, outcome: flight === current ? 'coalesced' : 'miss' };
    return { ...(await relayAlone(route, digest, spec)), outcome: 'miss' };
  }

  async function headBlob(route: Route, digest: Digest): Promise<BlobHead> {
    const { upstream } = upstreamFor(deps, route);
    const stored = await deps.store.blobs.stat(digest);
    const flight = flights.get(digest);
    if (stored !== undefined || flight) {
      if (upstream.hasCredentials) await ensureLinked(deps, route, digest, 'blobs');
      if (stored !== undefined) {
        index.touch(digest, stored);
        return { digest, sizeBytes: stored, outcome: 'hit' };
      }
      const fill = await flight?.fill.catch(() => undefined);
      if (fill?.sizeBytes !== undefined) return { digest, sizeBytes: fill.sizeBytes, outcome: 'coalesced' };
    }
    if (deps.config.offline) throw offlineMiss(deps, 'BLOB_UNKNOWN', `blob ${digest}`);
    // HEAD never starts a fill (LESSONS §16): ask the upstream, download nothing.
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
        await Promise.allSettled([...flights.values()].map((f) => f.fill.then((fill) => fill?.done)));
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
