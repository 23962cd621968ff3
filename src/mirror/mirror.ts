import type { Digest } from '../oci/digest.js';
import type { Route } from '../oci/path.js';
import type { Reference } from '../oci/reference.js';
import type { RangeSpec } from '../oci/range.js';
import type { RequestKind } from '../metrics.js';
import { createBlobs, type BlobHead, type BlobOptions, type BlobResult } from './blobs.js';
import type { MirrorDeps } from './context.js';
import { createListCache, type ListResult } from './lists.js';
import { createManifests, type ManifestResult } from './manifests.js';

export type { BlobHead, BlobOptions, BlobResult } from './blobs.js';
export type { ManifestResult } from './manifests.js';
export type { MirrorDeps } from './context.js';

export type { ListResult as PassThroughResult } from './lists.js';

/** The policy that combines store and upstreams. Returns values; the HTTP layer speaks HTTP. */
export interface Mirror {
  getManifest(route: Route, reference: Reference, method: 'GET' | 'HEAD'): Promise<ManifestResult>;
  getBlob(route: Route, digest: Digest, range: RangeSpec | undefined, options?: BlobOptions): Promise<BlobResult>;
  headBlob(route: Route, digest: Digest): Promise<BlobHead>;
  /** tags/list and referrers, cached under the tag freshness policy (lists.ts). */
  passThrough(route: Route, kind: 'tags' | 'referrers', path: string, query: string | undefined): Promise<ListResult>;
  readonly fillsInFlight: number;
  drain(): Promise<void>;
}

export function createMirror(deps: MirrorDeps): Mirror {
  const blobs = createBlobs(deps);
  const manifests = createManifests(deps);
  const lists = createListCache(deps);

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
      return count(deps, kind, lists.get(route, kind, path, query));
    },
    get fillsInFlight() {
      return blobs.fillsInFlight;
    },
    drain: () => blobs.drain(),
  };
}

/** Cache outcomes are counted here, where they are decided, not in HTTP hooks that cannot tell a hit from a miss. */
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
