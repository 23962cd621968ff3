import { LRUCache } from 'lru-cache';
import { parseWwwAuthenticate } from './challenge.js';
import type { CredentialSource, Credentials } from './credentials.js';
import { basicAuthorization, type TokenCache, type TokenKey } from './token-cache.js';

export { parseWwwAuthenticate, type Challenge } from './challenge.js';
export {
  basicAuthorization,
  createTokenCache,
  isInTrustBoundary,
  type SendToken,
  type TokenCache,
  type TokenCacheOptions,
  type TokenKey,
} from './token-cache.js';

/**
 * Upstream auth as Docker Hub does it, lazily and per origin: nothing at start-up; a
 * request to an origin goes out with what that origin asked for before (a cached token
 * for the scope it challenged with, or Basic once the upstream's own origin asked for
 * Basic); a 401 is answered once from that origin's challenge. A token goes only to the
 * origin whose challenge it answers, so a redirect chain (registry.k8s.io → Artifact
 * Registry → storage) authenticates each hop for itself, and a signed storage URL that
 * never challenged gets no Authorization.
 */
export interface Authenticator {
  /** The Authorization to send first to `url`'s origin for `repository`, if any. Never fetches a token. */
  authorizationFor(url: URL, repository: string): Promise<string | undefined>;
  /**
   * The Authorization to resend with after `url` answered 401 with `wwwAuthenticate`, or
   * undefined when the challenge cannot be answered (or `sent` was already refused).
   * May fetch a token; throws an UpstreamError when the token endpoint fails.
   */
  answer(url: URL, repository: string, wwwAuthenticate: string | undefined, sent: string | undefined): Promise<string | undefined>;
}

type Known = { readonly scheme: 'bearer'; readonly realm: string; readonly service?: string | undefined } | { readonly scheme: 'basic' };

/** Origins a mirror talks to: its upstream, a few redirect targets that challenge. */
const MAX_ORIGINS = 256;
const MAX_SCOPES = 4096;

export function createAuthenticator(options: {
  readonly tokens: TokenCache;
  /** The upstream's own origin: the only one Basic credentials are sent to. */
  readonly origin: string;
  readonly credentials?: CredentialSource | undefined;
}): Authenticator {
  const { tokens, credentials, origin: ownOrigin } = options;
  // What each origin last asked for, and the challenge scope that answered for an
  // (origin, repository) (a redirect target may name it otherwise: registry.k8s.io's
  // `pause` is `k8s-artifacts-prod/images/pause` at Artifact Registry), or for the whole
  // origin when it is no repository scope (ECR Public's `scope="aws"`): the next request
  // carries its token without a 401.
  const known = new LRUCache<string, Known>({ max: MAX_ORIGINS });
  const scopes = new LRUCache<string, string>({ max: MAX_SCOPES });

  const scopeFor = (origin: string, repository: string): string =>
    scopes.get(`${origin} ${repository}`) ?? scopes.get(origin) ?? `repository:${repository}:pull`;

  async function authorizationFor(url: URL, repository: string): Promise<string | undefined> {
    const asked = known.get(url.origin);
    if (asked?.scheme === 'basic') return credentials && basicAuthorization(await credentials.get());
    if (asked?.scheme !== 'bearer') return undefined;
    const token = tokens.findToken({ realm: asked.realm, service: asked.service, scope: scopeFor(url.origin, repository) });
    return token === undefined ? undefined : `Bearer ${token}`;
  }

  async function answerBasic(origin: string, sent: string | undefined): Promise<string | undefined> {
    if (credentials === undefined || origin !== ownOrigin) return undefined;
    let current = await credentials.get();
    if (basicAuthorization(current) === sent) {
      // Refused: a rotated file or a re-run helper may have newer credentials; once.
      credentials.refused(current);
      current = await credentials.get();
      if (basicAuthorization(current) === sent) return undefined;
    }
    known.set(origin, { scheme: 'basic' });
    return basicAuthorization(current);
  }

  async function answer(
    url: URL,
    repository: string,
    wwwAuthenticate: string | undefined,
    sent: string | undefined,
  ): Promise<string | undefined> {
    const challenge = parseWwwAuthenticate(wwwAuthenticate ?? '');
    if (challenge?.scheme === 'basic') return answerBasic(url.origin, sent);
    const realm = challenge?.params.get('realm');
    if (realm === undefined) return undefined;
    const service = challenge?.params.get('service');
    known.set(url.origin, { scheme: 'bearer', realm, service });
    const scope = challenge?.params.get('scope') ?? `repository:${repository}:pull`;
    scopes.set(scope.startsWith('repository:') ? `${url.origin} ${repository}` : url.origin, scope);
    const key: TokenKey = { realm, service, scope };
    // The token we sent was refused (expired early, revoked): fetch a new one.
    if (sent?.startsWith('Bearer ')) tokens.invalidate(key, sent.slice('Bearer '.length));
    return `Bearer ${await tokens.getToken(key)}`;
  }

  return { authorizationFor, answer };
}

export type { CredentialSource, Credentials };
