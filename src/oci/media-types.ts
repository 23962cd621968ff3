/** Media types of manifests we store and serve; the Accept list we send upstream. */
export const MEDIA_TYPES = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

/**
 * Every manifest type, list/index types included, so an upstream never down-converts
 * (Distribution 2.8 turns a list into schema1 when no list type is accepted). We key
 * manifests by digest, never by Accept, so one full list serves every client.
 */
export const MANIFEST_ACCEPT: readonly string[] = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerSchema1Signed,
  MEDIA_TYPES.dockerSchema1,
];

/**
 * Parses Accept as a list. Docker and containers/image send one header line per type,
 * which Node joins with ", "; containerd sends one comma-joined line ending in `*\/*`.
 * Registries do not rank manifest types, so weights are dropped, except `q=0`, which
 * means "not acceptable" (RFC 9110 §12.4.2): those types are left out here and listed
 * by `parseRefused`.
 */
export function parseAccept(header: string | readonly string[] | undefined): string[] {
  return acceptEntries(header)
    .filter((entry) => !entry.refused)
    .map((entry) => entry.type);
}

/** The types an Accept header marks `q=0`: never to be served to that client. */
export function parseRefused(header: string | readonly string[] | undefined): string[] {
  return acceptEntries(header)
    .filter((entry) => entry.refused)
    .map((entry) => entry.type);
}

function acceptEntries(header: string | readonly string[] | undefined): { type: string; refused: boolean }[] {
  if (header === undefined) return [];
  const lines = typeof header === 'string' ? [header] : header;
  const entries: { type: string; refused: boolean }[] = [];
  for (const line of lines) {
    for (const part of line.split(',')) {
      const [first = '', ...params] = part.split(';');
      const type = first.trim().toLowerCase();
      const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('q='));
      if (type) entries.push({ type, refused: q !== undefined && Number(q.slice(2)) === 0 });
    }
  }
  return entries;
}

/**
 * Whether a client that sent `accepted` can take a manifest of `mediaType`. No Accept,
 * a wildcard, or a list that names no manifest type at all (`curl -H 'Accept: a/b'`)
 * takes anything; a client that lists manifest types but not this one gets a clear
 * MANIFEST_UNKNOWN rather than bytes it cannot parse (we never convert manifests).
 * A type the client `refused` (`q=0`) is never taken, nor anything it did not name
 * once it refused a wildcard.
 */
export function acceptsManifest(accepted: readonly string[], mediaType: string, refused: readonly string[] = []): boolean {
  if (refused.includes(mediaType)) return false;
  if (accepted.includes(mediaType)) return true;
  if (refused.some((type) => type === '*/*' || type === 'application/*')) return false;
  if (accepted.length === 0) return true;
  if (accepted.some((type) => type === '*/*' || type === 'application/*')) return true;
  return !accepted.some((type) => MANIFEST_ACCEPT.includes(type));
}
