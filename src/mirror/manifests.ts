import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf, findDigest, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { manifestMediaType } from '../oci/manifest.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import type { Route } from '../oci/path.js';
import type { Reference } from '../oci/reference.js';
import type { TagRecord } from '../store/records.js';
import type { StoredManifest } from '../store/manifest-meta.js';
import { isUpstreamFailure, type UpstreamResponse } from '../upstream/client.js';
import { closeBody, contentLength, readCapped } from '../upstream/body.js';
import { mayServeStale, offlineMiss, upstreamFor, type MirrorDeps } from './context.js';
import { ensureLinked } from './links.js';
import { createSingleFlight } from '../single-flight.js';
import { createImageRecency } from './image-recency.js';
import type { Outcome } from '../metrics.js';

/** Registries must accept manifests of at least 4 MiB (distribution spec); we cap there. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface ManifestResult {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly sizeBytes: number;
  /** The exact upstream bytes; absent for a HEAD answered without them. */
  readonly body: Buffer | undefined;
  readonly outcome: Exclude<Outcome, 'error'>;
}

export interface Manifests {
  getManifest(route: Route, reference: Reference, method: 'GET' | 'HEAD'): Promise<ManifestResult>;
}

/**
 * Manifests by policy of mutability: by digest they are immutable (local first, zero
 * upstream contact once stored); a tag record is fresh for `freshFor`, then revalidated
 * with a HEAD (free against Docker Hub's quota), fetched with GET only when its digest
 * is not stored, and served stale for up to `maxStale` when the upstream fails.
 */
export function createManifests(deps: MirrorDeps): Manifests {
  const flights = createSingleFlight<ManifestResult>();
  const now = deps.now ?? Date.now;
  const recency = createImageRecency(deps);

  /** An image ages as one (image-recency.ts); recency is a hint, so a store that fails to read it costs a log line. */
  async function servedImage(digest: Digest, stored?: StoredManifest): Promise<void> {
    await recency.touch(digest, stored).catch((err: unknown) => {
      deps.log.warn({ err, digest }, 'could not refresh the image recency');
    });
  }

  async function fetchManifest(route: Route, ref: string, expected: Digest | undefined): Promise<ManifestResult> {
    const { response, body } = await getWhole(route, ref);
    const actual = digestOf(body);
    const claimed = expected ?? findDigest(response.headers['docker-content-digest']);
    if (claimed !== undefined && claimed !== actual) {
      deps.metrics.verifyFailures.inc({ kind: 'manifest' });
      deps.log.warn({ upstream: route.upstream, repository: route.repository, ref, claimed, actual }, 'manifest digest mismatch');
      throw new RegistryError('UNAVAILABLE', `upstream sent a manifest whose digest is ${actual}, not ${claimed}`, {
        statusCode: 502,
      });
    }
    const digest = claimed ?? actual;
    const mediaType = manifestMediaType(body, contentType(response));
    await storing('manifest', async () => {
      await deps.store.manifests.put(digest, mediaType, body);
      deps.index.touch(digest, body.length);
      await deps.records.putLink(route.upstream, route.repository, digest);
    });
    return { digest, mediaType, sizeBytes: body.length, body, outcome: 'miss' };
  }

  /**
   * GETs a manifest; a body cut mid-way is asked for again whole (manifests are small),
   * within the upstream's resume policy, as a blob download would be resumed (resume.ts).
   */
  async function getWhole(route: Route, ref: string): Promise<{ response: UpstreamResponse; body: Buffer }> {
    const { upstream, config } = upstreamFor(deps, route);
    const { maxResumes, backoffMs, withinMs } = config.resume;
    const deadline = now() + withinMs;
    for (let attempt = 1; ; attempt++) {
      const response = await upstream.request({
        method: 'GET',
        repository: route.repository,
        path: `manifests/${ref}`,
        accept: MANIFEST_ACCEPT,
        notFound: 'MANIFEST_UNKNOWN',
      });
      try {
        return { response, body: await readCapped(response.body, MAX_MANIFEST_BYTES) };
      } catch (err) {
        const cut = isUpstreamFailure(err) && err.reason === 'unreachable';
        if (!cut || attempt > maxResumes || now() + backoffMs > deadline) throw err;
        deps.metrics.upstreamResumes.inc({ upstream: route.upstream, outcome: 'refetched' });
        deps.log.info({ upstream: route.upstream, repository: route.repository, ref, attempt, reason: err.message }, 'manifest refetched');
        await sleep(backoffMs);
      }
    }
  }

  async function fromStore(digest: Digest, outcome: ManifestResult['outcome']): Promise<ManifestResult | undefined> {
    const stored = await deps.store.manifests.read(digest);
    if (!stored) return undefined;
    // Manifests are small: verify on every read, so a damaged file is refetched, never served.
    if (digestOf(stored.body) !== digest) {
      deps.metrics.evictions.inc({ reason: 'damaged' });
      deps.index.forget(digest);
      await deps.store.blobs.remove(digest);
      return undefined;
    }
    deps.index.touch(digest, stored.body.length);
    await servedImage(digest, stored);
    return { digest, mediaType: stored.mediaType, sizeBytes: stored.body.length, body: stored.body, outcome };
  }

  async function byDigest(route: Route, digest: Digest, method: 'GET' | 'HEAD'): Promise<ManifestResult> {
    if ((await deps.store.manifests.findType(digest)) !== undefined) {
      await ensureLinked(deps, route, digest, 'manifests');
      const hit = await fromStore(digest, 'hit');
      if (hit) return hit;
    }
    if (deps.config.offline) throw offlineMiss(deps, 'MANIFEST_UNKNOWN', `manifest ${digest}`);
    if (method === 'HEAD') return headUpstream(route, digest);
    const { promise, joined } = flights.run(`get ${route.upstream} ${digest}`, () => fetchManifest(route, digest, digest));
    const result = await promise;
    return joined ? { ...result, outcome: 'coalesced' } : result;
  }

  async function headUpstream(route: Route, ref: string): Promise<ManifestResult> {
    const { upstream } = upstreamFor(deps, route);
    const response = await upstream.request({
      method: 'HEAD',
      repository: route.repository,
      path: `manifests/${ref}`,
      accept: MANIFEST_ACCEPT,
      notFound: 'MANIFEST_UNKNOWN',
    });
    closeBody(response.body);
    const digest = findDigest(response.headers['docker-content-digest']) ?? findDigest(ref);
    const sizeBytes = contentLength(response.headers['content-length']);
    const mediaType = contentType(response);
    if (!digest || sizeBytes === undefined || !mediaType) {
      throw new RegistryError('UNAVAILABLE', 'upstream HEAD lacked Docker-Content-Digest, Content-Length or Content-Type', {
        statusCode: 502,
      });
    }
    return { digest, mediaType, sizeBytes, body: undefined, outcome: 'miss' };
  }

  /** Asks the upstream what the tag is now; GETs the manifest only when that digest is not stored. */
  async function resolveTag(route: Route, tag: string, method: 'GET' | 'HEAD', known: TagRecord | undefined) {
    let result: ManifestResult;
    if (known) {
      const head = await headUpstream(route, tag);
      const stored = method === 'GET' ? await fromStore(head.digest, 'revalidated') : undefined;
      if (method === 'HEAD' && (await deps.store.manifests.findType(head.digest)) !== undefined) await servedImage(head.digest);
      result = stored ?? (method === 'GET' ? await fetchManifest(route, head.digest, head.digest) : head);
      if (method === 'HEAD' || stored) result = { ...result, outcome: 'revalidated' };
    } else {
      result = method === 'GET' ? await fetchManifest(route, tag, undefined) : await headUpstream(route, tag);
    }
    const record: TagRecord = { digest: result.digest, mediaType: result.mediaType, sizeBytes: result.sizeBytes, checkedAtMs: now() };
    await storing('tag record', () => deps.records.putTag(route.upstream, route.repository, tag, record));
    return result;
  }

  /** What a record points to, when the store still has it (never a 200 for evicted content). */
  async function fromRecord(record: TagRecord, method: 'GET' | 'HEAD', outcome: ManifestResult['outcome']) {
    if (method === 'HEAD') {
      if ((await deps.store.manifests.findType(record.digest)) === undefined) return undefined;
      await servedImage(record.digest);
      return { digest: record.digest, mediaType: record.mediaType, sizeBytes: record.sizeBytes, body: undefined, outcome };
    }
    return fromStore(record.digest, outcome);
  }

  /** A store that cannot be written costs the cache, never the pull. */
  async function storing(what: string, write: () => Promise<void>): Promise<void> {
    try {
      await write();
      deps.health.succeeded();
    } catch (err) {
      deps.health.failed(err, what);
    }
  }

  /** Whatever answered (hit, revalidated, stale, miss), the tag is in use: its record is kept (maintenance.ts). */
  async function byTag(route: Route, tag: string, method: 'GET' | 'HEAD'): Promise<ManifestResult> {
    const result = await resolveByTag(route, tag, method);
    await deps.records.tagServed(route.upstream, route.repository, tag).catch((err: unknown) => deps.health.failed(err, 'tag record'));
    return result;
  }

  async function resolveByTag(route: Route, tag: string, method: 'GET' | 'HEAD'): Promise<ManifestResult> {
    const { config } = upstreamFor(deps, route);
    const record = await deps.records.findTag(route.upstream, route.repository, tag);
    const ageMs = record ? now() - record.checkedAtMs : Number.POSITIVE_INFINITY;
    if (record && (ageMs < config.freshForMs || deps.config.offline)) {
      const served = await fromRecord(record, method, 'hit');
      if (served) return served;
      // Evicted (or damaged): the record goes, and the tag is resolved afresh below.
      await deps.records.removeTag(route.upstream, route.repository, tag).catch(() => undefined);
      if (deps.config.offline) throw offlineMiss(deps, 'MANIFEST_UNKNOWN', `${route.repository}:${tag}`);
      return lookupTag(route, tag, method, undefined, Number.POSITIVE_INFINITY);
    }
    return lookupTag(route, tag, method, record, ageMs);
  }

  async function lookupTag(
    route: Route,
    tag: string,
    method: 'GET' | 'HEAD',
    record: TagRecord | undefined,
    ageMs: number,
  ): Promise<ManifestResult> {
    const { config } = upstreamFor(deps, route);
    if (deps.config.offline) throw offlineMiss(deps, 'MANIFEST_UNKNOWN', `${route.repository}:${tag}`);
    const { promise, joined } = flights.run(`${method} ${route.upstream} ${route.repository}:${tag}`, () =>
      resolveTag(route, tag, method, record),
    );
    try {
      const result = await promise;
      return joined ? { ...result, outcome: 'coalesced' } : result;
    } catch (err) {
      if (!record || !mayServeStale(err) || ageMs >= config.freshForMs + config.maxStaleMs) throw err;
      const stale = await fromRecord(record, method, 'stale');
      if (!stale) throw err;
      deps.metrics.staleServed.inc({ upstream: route.upstream });
      deps.log.warn({ upstream: route.upstream, repository: route.repository, tag, ageMs, err }, 'served stale tag');
      return stale;
    }
  }

  return {
    getManifest(route, reference, method) {
      return reference.kind === 'digest' ? byDigest(route, reference.digest, method) : byTag(route, reference.tag, method);
    },
  };
}

function contentType(response: UpstreamResponse): string | undefined {
  const value = response.headers['content-type']?.split(';', 1)[0]?.trim();
  return value ? value : undefined;
}
