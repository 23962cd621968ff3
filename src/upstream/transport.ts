/**
 * One HTTP round trip to an upstream (or its token realm, or a redirect target):
 * the per-upstream undici Agent, timeouts, and the metrics every round trip records.
 * No auth, redirects or retries here; see client.ts.
 */
import type { LookupFunction } from 'node:net';
import { Agent, type Dispatcher } from 'undici';
import type { UpstreamConfig } from '../config/types.js';
import { statusClass, type Metrics } from '../metrics.js';
import { VERSION } from '../version.js';
import { UpstreamError } from './failure.js';
import { connectLookup, isLocalHost, type Resolve } from './local-address.js';

export type Body = Dispatcher.ResponseData['body'];

export interface Hop {
  readonly status: number;
  /** Lower-case names, one string value each. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Body;
  readonly url: URL;
}

export type Method = 'GET' | 'HEAD';

export interface Transport {
  /** `metricMethod` labels the round trip (`TOKEN` for token fetches). */
  send(
    method: Method,
    url: URL,
    headers: Readonly<Record<string, string>>,
    signal?: AbortSignal,
    metricMethod?: string,
  ): Promise<Hop>;
  close(): Promise<void>;
}

export const USER_AGENT = `oci-mirror/${VERSION}`;

export function createTransport(
  config: UpstreamConfig,
  deps: { readonly metrics: Metrics; readonly dispatcher?: Dispatcher | undefined; readonly resolve?: Resolve | undefined },
): Transport {
  const { timeouts } = config;
  const ownHost = new URL(config.url).hostname;
  const allowLocal = config.allowLocalRedirects ?? isLocalHost(ownHost);
  // One keep-alive Agent per upstream; an injected dispatcher (tests) is not ours to close.
  const dispatcher: Dispatcher = deps.dispatcher ?? createAgent(config, connectLookup(ownHost, { allowLocal, resolve: deps.resolve }));
  const owned = deps.dispatcher ? undefined : dispatcher;
  const labels = (method: string, status: number) => ({
    upstream: config.name,
    method,
    status_class: statusClass(status),
  });

  async function send(
    method: Method,
    url: URL,
    headers: Readonly<Record<string, string>>,
    signal?: AbortSignal,
    metricMethod: string = method,
  ): Promise<Hop> {
    // Redirects and token realms lead anywhere the upstream says; not to this machine or
    // its link-local neighbours (names are checked at connect time by the Agent's lookup).
    if (!allowLocal && url.hostname !== ownHost && isLocalHost(url.hostname)) {
      throw new UpstreamError('UNAVAILABLE', `upstream sent the mirror to a local address (${url.host}); refused`, 'invalid');
    }
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const res = await dispatcher.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method,
        headers: { 'user-agent': USER_AGENT, ...headers },
        signal: signal ?? null,
        headersTimeout: timeouts.headersMs,
        bodyTimeout: timeouts.bodyMs,
      });
      deps.metrics.upstreamRequests.observe(labels(metricMethod, res.statusCode), seconds());
      const flat = flattenHeaders(res.headers);
      recordRateLimit(deps.metrics, config.name, flat['ratelimit-remaining']);
      return { status: res.statusCode, headers: flat, body: res.body, url };
    } catch (err) {
      deps.metrics.upstreamRequests.observe(labels(metricMethod, 0), seconds());
      throw err;
    }
  }

  return {
    send,
    close: async () => {
      await owned?.close();
    },
  };
}

/** `lookup` checks the address each connection dials (see connectLookup). */
function createAgent(config: UpstreamConfig, lookup: LookupFunction | undefined): Agent {
  return new Agent({
    connections: config.maxConnections,
    connect: { timeout: config.timeouts.connectMs, ...(lookup === undefined ? {} : { lookup }) },
    headersTimeout: config.timeouts.headersMs,
    bodyTimeout: config.timeouts.bodyMs,
  });
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

/** Docker Hub: `ratelimit-remaining: 20;w=21600` (docker docs, usage/pulls.md). */
function recordRateLimit(metrics: Metrics, upstream: string, header: string | undefined): void {
  if (header === undefined) return;
  const remaining = Number.parseInt(header.split(';', 1)[0] ?? '', 10);
  if (Number.isFinite(remaining)) metrics.upstreamRateLimitRemaining.set({ upstream }, remaining);
}
