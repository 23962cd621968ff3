import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchHashed } from '../support/http.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startSourceGate, startTinyproxy, type ForwardProxy, type SourceGate } from '../support/tinyproxy.js';

/**
 * Behind a corporate egress proxy: a real tinyproxy (Basic credentials, CONNECT to one
 * port) binds its outgoing connections to 127.0.0.3, and the upstream registry sits
 * behind a gate that admits only connections from 127.0.0.3. So the upstream is
 * reachable through the proxy and in no other way.
 */
describe('egress proxy', () => {
  const PROXY_ADDRESS = '127.0.0.3';
  let registry: RegistryHandle;
  let gate: SourceGate;
  let tinyproxy: ForwardProxy;
  let image: Pushed;
  let upstreamUrl: string;
  let tokenUpstream: CountingProxy;
  let tokenGate: SourceGate;
  let tokenPort: number;
  const mirrors: MirrorHandle[] = [];

  beforeAll(async () => {
    registry = await startRegistry();
    image = await pushImage(
      registry.url,
      'team/proxied-synth',
      'v1',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'proxied', size: 16384 }] }),
    );
    gate = await startSourceGate({ host: '127.0.0.1', port: registry.port }, PROXY_ADDRESS);
    upstreamUrl = `http://127.0.0.1:${gate.port}`;
    tokenUpstream = await startCountingProxy(registry.url, { tokenAuth: true });
    tokenGate = await startSourceGate({ host: '127.0.0.1', port: Number(new URL(tokenUpstream.url).port) }, PROXY_ADDRESS);
    tokenPort = Number(new URL(tokenUpstream.realm ?? '').port);
    tinyproxy = await startTinyproxy({
      connectPorts: [gate.port, tokenGate.port, tokenPort],
      bindAddress: PROXY_ADDRESS,
      username: 'egress',
      password: 'pr0xy-secret',
    });
  });

  afterAll(async () => {
    for (const mirror of mirrors) await mirror.stop();
    await tinyproxy?.stop();
    await tokenGate?.stop();
    await tokenUpstream?.stop();
    await gate?.stop();
    await registry?.dispose();
  });

  async function pullThrough(upstream: Record<string, unknown>, env: Record<string, string> = {}) {
    const mirror = await startMirror(
      {
        upstreams: { 'registry.test': { url: upstreamUrl, downFor: '0s', ...upstream } },
        upstreamDefaults: { retries: 0, timeouts: { connect: '2s', headers: '2s', body: '2s' } },
      },
      { env },
    );
    mirrors.push(mirror);
    const manifest = await fetchHashed(`${mirror.url}/v2/team/proxied-synth/manifests/v1`);
    const blob = image.blobs[0]!;
    const layer = manifest.status === 200 ? await fetchHashed(`${mirror.url}/v2/team/proxied-synth/blobs/${blob.digest}`) : undefined;
    return { status: manifest.status, sha256: manifest.sha256, layer: layer?.sha256 };
  }

  it('cannot reach the upstream directly: the gate is real', async () => {
    const refused = gate.refused();
    expect((await pullThrough({})).status).toBe(503);
    expect(gate.refused()).toBeGreaterThan(refused);
  });

  it('pulls through the upstream proxy of the config, with credentials from the environment', async () => {
    const before = tinyproxy.connects().length;
    const admitted = gate.admitted();
    const res = await pullThrough(
      { proxy: { url: tinyproxy.url, usernameEnv: 'EGRESS_PROXY_USER', passwordEnv: 'EGRESS_PROXY_PASSWORD' } },
      { EGRESS_PROXY_USER: 'egress', EGRESS_PROXY_PASSWORD: 'pr0xy-secret' },
    );
    expect(res.sha256).toBe(image.topDigest);
    expect(res.layer).toBe(image.blobs[0]!.digest);
    const connects = tinyproxy.connects().slice(before);
    expect(connects.length).toBeGreaterThanOrEqual(1);
    expect(connects.every((line) => line === `CONNECT 127.0.0.1:${gate.port}`)).toBe(true);
    expect(gate.admitted()).toBe(admitted + connects.length);
  });

  it('is refused by the proxy without its credentials', async () => {
    expect((await pullThrough({ proxy: { url: tinyproxy.url } })).status).toBe(503);
  });

  it('honours HTTP_PROXY (credentials in its userinfo), and NO_PROXY over it', async () => {
    const before = tinyproxy.connects().length;
    const env = { HTTP_PROXY: `http://egress:pr0xy-secret@127.0.0.1:${new URL(tinyproxy.url).port}` };
    const res = await pullThrough({}, env);
    expect(res.sha256).toBe(image.topDigest);
    expect(tinyproxy.connects().length).toBeGreaterThan(before);

    const refused = gate.refused();
    const direct = await pullThrough({}, { ...env, NO_PROXY: 'localhost,127.0.0.1' });
    expect(direct.status).toBe(503);
    expect(gate.refused()).toBeGreaterThan(refused);
  });

  it('fetches tokens from the realm through the same proxy', async () => {
    const before = tinyproxy.connects().length;
    const mirror = await startMirror(
      {
        upstreams: {
          'registry.test': {
            url: `http://127.0.0.1:${tokenGate.port}`,
            downFor: '0s',
            proxy: { url: tinyproxy.url, usernameEnv: 'U', passwordEnv: 'P' },
          },
        },
        upstreamDefaults: { retries: 0, timeouts: { connect: '2s', headers: '2s', body: '2s' } },
      },
      { env: { U: 'egress', P: 'pr0xy-secret' } },
    );
    mirrors.push(mirror);
    const res = await fetchHashed(`${mirror.url}/v2/team/proxied-synth/manifests/v1`);
    expect(res.sha256).toBe(image.topDigest);
    expect(tokenUpstream.count({ kind: 'token' })).toBe(1);
    expect(tinyproxy.connects().slice(before)).toEqual(
      expect.arrayContaining([`CONNECT 127.0.0.1:${tokenPort}`, `CONNECT 127.0.0.1:${tokenGate.port}`]),
    );
  });
});
