import { createHash } from 'node:crypto';
import { RegistryError } from './errors.js';

declare const digestBrand: unique symbol;
/** A validated `sha256:<64 lowercase hex>` digest. Only `parseDigest` makes one. */
export type Digest = string & { readonly [digestBrand]: true };

// OCI image spec §"Digests": algorithm ":" encoded. We verify sha256 only; a digest of
// another registered algorithm is well-formed but unsupported here.
const SHA256 = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function isDigestLike(value: string): boolean {
  return value.includes(':');
}

export function parseDigest(value: string): Digest {
  if (SHA256.test(value)) return value as Digest;
  if (ANY_DIGEST.test(value) && !value.startsWith('sha256:')) {
    throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm in ${JSON.stringify(value)}`, {
      statusCode: 400,
    });
  }
  throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(value.slice(0, 100))}`);
}

export function findDigest(value: string | undefined): Digest | undefined {
  return value !== undefined && SHA256.test(value) ? parseDigest(value) : undefined;
}

/** Hashes content as it streams past; `digest()` once, after the last `update`. */
export interface Digester {
  update(chunk: Uint8Array): void;
  digest(): Digest;
}

export function createDigester(): Digester {
  const hash = createHash('sha256');
  return {
    update: (chunk) => void hash.update(chunk),
    digest: () => digestFromHex(hash.digest('hex')),
  };
}

/** The digest of bytes held whole (manifests, small files). */
export function digestOf(body: Uint8Array): Digest {
  const digester = createDigester();
  digester.update(body);
  return digester.digest();
}

/** The 64 hex characters after `sha256:`. */
export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

export function digestFromHex(hex: string): Digest {
  return parseDigest(`sha256:${hex}`);
}
