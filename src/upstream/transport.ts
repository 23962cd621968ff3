/**
 * One HTTP round trip to an upstream (or its token realm, or a redirect target):
 * the per-upstream undici Agent, timeouts, and the metrics every round trip records.
 * No auth, redirects or retries here; see client.ts.
 */
import type { LookupFunction } from 'node:net';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Agent, EnvHttpProxyAgent, ProxyAgent, type Dispatcher } from 'undici';
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
  send(method: Method, url: URL, headers: Readonly<Record<string, string>>, signal?: AbortSignal, metricMethod?: string): Promise<Hop>;
  close(): Promise<void>;
}

export const USER_AGENT = `oci-mirror/${VERSION}`;

export function createTransport(
  config: UpstreamConfig,
  deps: { readonly metrics: Metrics; readonly dispatcher?: Dispatcher | undefined; readonly resolve?: Resolve | undefined },
): Transport {
  const { timeouts } = config;
  const ownHost = new URL(config.url).hostname;
  const ownHosts = new Set([config.url, ...config.urls].map((url) => new URL(url).hostname));
  const allowLocal = config.allowLocalRedirects ?? [...ownHosts].every((host) => isLocalHost(host));
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
    if (!allowLocal && !ownHosts.has(url.hostname) && isLocalHost(url.hostname)) {
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

/**
 * The upstream's dispatcher: its own forward proxy when configured, else the proxy the
 * environment names (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), else direct. Token realms and
 * redirect targets go through the same dispatcher, so through the same proxy.
 * `lookup` checks the address each direct connection dials (see connectLookup).
 */
function createAgent(config: UpstreamConfig, lookup: LookupFunction | undefined): Dispatcher {
  const tls = tlsOptions(config.tls);
  const timeout = config.timeouts.connectMs;
  const common = { connections: config.maxConnections, headersTimeout: config.timeouts.headersMs, bodyTimeout: config.timeouts.bodyMs };
  const { proxy, envProxy } = config;
  if (proxy !== undefined) {
    const token =
      proxy.username === undefined ? {} : { token: `Basic ${Buffer.from(`${proxy.username}:${proxy.password ?? ''}`).toString('base64')}` };
    return new ProxyAgent({ ...common, uri: proxy.url, ...token, requestTls: { ...tls, timeout }, proxyTls: { timeout } });
  }
  const connect = { timeout, ...tls, ...(lookup === undefined ? {} : { lookup }) };
  if (envProxy === undefined) return new Agent({ ...common, connect });
  // Explicit values, so undici does not read process.env behind the config's back.
  return new EnvHttpProxyAgent({
    ...common,
    connect,
    requestTls: { ...tls, timeout },
    httpProxy: envProxy.httpProxy ?? '',
    httpsProxy: envProxy.httpsProxy ?? '',
    noProxy: envProxy.noProxy ?? '',
  });
}

interface TlsOptions {
  readonly ca?: string[];
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly rejectUnauthorized?: boolean;
}

/** `tls.caFile` adds to the bundled roots (Node's `ca` would replace them); read once, at start-up. */
function tlsOptions(tls: UpstreamConfig['tls']): TlsOptions {
  if (tls === undefined) return {};
  return {
    ...(tls.caFile === undefined ? {} : { ca: [...rootCertificates, readFileSync(tls.caFile, 'utf8')] }),
    ...(tls.certFile === undefined ? {} : { cert: readFileSync(tls.certFile) }),
    ...(tls.keyFile === undefined ? {} : { key: readFileSync(tls.keyFile) }),
    ...(tls.insecureSkipVerify ? { rejectUnauthorized: false } : {}),
  };
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
