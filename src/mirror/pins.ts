import { createUpstreamTable } from '../oci/upstream-table.js';
import type { Digest } from '../oci/digest.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { RegistryError } from '../oci/errors.js';
import { partDigest, storedManifests, walkImage } from '../oci/walk.js';
import type { MirrorDeps } from './context.js';

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
    } catch (err) {
      // A pin the config no longer routes (its upstream removed, its repository denied):
      // nothing of it can be served anyway.
      if (!(err instanceof RegistryError)) throw err;
    }
  }
  for (const pin of [...deps.config.store.pins, ...warmed]) {
    const root =
      pin.reference.kind === 'digest'
        ? pin.reference.digest
        : (await deps.records.findTag(pin.upstream, pin.repository, pin.reference.tag))?.digest;
    if (root) await collect(deps, root, pinned);
  }
  return pinned;
}

/** The root and everything it reaches in the store; what the store lacks is pinned by digest, should it arrive. */
async function collect(deps: Pick<MirrorDeps, 'store'>, root: Digest, into: Set<Digest>): Promise<void> {
  if (into.has(root)) return;
  into.add(root);
  const load = storedManifests((digest) => deps.store.manifests.read(digest));
  const top = await load({ digest: root });
  if (!top) return;
  for await (const part of walkImage(top, load)) into.add(partDigest(part));
}
