import type { LookupAddress } from 'node:dns';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamConfig, UpstreamCredentials } from '../../src/config/types.js';
import { createSilentLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { createUpstream, type Upstream } from '../../src/upstream/client.js';
import type { Resolve } from '../../src/upstream/local-address.js';
import { TEST_UPSTREAM_POLICY } from '../support/upstream-config.js';

/**
 * The realm trust boundary with real host names, resolved by an injected resolver to
 * distinct loopback addresses on one port (so only the host differs): the registrable
 * domain comes from the Public Suffix List, and tenants under a shared suffix are apart.
 */
const HOSTS: Record<string, string> = {
  'registry-1.docker.io': '127.0.0.2',
  'myreg.azurecr.io': '127.0.0.2',
  'auth.docker.io': '127.0.0.3',
  'attacker.azurecr.io': '127.0.0.4',
};

const resolve: Resolve = (hostname, _options, callback) => {
  const address = HOSTS[hostname];
  const addresses: LookupAddress[] = address === undefined ? [] : [{ address, family: 4 }];
  queueMicrotask(() => callback(address === undefined ? Object.assign(new Error(hostname), { code: 'ENOTFOUND' }) : null, addresses));
};

const realms: Record<string, string> = { 'registry-1.docker.io': 'auth.docker.io', 'myreg.azurecr.io': 'attacker.azurecr.io' };
const seenByRealm = new Map<string, IncomingHttpHeaders[]>();
const servers: Server[] = [];
let port = 0;
const credentials: UpstreamCredentials = { username: 'user', password: 'pw-d81f' };

async function listen(address: string, handler: Parameters<typeof createServer>[1]): Promise<void> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((done) => server.listen(port, address, done));
  port = (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  // The registry: a challenge naming the realm host that goes with the name it was reached by.
  await listen('127.0.0.2', (req, res) => {
    const host = (req.headers.host ?? '').split(':')[0] ?? '';
    if (req.headers.authorization === 'Bearer tok') return void res.writeHead(200).end('ok');
    const realm = `http://${realms[host] ?? 'unknown'}:${port}/token`;
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="svc"` }).end();
  });
  for (const address of ['127.0.0.3', '127.0.0.4']) {
    await listen(address, (req, res) => {
      const host = (req.headers.host ?? '').split(':')[0] ?? '';
      seenByRealm.set(host, [...(seenByRealm.get(host) ?? []), req.headers]);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"tok"}');
    });
  }
});

afterAll(async () => {
  for (const server of servers) await new Promise((done) => server.close(done));
});

function upstreamAt(host: string): Upstream {
  const config: UpstreamConfig = {
    name: host,
    url: `http://${host}:${port}`,
    ...TEST_UPSTREAM_POLICY,
    credentials,
    // The test's hosts are all on loopback: lift the local-address refusal, keep the names.
    allowLocalRedirects: true,
  };
  return createUpstream(config, { metrics: createMetrics({ processMetrics: false }), log: createSilentLogger(), resolve });
}

async function pull(upstream: Upstream): Promise<string> {
  try {
    const res = await upstream.request({ method: 'GET', repository: 'org/app', path: 'manifests/v1', notFound: 'MANIFEST_UNKNOWN' });
    return (await res.body.toArray()).join('');
  } finally {
    await upstream.close();
  }
}

describe('token realms by name', () => {
  it('sends Docker Hub credentials to auth.docker.io, the same registrable domain', async () => {
    expect(await pull(upstreamAt('registry-1.docker.io'))).toBe('ok');
    expect(seenByRealm.get('auth.docker.io')?.[0]?.authorization).toBe(`Basic ${Buffer.from('user:pw-d81f').toString('base64')}`);
  });

  it('fetches anonymously from another tenant of azurecr.io', async () => {
    expect(await pull(upstreamAt('myreg.azurecr.io'))).toBe('ok');
    expect(seenByRealm.get('attacker.azurecr.io')?.[0]).toBeDefined();
    expect(seenByRealm.get('attacker.azurecr.io')?.[0]?.authorization).toBeUndefined();
  });
});
