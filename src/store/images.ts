/**
 * Images as the store holds them, for eviction and stats. Every stored manifest (a blob
 * with a media-type sidecar, manifest-meta.ts) names what it references directly (oci
 * `references`: config and layers, or an index's child manifests); an image is a stored
 * manifest that no other stored manifest references, with everything it reaches. Content
 * no stored manifest reaches stands alone. Manifests are immutable: what each one
 * references is parsed once per process.
 */
import { readdir } from 'node:fs/promises';
import { digestFromHex, digestHex } from '../oci/digest.js';
import { findManifest, references } from '../oci/manifest.js';
import { ifMissing } from './fs-errors.js';
import type { Store } from './store.js';

/** Stored manifests (hex) and the hexes each references directly. */
export type ManifestGraph = ReadonlyMap<string, readonly string[]>;

export interface ManifestGraphReader {
  /** Reads the sidecars now on disk; parses only manifests it has not seen. */
  load(): Promise<ManifestGraph>;
}

export function createManifestGraphReader(store: Store): ManifestGraphReader {
  const parsed = new Map<string, readonly string[]>();
  return {
    async load() {
      const graph = new Map<string, readonly string[]>();
      for (const hex of await manifestHexes(store)) {
        let refs = parsed.get(hex);
        if (!refs) {
          const stored = await store.manifests.read(digestFromHex(hex));
          if (!stored) continue;
          const manifest = findManifest(stored.body, stored.mediaType);
          refs = manifest ? references(manifest).map((d) => digestHex(d.digest)) : [];
          parsed.set(hex, refs);
        }
        graph.set(hex, refs);
      }
      for (const hex of parsed.keys()) if (!graph.has(hex)) parsed.delete(hex);
      return graph;
    },
  };
}

async function manifestHexes(store: Store): Promise<string[]> {
  const entries = await readdir(store.layout.manifestsDir, { recursive: true, withFileTypes: true }).catch(ifMissing([]));
  const hexes: string[] = [];
  for (const entry of entries) {
    const hex = /^([0-9a-f]{64})\.json$/.exec(entry.name)?.[1];
    if (entry.isFile() && hex) hexes.push(hex);
  }
  return hexes;
}

/** What eviction takes or leaves as one: an image, or content no stored manifest reaches. */
export interface StoreUnit {
  readonly kind: 'image' | 'blob';
  /** The image's top manifest, or the blob itself. */
  readonly root: string;
  /** The root first, then depth first what it reaches (each manifest before what it references). */
  readonly members: readonly string[];
  /** An image's is its most recently served manifest's. */
  readonly lastUsedMs: number;
}

/**
 * The units of what is stored, least recently used first (ties keep the order given).
 * `entries` is every stored digest with its recency, least recent first.
 */
export function storeUnits(entries: Iterable<readonly [string, { readonly lastUsedMs: number }]>, graph: ManifestGraph): StoreUnit[] {
  const stored = new Map(entries);
  const referenced = new Set<string>();
  for (const [hex, refs] of graph) if (stored.has(hex)) for (const ref of refs) if (ref !== hex) referenced.add(ref);
  const reached = new Set<string>();
  const images = new Map<string, StoreUnit>();
  for (const [hex, entry] of stored) {
    if (!graph.has(hex) || referenced.has(hex)) continue;
    const members = reach(hex, graph, stored);
    let lastUsedMs = entry.lastUsedMs;
    for (const member of members) {
      reached.add(member);
      if (graph.has(member)) lastUsedMs = Math.max(lastUsedMs, stored.get(member)?.lastUsedMs ?? 0);
    }
    images.set(hex, { kind: 'image', root: hex, members, lastUsedMs });
  }
  const units: StoreUnit[] = [];
  for (const [hex, entry] of stored) {
    const image = images.get(hex);
    if (image) units.push(image);
    else if (!reached.has(hex)) units.push({ kind: 'blob', root: hex, members: [hex], lastUsedMs: entry.lastUsedMs });
  }
  return units.sort((a, b) => a.lastUsedMs - b.lastUsedMs);
}

/** The stored digests under `root`, root first, each once. */
function reach(root: string, graph: ManifestGraph, stored: ReadonlyMap<string, unknown>): string[] {
  const seen = new Set<string>([root]);
  const out: string[] = [];
  const visit = (hex: string): void => {
    out.push(hex);
    for (const ref of graph.get(hex) ?? []) {
      if (seen.has(ref) || !stored.has(ref)) continue;
      seen.add(ref);
      visit(ref);
    }
  };
  visit(root);
  return out;
}
