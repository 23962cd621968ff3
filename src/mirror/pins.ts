import { createUpstreamTable } from '../oci/upstream-table.js';
import type { Digest } from '../oci/digest.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { referencedDigests } from '../oci/manifest.js';
import type { MirrorDeps } from './context.js';

/** An index → manifests → blobs: three levels; deeper nesting is not followed. */
const MAX_DEPTH = 3;

/**
 * Everything pinned images need (config `store.pins` and `warm --pin`), as the store has it now: the manifest a pinned tag
 * points to (its tag record) or the pinned digest, and all the content it references.
 */
export async function pinnedDigests(deps: Pick<MirrorDeps, 'config' | 'records' | 'store'>): Promise<Set<Digest>> {
  const pinned = new Set<Digest>();
  const table = createUpstreamTable(deps.config);
  const warmed: ImageRef[] = [];
  for (const text of await deps.records.readPins()) {
    try {
      warmed.push(parseImageRef(text, table));
    } catch {
      // An upstream since removed from the config: nothing of it can be served anyway.
    }
  }
  for (const pin of [...deps.config.store.pins, ...warmed]) {
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
