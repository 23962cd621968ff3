/**
 * `tags/list` (with `n`/`last` pages) and `referrers` under the tag freshness policy: an
 * answer is served from the store for `freshFor`, then asked again; when the upstream is
 * down, throttled or the mirror offline, the last answer is served stale for up to
 * `maxStale` (Renovate, Flux image automation, `crane ls` and `skopeo list-tags` keep
 * working at the sites the cache exists for). A 404 stays a 404, and forgets the answer.
 */
import { Readable } from 'node:stream';
import type { Outcome } from '../metrics.js';
import type { Route } from '../oci/path.js';
import { createLists, type ListKind, type ListRecord, type ListRequest } from '../store/lists.js';
import { readCapped } from '../upstream/body.js';
import { mayServeStale, offlineMiss, upstreamFor, type MirrorDeps } from './context.js';
import { createSingleFlight } from '../single-flight.js';

/** Far above any real tag list page; an upstream cannot make the mirror buffer more. */
const MAX_LIST_BYTES = 16 * 1024 * 1024;

const PASS_HEADERS = ['content-type', 'link', 'docker-content-digest', 'oci-filters-applied'];

export interface ListResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Readable;
  readonly outcome: Exclude<Outcome, 'error'>;
}

export interface ListCache {
  get(route: Route, kind: ListKind, path: string, query: string | undefined): Promise<ListResult>;
}

export function createListCache(deps: MirrorDeps): ListCache {
  const lists = createLists(deps.store);
  const flights = createSingleFlight<ListRecord>();
  const now = deps.now ?? Date.now;

  async function fetchList(route: Route, req: ListRequest): Promise<ListRecord> {
    const { upstream } = upstreamFor(deps, route);
    const response = await upstream.request({
      method: 'GET',
      repository: route.repository,
      path: req.path,
      ...(req.query ? { query: req.query } : {}),
      notFound: req.kind === 'tags' ? 'NAME_UNKNOWN' : 'MANIFEST_UNKNOWN',
    });
    const body = await readCapped(response.body, MAX_LIST_BYTES);
    const headers: Record<string, string> = {};
    for (const name of PASS_HEADERS) {
      const value = response.headers[name];
      if (value !== undefined) headers[name] = value;
    }
    const record: ListRecord = { headers, body, checkedAtMs: now() };
    // A store that cannot be written costs the cache, never the answer.
    await lists.put(req, record).then(
      () => deps.health.succeeded(),
      (err: unknown) => deps.health.failed(err, `${req.kind} list`),
    );
    return record;
  }

  async function ask(route: Route, req: ListRequest, cached: ListRecord | undefined, ageMs: number): Promise<ListResult> {
    const { config } = upstreamFor(deps, route);
    const { promise, joined } = flights.run(`${route.upstream} ${route.repository} ${req.path}?${req.query ?? ''}`, () =>
      fetchList(route, req),
    );
    try {
      const record = await promise;
      return resultOf(record, joined ? 'coalesced' : cached ? 'revalidated' : 'miss');
    } catch (err) {
      if (!mayServeStale(err)) await lists.remove(req);
      if (!cached || !mayServeStale(err) || ageMs >= config.freshForMs + config.maxStaleMs) throw err;
      deps.metrics.staleServed.inc({ upstream: route.upstream });
      deps.log.warn({ upstream: route.upstream, repository: route.repository, kind: req.kind, ageMs, err }, 'served stale list');
      return resultOf(cached, 'stale');
    }
  }

  return {
    async get(route, kind, path, query) {
      const { config } = upstreamFor(deps, route);
      const req: ListRequest = { upstream: route.upstream, repository: route.repository, kind, path, query };
      const cached = await lists.find(req);
      const ageMs = cached ? now() - cached.checkedAtMs : Number.POSITIVE_INFINITY;
      if (deps.config.offline) {
        if (cached) return resultOf(cached, 'hit');
        throw offlineMiss(deps, 'MANIFEST_UNKNOWN', `${kind} of ${route.repository}`);
      }
      if (cached && ageMs < config.freshForMs) return resultOf(cached, 'hit');
      return ask(route, req, cached, ageMs);
    },
  };
}

function resultOf(record: ListRecord, outcome: ListResult['outcome']): ListResult {
  const headers = { ...record.headers, 'content-length': String(record.body.length) };
  return { status: 200, headers, body: Readable.from([record.body]), outcome };
}
