import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';

/**
 * Docker Hub's token flow, emulated in front of a real registry: 401 with a Bearer
 * challenge, a token from the realm with the mirror's credentials, the token cached
 * per repository scope. Content fetched with credentials is only served to the
 * repository the upstream confirmed it for.
 */
describe('token-authenticated upstream', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  let image: Pushed;

  beforeAll(async () => {
    registry = await startRegistry();
    image = await pushImage(
      registry.url,
      'acme/private-synth',
      'v1',
      buildImage({
        mediaTypes: 'oci',
        layers: [
          { seed: 'private-a', size: 128 << 10 },
          { seed: 'private-b', size: 64 << 10 },
        ],
      }),
    );
    await pushImage(registry.url, 'acme/other-synth', 'v1', buildImage({ mediaTypes: 'oci', layers: [{ seed: 'other', size: 1024 }] }));
    proxy = await startCountingProxy(registry.url, { tokenAuth: true, tokenCredentials: { username: 'mirror', password: 's3cret' } });
    mirror = await startMirror(
      // The token server listens on another port: another origin, trusted only when listed.
      {
        upstreams: {
          'docker.io': {
            url: proxy.url,
            library: true,
            auth: { username: 'mirror', passwordEnv: 'TEST_UPSTREAM_PASSWORD', realms: [proxy.realmOrigin] },
          },
        },
      },
      { env: { TEST_UPSTREAM_PASSWORD: 's3cret' } },
    );
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  it('pulls through the Bearer challenge and reuses the token for the same repository', async () => {
    const manifest = await fetchHashed(`${mirror.url}/v2/acme/private-synth/manifests/v1`);
    expect(manifest.status).toBe(200);
    expect(manifest.sha256).toBe(image.topDigest);
    const tokensAfterFirst = proxy.count({ kind: 'token' });
    expect(tokensAfterFirst).toBe(1);
    for (const blob of image.blobs) {
      const res = await fetchHashed(`${mirror.url}/v2/acme/private-synth/blobs/${blob.digest}`);
      expect(res.sha256).toBe(blob.digest);
    }
    expect(proxy.count({ kind: 'token' })).toBe(tokensAfterFirst);
  });

  it('does not serve content fetched for one repository through another repository name', async () => {
    const blob = image.blobs[0]!;
    expect(await mirror.runtime.store.blobs.stat(blob.digest as never)).toBe(blob.size);
    const leaked = await fetchHashed(`${mirror.url}/v2/acme/other-synth/blobs/${blob.digest}`);
    expect(leaked.status).toBe(404);
    const leakedManifest = await fetchHashed(`${mirror.url}/v2/acme/other-synth/manifests/${image.topDigest}`);
    expect(leakedManifest.status).toBe(404);
  });

  it('never forwards the client Authorization header upstream', async () => {
    proxy.reset();
    await fetchHashed(`${mirror.url}/v2/acme/private-synth/tags/list`, { headers: { authorization: 'Bearer client-secret' } });
    for (const req of proxy.requests) expect(JSON.stringify(req.headers)).not.toContain('client-secret');
  });
});
