import { RegistryError } from './errors.js';
import { parseDigest, type Digest } from './digest.js';
import { parseName, parseReference, type Reference } from './reference.js';

/**
 * The pull side of the distribution API, parsed from the raw (undecoded) request path.
 * Names contain `/`, so each form is matched from the end: the last `/manifests/`
 * wins, and a repository may itself have a `manifests` component.
 */
export type ApiPath =
  | { readonly kind: 'base' }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: Reference }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: Digest }
  | { readonly kind: 'tags'; readonly name: string }
  | { readonly kind: 'referrers'; readonly name: string; readonly digest: Digest }
  | { readonly kind: 'push' }
  | { readonly kind: 'catalog' };

const FORMS = {
  base: /^\/v2\/?$/,
  catalog: /^\/v2\/_catalog\/?$/,
  upload: /^\/v2\/(.+)\/blobs\/uploads(?:\/.*)?$/,
  manifest: /^\/v2\/(.+)\/manifests\/([^/]+)$/,
  blob: /^\/v2\/(.+)\/blobs\/([^/]+)$/,
  tags: /^\/v2\/(.+)\/tags\/list$/,
  referrers: /^\/v2\/(.+)\/referrers\/([^/]+)$/,
} as const;

/** `name` is the path's own name, prefix included; see `routeName` for what it means. */
export function parseApiPath(pathname: string): ApiPath {
  if (FORMS.base.test(pathname)) return { kind: 'base' };
  if (FORMS.catalog.test(pathname)) return { kind: 'catalog' };
  if (FORMS.upload.test(pathname)) return { kind: 'push' };
  let m = FORMS.manifest.exec(pathname);
  if (m) return { kind: 'manifest', name: m[1] as string, reference: parseReference(m[2] as string) };
  m = FORMS.blob.exec(pathname);
  if (m) return { kind: 'blob', name: m[1] as string, digest: parseDigest(m[2] as string) };
  m = FORMS.tags.exec(pathname);
  if (m) return { kind: 'tags', name: m[1] as string };
  m = FORMS.referrers.exec(pathname);
  if (m) return { kind: 'referrers', name: m[1] as string, digest: parseDigest(m[2] as string) };
  throw new RegistryError('NAME_UNKNOWN', 'not a registry API path', { statusCode: 404 });
}

/** What routing needs to know of the configured upstreams. */
export interface UpstreamTable {
  /** The upstream key for a registry host (`docker.io`, `index.docker.io`, `ghcr.io:443`…). */
  findUpstream(host: string): string | undefined;
  readonly defaultUpstream: string;
  /** Upstreams whose one-component names live under `library/` (Docker Hub). */
  usesLibrary(upstream: string): boolean;
  /** The upstream's repository allow/deny patterns; absent, every repository is mirrored. */
  allowsRepository?(upstream: string, repository: string): boolean;
}

export interface Route {
  readonly upstream: string;
  /** The repository as the upstream knows it (`library/alpine`), never carrying `ns`. */
  readonly repository: string;
}

/**
 * Picks the upstream for a request, in order: containerd's `?ns=<registry>` (an
 * allowlist key, never a dial target), a path prefix `/v2/<registry>/<name>/…` for
 * clients that cannot send `ns`, else the default upstream (Docker's
 * `registry-mirrors` sends Hub names with no registry at all).
 */
export function routeName(rawName: string, ns: string | undefined, table: UpstreamTable): Route {
  let upstream: string | undefined;
  let name = rawName;
  if (ns !== undefined && ns !== '') {
    upstream = table.findUpstream(ns.toLowerCase());
    if (upstream === undefined) {
      throw new RegistryError('NAME_UNKNOWN', `registry ${JSON.stringify(ns.slice(0, 255))} is not mirrored here`, {
        statusCode: 404,
      });
    }
  } else {
    const slash = name.indexOf('/');
    const first = slash > 0 ? name.slice(0, slash) : '';
    const prefixed = first ? table.findUpstream(first.toLowerCase()) : undefined;
    if (prefixed !== undefined && looksLikeHost(first)) {
      upstream = prefixed;
      name = name.slice(slash + 1);
    } else {
      upstream = table.defaultUpstream;
    }
  }
  parseName(name);
  if (table.usesLibrary(upstream) && !name.includes('/')) name = `library/${name}`;
  if (table.allowsRepository && !table.allowsRepository(upstream, name)) {
    // Refused before any cache or upstream lookup: a denied repository is not served from the store either.
    throw new RegistryError('DENIED', `repository ${name} is not mirrored from ${upstream} here`);
  }
  return { upstream, repository: name };
}

/** Registry hosts carry a dot, a port or are `localhost` (Docker's own rule for reference names). */
export function looksLikeHost(segment: string): boolean {
  return segment.includes('.') || segment.includes(':') || segment === 'localhost';
}
