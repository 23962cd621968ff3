import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Route } from '../oci/path.js';
import { resolveRange, type ByteRange, type RangeSpec } from '../oci/range.js';
import { closeBody, contentLength, ensureLinked, offlineMiss, upstreamFor, type MirrorDeps } from './context.js';
import { Fill, FillError } from './fill.js';
import type { FillSource } from './fill-reader.js';

export interface BlobResult {
  readonly digest: Digest;
  /** The whole blob's size; undefined only while a fill from a length-less upstream runs. */
  readonly sizeBytes: number | undefined;
  /** Set when a Range was served (206). */
  readonly range: ByteRange | undefined;
  readonly body: Readable;
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

const CACHE_READ_CHUNK = 1024 * 1024;

interface Flight {
  readonly origin: Route;
  readonly fill: Promise<Fill>;
}

export function createBlobs(deps: MirrorDeps): Blobs {
  const flights = new Map<Digest, Flight>();
  const { metrics, log } = deps;

  function countBytes(source: FillSource): (n: number) => void {
    return (n) => {
      metrics.bytesServed.inc({ source }, n);
      if (source === 'cache') metrics.bandwidthSaved.inc(n);
    };
  }

  async function fromStore(digest: Digest, spec: RangeSpec | undefined): Promise<Omit<BlobResult, 'outcome'> | undefined> {
    const blob = await deps.store.openBlob(digest);
    if (!blob) return undefined;
    let range: ByteRange | undefined;
    try {
      range = spec && resolveRange(spec, blob.sizeBytes);
    } catch (err) {
      await blob.handle.close();
      throw err;
    }
    if (blob.sizeBytes === 0) {
      // createReadStream would read one byte for end 0; an empty blob has none.
      await blob.handle.close();
      return { digest, sizeBytes: 0, range, body: Readable.from([]) };
    }
    const stream = createReadStream('', {
      fd: blob.handle,
      start: range?.start ?? 0,
      end: range?.end ?? blob.sizeBytes - 1,
      highWaterMark: CACHE_READ_CHUNK,
    });
    const count = countBytes('cache');
    stream.on('close', () => count(stream.bytesRead));
    return { digest, sizeBytes: blob.sizeBytes, range, body: stream };
  }

  function startFill(route: Route, digest: Digest): Flight {
    const { upstream } = upstreamFor(deps, route);
    const fill = (async () => {
      const response = await upstream.request({
        method: 'GET',
        repository: route.repository,
        path: `blobs/${digest}`,
        notFound: 'BLOB_UNKNOWN',
      });
      return Fill.begin(
        {
          digest,
          sizeBytes: contentLength(response.headers['content-length']),
          store: deps.store,
          onUpstreamBytes: (n) => metrics.upstreamBytes.inc({ upstream: route.upstream }, n),
        },
        response.body,
      );
    })();
    const flight: Flight = { origin: route, fill };
    flights.set(digest, flight);
    fill.then(
      (started) => watchFill(flight, started),
      () => flights.delete(digest),
    );
    return flight;
  }

  function watchFill(flight: Flight, fill: Fill): void {
    const fields = { digest: fill.digest, upstream: flight.origin.upstream, repository: flight.origin.repository };
    metrics.fillsInFlight.inc();
    log.info({ ...fields, sizeBytes: fill.sizeBytes }, 'fill started');
    const finish = (result: 'committed' | 'aborted', extra: object): void => {
      flights.delete(fill.digest);
      fill.release();
      metrics.fillsInFlight.dec();
      metrics.fills.inc({ result });
      const durationMs = Date.now() - fill.startedAtMs;
      const entry = { ...fields, sizeBytes: fill.writtenBytes, durationMs, waiters: fill.readerCount, ...extra };
      if (result === 'committed') log.info(entry, 'fill committed');
      else log.warn(entry, 'fill aborted');
    };
    fill.done.then(
      () => {
        finish('committed', {});
        void deps.records.putLink(flight.origin.upstream, flight.origin.repository, fill.digest).catch(() => undefined);
      },
      (err: unknown) => {
        const reason = err instanceof FillError ? err.reason : 'upstream';
        if (reason === 'digest' || reason === 'size') metrics.verifyFailures.inc({ kind: 'blob' });
        if (reason === 'write') metrics.cacheWriteFailures.inc();
        finish('aborted', { reason, err });
      },
    );
  }

  async function joinFlight(
    digest: Digest,
    spec: RangeSpec | undefined,
    flight: Flight,
    source: FillSource,
  ): Promise<Omit<BlobResult, 'outcome'> | undefined> {
    const fill = await flight.fill;
    if (fill.state === 'committed') return fromStore(digest, spec);
    if (fill.state === 'failed') throw unavailable(fill.error);
    const range = spec && fill.sizeBytes !== undefined ? resolveRange(spec, fill.sizeBytes) : undefined;
    const body = fill.openReader(range, source, countBytes(source));
    metrics.fillWaiters.inc();
    body.once('close', () => metrics.fillWaiters.dec());
    return { digest, sizeBytes: fill.sizeBytes, range, body };
  }

  async function getBlob(route: Route, digest: Digest, spec: RangeSpec | undefined): Promise<BlobResult> {
    const { upstream } = upstreamFor(deps, route);
    const known = (await deps.store.statBlob(digest)) !== undefined || flights.has(digest);
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
    if (deps.config.offline) throw offlineMiss('BLOB_UNKNOWN', `blob ${digest}`);
    const flight = flights.get(digest) ?? startFill(route, digest);
    const started = await joinFlight(digest, spec, flight, 'upstream');
    if (!started) throw new RegistryError('BLOB_UNKNOWN', `blob ${digest} vanished from the store`);
    return { ...started, outcome: 'miss' };
  }

  async function headBlob(route: Route, digest: Digest): Promise<BlobHead> {
    const { upstream } = upstreamFor(deps, route);
    const stored = await deps.store.statBlob(digest);
    const flight = flights.get(digest);
    if (stored !== undefined || flight) {
      if (upstream.hasCredentials) await ensureLinked(deps, route, digest, 'blobs');
      if (stored !== undefined) return { digest, sizeBytes: stored, outcome: 'hit' };
      const fill = await flight?.fill.catch(() => undefined);
      if (fill?.sizeBytes !== undefined) return { digest, sizeBytes: fill.sizeBytes, outcome: 'coalesced' };
    }
    if (deps.config.offline) throw offlineMiss('BLOB_UNKNOWN', `blob ${digest}`);
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
    if (upstream.hasCredentials) await deps.records.putLink(route.upstream, route.repository, digest);
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
        await Promise.allSettled([...flights.values()].map((f) => f.fill.then((fill) => fill.done)));
      }
    },
  };
}

function unavailable(cause: Error | undefined): RegistryError {
  return new RegistryError('UNAVAILABLE', `fetching the blob from upstream failed: ${cause?.message ?? 'unknown'}`, {
    cause,
  });
}
