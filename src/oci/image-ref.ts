import { RegistryError } from './errors.js';
import { looksLikeHost, routeName, type Route, type UpstreamTable } from './path.js';
import { parseReference, type Reference } from './reference.js';

/** An image as users write it: `[registry/]name[:tag][@digest]`, routed to an upstream. */
export interface ImageRef extends Route {
  readonly reference: Reference;
}

/**
 * Parses an image reference the way Docker does: a first component with a dot, a port
 * or `localhost` names the registry, anything else is on the default upstream
 * (`alpine:3.20` is `docker.io/library/alpine:3.20`). A digest wins over a tag; neither
 * means `latest`. The registry must be one of ours: pins and warm lists never dial a
 * host the config does not name.
 */
export function parseImageRef(text: string, table: UpstreamTable): ImageRef {
  const at = text.indexOf('@');
  const beforeDigest = at >= 0 ? text.slice(0, at) : text;
  const colon = beforeDigest.lastIndexOf(':');
  const hasTag = colon > beforeDigest.lastIndexOf('/');
  const name = hasTag ? beforeDigest.slice(0, colon) : beforeDigest;
  const ref = at >= 0 ? text.slice(at + 1) : hasTag ? beforeDigest.slice(colon + 1) : 'latest';
  const slash = name.indexOf('/');
  const first = slash > 0 ? name.slice(0, slash) : '';
  if (looksLikeHost(first) && table.findUpstream(first.toLowerCase()) === undefined) {
    throw new RegistryError('NAME_UNKNOWN', `registry ${first} is not one of the configured upstreams`, { statusCode: 404 });
  }
  return { ...routeName(name, undefined, table), reference: parseReference(ref) };
}
