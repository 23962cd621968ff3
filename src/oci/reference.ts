import { RegistryError } from './errors.js';
import { isDigestLike, parseDigest, type Digest } from './digest.js';

// OCI distribution spec §"Pulling manifests": <name> and <reference> grammar.
const NAME_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Distribution's limit on a repository name, host part included. */
export const MAX_NAME_LENGTH = 255;

/** A manifest reference: a tag (mutable) or a digest (immutable). */
export type Reference = { readonly kind: 'tag'; readonly tag: string } | { readonly kind: 'digest'; readonly digest: Digest };

export function isValidName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  return name.split('/').every((part) => NAME_COMPONENT.test(part));
}

export function parseName(name: string): string {
  if (!isValidName(name)) {
    throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(name.slice(0, 300))}`);
  }
  return name;
}

export function parseReference(value: string): Reference {
  if (isDigestLike(value)) return { kind: 'digest', digest: parseDigest(value) };
  if (TAG.test(value)) return { kind: 'tag', tag: value };
  throw new RegistryError('MANIFEST_INVALID', `invalid tag ${JSON.stringify(value.slice(0, 200))}`, {
    statusCode: 400,
  });
}

export function formatReference(ref: Reference): string {
  return ref.kind === 'tag' ? ref.tag : ref.digest;
}
