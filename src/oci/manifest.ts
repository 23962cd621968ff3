import { findDigest, type Digest } from './digest.js';

/**
 * The digests a manifest points at (OCI image spec: `config`, `layers`, and an index's
 * `manifests`; Docker schema 2 has the same fields). `subject` is left out: a referrer
 * does not keep the image it refers to. Unparseable bodies reference nothing.
 */
export function referencedDigests(body: Buffer): Digest[] {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return [];
  }
  if (typeof doc !== 'object' || doc === null) return [];
  const { config, layers, manifests } = doc as { config?: unknown; layers?: unknown; manifests?: unknown };
  const descriptors = [config, ...(Array.isArray(layers) ? layers : []), ...(Array.isArray(manifests) ? manifests : [])];
  const digests: Digest[] = [];
  for (const descriptor of descriptors) {
    const digest = findDigest((descriptor as { digest?: unknown } | undefined)?.digest as string | undefined);
    if (digest) digests.push(digest);
  }
  return digests;
}

