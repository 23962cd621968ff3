import type { UpstreamCredentials } from '../config/types.js';
import { parseWwwAuthenticate } from './challenge.js';
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
 * Upstream auth as Docker Hub does it, lazily: nothing at start-up; a request goes out
 * with what is already known (a cached token for its scope, or Basic once the
 * upstream asked for Basic); a 401 is answered once from its challenge.
 */
export interface Authenticator {
  /** The Authorization to send first, if any. Never fetches. */
  authorizationFor(scope: string): string | undefined;
  /**
   * The Authorization to retry with after a 401 carrying `wwwAuthenticate`, or
   * undefined when the challenge cannot be answered (or `sent` was already refused).
   * May fetch a token; throws an UpstreamError when the token endpoint fails.
   */
  answer(wwwAuthenticate: string | undefined, scope: string, sent: string | undefined): Promise<string | undefined>;
}

type Known = { readonly scheme: 'bearer'; readonly realm: string; readonly service?: string | undefined } | { readonly scheme: 'basic' };

export function createAuthenticator(options: {
  readonly tokens: TokenCache;
  readonly credentials?: UpstreamCredentials | undefined;
}): Authenticator {
  const { tokens, credentials } = options;
  const basic = credentials && basicAuthorization(credentials);
  // The scheme the upstream last asked for: which realm its tokens come from.
  let known: Known | undefined;

  function authorizationFor(scope: string): string | undefined {
    if (known?.scheme === 'basic') return basic;
    if (known?.scheme !== 'bearer') return undefined;
    const token = tokens.findToken({ realm: known.realm, service: known.service, scope });
    return token === undefined ? undefined : `Bearer ${token}`;
  }

  async function answer(
    wwwAuthenticate: string | undefined,
    scope: string,
    sent: string | undefined,
  ): Promise<string | undefined> {
    const challenge = parseWwwAuthenticate(wwwAuthenticate ?? '');
    if (challenge?.scheme === 'basic') {
      if (basic === undefined || sent === basic) return undefined;
      known = { scheme: 'basic' };
      return basic;
    }
    const realm = challenge?.params.get('realm');
    if (realm === undefined) return undefined;
    const service = challenge?.params.get('service');
    known = { scheme: 'bearer', realm, service };
    const key: TokenKey = { realm, service, scope: challenge?.params.get('scope') ?? scope };
    // The token we sent was refused (expired early, revoked): fetch a new one.
    if (sent?.startsWith('Bearer ')) tokens.invalidate(key, sent.slice('Bearer '.length));
    return `Bearer ${await tokens.getToken(key)}`;
  }

  return { authorizationFor, answer };
}
