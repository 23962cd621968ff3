import { createUpstreamTable } from '../oci/upstream-table.js';
import type { Digest } from '../oci/digest.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { RegistryError } from '../oci/errors.js';
import { partDigest, storedManifests, walkImage } from '../oci/walk.js';
import type { MirrorDeps } from './context.js';

/**
 * Pinned images: the config's `store.pins` and what `warm --pin` added (pins.json). A pin
 * keeps its manifest, every child manifest and every blob, through every eviction and
 * sweep, until it is removed; a pin by tag also keeps its tag record, through which it
 * resolves.
 */
export async function pinnedRefs(deps: Pick<MirrorDeps, 'config' | 'records'>): Promise<ImageRef[]> {
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
  return [...deps.config.store.pins, ...warmed];
}

/** The tag records pins resolve through, as `tagKey` names them: the maintenance sweep never drops these. */
export async function pinnedTags(deps: Pick<MirrorDeps, 'config' | 'records'>): Promise<Set<string>> {
  const keys = new Set<string>();
  for (const pin of await pinnedRefs(deps)) {
    if (pin.reference.kind === 'tag') keys.add(tagKey(pin.upstream, pin.repository, pin.reference.tag));
  }
  return keys;
}

export function tagKey(upstream: string, repository: string, tag: string): string {
  return `${upstream}/${repository}:${tag}`;
}

/**
 * Everything pinned images need, as the store has it now: the manifest a pinned tag points
 * to (its tag record) or the pinned digest, and all the content it references.
 */
export async function pinnedDigests(deps: Pick<MirrorDeps, 'config' | 'records' | 'store'>): Promise<Set<Digest>> {
  const pinned = new Set<Digest>();
  for (const pin of await pinnedRefs(deps)) {
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
