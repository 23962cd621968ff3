/**
 * An image ages as one: serving a manifest (GET or HEAD, by tag or by digest) refreshes
 * the recency of everything it reaches in the store — an index's child manifests and
 * every config and layer — so a client that only resolves a tag (containerd's HEAD)
 * keeps the layers it already has, and the next new client still finds them.
 *
 * What a manifest reaches is walked once (oci/walk.ts over the stored manifests) and
 * remembered: content is immutable. Only a walk that met a child manifest the store did
 * not have yet is done again, at most every REWALK_MS.
 */
import type { Digest } from '../oci/digest.js';
import { partDigest, storedManifests, walkImage } from '../oci/walk.js';
import type { StoredManifest } from '../store/manifest-meta.js';
import type { MirrorDeps } from './context.js';

export interface ImageRecency {
  /** Marks `digest` and all it reaches as just served; `stored` spares reading the root again. */
  touch(digest: Digest, stored?: StoredManifest): Promise<void>;
}

interface Walk {
  readonly digests: readonly Digest[];
  /** Every child manifest was stored: nothing more can be learned by walking again. */
  readonly complete: boolean;
  readonly walkedAtMs: number;
}

const REWALK_MS = 60_000;
/** Walks remembered; the least recently served root is forgotten first. */
const MAX_WALKS = 4096;

export function createImageRecency(deps: Pick<MirrorDeps, 'store' | 'index' | 'now'>): ImageRecency {
  const now = deps.now ?? Date.now;
  const walks = new Map<Digest, Promise<Walk>>();
  const load = storedManifests((digest) => deps.store.manifests.read(digest));

  async function walk(digest: Digest, stored: StoredManifest | undefined): Promise<Walk> {
    const walkedAtMs = now();
    const top = await (stored ? storedManifests(() => Promise.resolve(stored)) : load)({ digest });
    // Not stored (yet): walked again once it is.
    if (!top) return { digests: [digest], complete: false, walkedAtMs };
    const digests: Digest[] = [];
    let complete = true;
    for await (const part of walkImage(top, load)) {
      digests.push(partDigest(part));
      if (part.kind === 'absent') complete = false;
    }
    return { digests, complete, walkedAtMs };
  }

  async function remembered(digest: Digest, stored: StoredManifest | undefined): Promise<Walk> {
    const known = walks.get(digest);
    // A walk that failed is not reused: losing its error here is intended, the caller of that walk had it.
    const done = known && (await known.catch(() => undefined));
    const reuse = known && done && (done.complete || now() - done.walkedAtMs < REWALK_MS);
    const result = reuse ? known : walk(digest, stored);
    walks.delete(digest);
    walks.set(digest, result);
    result.catch(() => {
      if (walks.get(digest) === result) walks.delete(digest);
    });
    while (walks.size > MAX_WALKS) walks.delete(walks.keys().next().value as Digest);
    return result;
  }

  return {
    async touch(digest, stored) {
      for (const part of (await remembered(digest, stored)).digests) deps.index.touch(part);
    },
  };
}
