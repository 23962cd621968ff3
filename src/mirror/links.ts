/**
 * Which digests an upstream with credentials confirmed for which repository: the store
 * is shared by every repository, so a private blob fetched for one is served to another
 * only once the upstream confirms that repository may see it.
 */
import type { Digest } from '../oci/digest.js';
import type { Route } from '../oci/path.js';
import { closeBody } from '../upstream/body.js';
import { upstreamFor, type MirrorDeps } from './context.js';

/**
 * Confirms, for an upstream with credentials, that `repository` may see `digest`: the
 * store is shared by every repository, and a private blob fetched for one must not be
 * served to another that the upstream would refuse.
 */
export async function ensureLinked(deps: MirrorDeps, route: Route, digest: Digest, kind: 'manifests' | 'blobs'): Promise<void> {
  const { upstream } = upstreamFor(deps, route);
  if (!upstream.hasCredentials || deps.config.offline) return;
  if (await deps.records.hasLink(route.upstream, route.repository, digest)) return;
  const response = await upstream.request({
    method: 'HEAD',
    repository: route.repository,
    path: `${kind}/${digest}`,
    notFound: kind === 'blobs' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN',
  });
  closeBody(response.body);
  await rememberLink(deps, route, digest);
}

/** Records that the upstream confirmed `digest` for the repository; a full disk only costs the record. */
export async function rememberLink(deps: MirrorDeps, route: Route, digest: Digest): Promise<void> {
  await deps.records.putLink(route.upstream, route.repository, digest).catch((err: unknown) => deps.health.failed(err, 'link'));
}
