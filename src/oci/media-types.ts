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
 * Parameters (`;q=0.5`) are dropped: registries do not rank manifest types.
 */
export function parseAccept(header: string | readonly string[] | undefined): string[] {
  if (header === undefined) return [];
  const lines = typeof header === 'string' ? [header] : header;
  const types: string[] = [];
  for (const line of lines) {
    for (const part of line.split(',')) {
      const type = part.split(';', 1)[0]?.trim().toLowerCase();
      if (type) types.push(type);
    }
  }
  return types;
}

/**
 * Whether a client that sent `accepted` can take a manifest of `mediaType`. No Accept,
 * a wildcard, or a list that names no manifest type at all (`curl -H 'Accept: a/b'`)
 * takes anything; a client that lists manifest types but not this one gets a clear
 * MANIFEST_UNKNOWN rather than bytes it cannot parse (we never convert manifests).
 */
export function acceptsManifest(accepted: readonly string[], mediaType: string): boolean {
  if (accepted.length === 0 || accepted.includes(mediaType)) return true;
  if (accepted.some((type) => type === '*/*' || type === 'application/*')) return true;
  return !accepted.some((type) => MANIFEST_ACCEPT.includes(type));
}
