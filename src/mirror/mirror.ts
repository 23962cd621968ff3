import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Route } from '../oci/path.js';
import type { Reference } from '../oci/reference.js';
import type { RangeSpec } from '../oci/range.js';
import type { RequestKind } from '../metrics.js';
import { createBlobs, type BlobHead, type BlobOptions, type BlobResult } from './blobs.js';
import { offlineMiss, upstreamFor, type MirrorDeps } from './context.js';
import { createManifests, type ManifestResult } from './manifests.js';

export type { BlobHead, BlobOptions, BlobResult } from './blobs.js';
export type { ManifestResult } from './manifests.js';
export type { MirrorDeps } from './context.js';

export interface PassThroughResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Readable;
}

/** The policy that combines store and upstreams. Returns values; the HTTP layer speaks HTTP. */
export interface Mirror {
  getManifest(route: Route, reference: Reference, method: 'GET' | 'HEAD'): Promise<ManifestResult>;
  getBlob(route: Route, digest: Digest, range: RangeSpec | undefined, options?: BlobOptions): Promise<BlobResult>;
  headBlob(route: Route, digest: Digest): Promise<BlobHead>;
  /** tags/list and referrers go straight to the upstream (a cache would hide new tags). */
  passThrough(route: Route, kind: 'tags' | 'referrers', path: string, query: string | undefined): Promise<PassThroughResult>;
  readonly fillsInFlight: number;
  drain(): Promise<void>;
}

const PASS_HEADERS = ['content-type', 'content-length', 'link', 'docker-content-digest', 'oci-filters-applied'];

export function createMirror(deps: MirrorDeps): Mirror {
  const blobs = createBlobs(deps);
  const manifests = createManifests(deps);

  return {
    async getManifest(route, reference, method) {
      return count(deps, 'manifest', manifests.getManifest(route, reference, method));
    },
    async getBlob(route, digest, range, options) {
      return count(deps, 'blob', blobs.getBlob(route, digest, range, options));
    },
    async headBlob(route, digest) {
      return count(deps, 'blob', blobs.headBlob(route, digest));
    },
    async passThrough(route, kind, path, query) {
      const work = (async (): Promise<PassThroughResult & { outcome: 'miss' }> => {
        if (deps.config.offline) throw offlineMiss(deps, 'MANIFEST_UNKNOWN', `${kind} of ${route.repository}`);
        const { upstream } = upstreamFor(deps, route);
        const response = await upstream.request({
          method: 'GET',
          repository: route.repository,
          path,
          ...(query ? { query } : {}),
          notFound: kind === 'tags' ? 'NAME_UNKNOWN' : 'MANIFEST_UNKNOWN',
        });
        const headers: Record<string, string> = {};
        for (const name of PASS_HEADERS) {
          const value = response.headers[name];
          if (value !== undefined) headers[name] = value;
        }
        return { status: response.status, headers, body: response.body, outcome: 'miss' };
      })();
      return count(deps, kind, work);
    },
    get fillsInFlight() {
      return blobs.fillsInFlight;
    },
    drain: () => blobs.drain(),
  };
}

/** Cache outcomes are counted here, where they are decided (STYLE: not in HTTP hooks). */
async function count<T extends { readonly outcome: string }>(deps: MirrorDeps, kind: RequestKind, work: Promise<T>): Promise<T> {
  try {
    const result = await work;
    deps.metrics.requests.inc({ kind, outcome: result.outcome });
    return result;
  } catch (err) {
    deps.metrics.requests.inc({ kind, outcome: 'error' });
    throw err;
  }
}
