import type { Digest } from '../oci/digest.js';
import { referencedDigests } from '../oci/manifest.js';
import type { MirrorDeps } from './context.js';

/** An index → manifests → blobs: three levels; deeper nesting is not followed. */
const MAX_DEPTH = 3;

/**
 * Everything pinned images need, as the store has it now: the manifest a pinned tag
 * points to (its tag record) or the pinned digest, and all the content it references.
 */
export async function pinnedDigests(deps: Pick<MirrorDeps, 'config' | 'records' | 'store'>): Promise<Set<Digest>> {
  const pinned = new Set<Digest>();
  for (const pin of deps.config.store.pins) {
    const root =
      pin.reference.kind === 'digest'
        ? pin.reference.digest
        : (await deps.records.findTag(pin.upstream, pin.repository, pin.reference.tag))?.digest;
    if (root) await collect(deps, root, pinned, MAX_DEPTH);
  }
  return pinned;
}

async function collect(deps: Pick<MirrorDeps, 'store'>, digest: Digest, into: Set<Digest>, depth: number): Promise<void> {
  if (into.has(digest)) return;
  into.add(digest);
  if (depth === 0) return;
  const manifest = await deps.store.readManifest(digest);
  if (!manifest) return;
  for (const child of referencedDigests(manifest.body)) await collect(deps, child, into, depth - 1);
}
