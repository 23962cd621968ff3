/**
 * The endpoints of one upstream: `url`, then each of `urls`, tried in that order. Each
 * has its own token cache and breaker; the breaker is reported per URL
 * (`oci_mirror_upstream_endpoint_down`) and as the upstream's down gauge, 1 when every
 * endpoint is down, and closes by itself through a background `GET /v2/`.
 */
import type { UpstreamConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { createAuthenticator, createTokenCache, type Authenticator } from './auth.js';
import type { CredentialSource } from './credentials.js';
import { discard } from './body.js';
import { createBreaker, type Breaker, type Reachability } from './breaker.js';
import { isUpstreamFailure } from './failure.js';
import type { Transport } from './transport.js';

export interface Endpoint {
  readonly base: URL;
  readonly breaker: Breaker;
  readonly auth: Authenticator;
}

export interface EndpointDeps {
  readonly transport: Transport;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => number;
  /** The upstream's credentials, shared by its endpoints (a helper runs once for all). */
  readonly credentials: CredentialSource | undefined;
}

export function createEndpoints(config: UpstreamConfig, deps: EndpointDeps): readonly Endpoint[] {
  const { transport, log, now } = deps;
  const { connectMs, headersMs, bodyMs } = config.timeouts;
  const endpoints: Endpoint[] = [];
  for (const url of [config.url, ...config.urls]) {
    const base = new URL(url);
    const tokens = createTokenCache({
      upstreamUrl: base,
      credentials: deps.credentials,
      trustedRealms: config.credentials?.realms,
      send: (tokenUrl, headers, signal) => transport.send('GET', tokenUrl, headers, signal, 'TOKEN'),
      deadlineMs: connectMs + headersMs + bodyMs,
      now,
      log,
    });
    const auth = createAuthenticator({ tokens, origin: base.origin, credentials: deps.credentials });
    const probe = () => probeEndpoint(transport, base, connectMs + headersMs);
    endpoints.push({ base, auth, breaker: breakerFor(config, base, endpoints, { ...deps, probe }) });
  }
  return endpoints;
}

/** What a failed request showed of the endpoint: connection-level failures count, answers do not. */
export function reachabilityOf(err: unknown, signal: AbortSignal | undefined): Reachability {
  if (signal?.aborted) return 'aborted';
  if (!isUpstreamFailure(err)) return 'reachable';
  return err.reason === 'unreachable' || err.reason === 'tls' || err.reason === 'down' ? 'unreachable' : 'reachable';
}

/**
 * One endpoint's breaker, with a warning on each change. One request's worth of failed
 * attempts (`retries + 1`) in a row opens it.
 */
function breakerFor(
  config: UpstreamConfig,
  base: URL,
  all: readonly Endpoint[],
  deps: EndpointDeps & { readonly probe: () => Promise<Reachability> },
): Breaker {
  const { metrics, now } = deps;
  const log = deps.log.child({ url: base.origin });
  const labels = { upstream: config.name, url: base.origin };
  const report = () => metrics.upstreamDown.set({ upstream: config.name }, all.every((e) => e.breaker.isOpen()) ? 1 : 0);
  return createBreaker({
    name: config.name,
    downForMs: config.downForMs,
    failuresToOpen: config.retries + 1,
    now,
    probe: deps.probe,
    onOpen: () => {
      metrics.upstreamEndpointDown.set(labels, 1);
      report();
      log.warn({ downForMs: config.downForMs }, 'upstream down');
    },
    onClose: () => {
      metrics.upstreamEndpointDown.set(labels, 0);
      metrics.upstreamDown.set({ upstream: config.name }, 0);
      log.warn('upstream up');
    },
  });
}

/** `GET /v2/` (distribution spec, "determining support"): any HTTP answer, a 401 too, proves the endpoint reachable. */
async function probeEndpoint(transport: Transport, base: URL, deadlineMs: number): Promise<Reachability> {
  try {
    const hop = await transport.send('GET', new URL('/v2/', base), {}, AbortSignal.timeout(deadlineMs), 'PROBE');
    discard(hop.body);
    return 'reachable';
  } catch {
    // Any failure to get an answer (refused, DNS, TLS, timeout) is exactly what the probe asks about.
    return 'unreachable';
  }
}
