import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PullClient, Target } from '../support/clients/client.js';
import { startContainerdClient } from '../support/clients/containerd.js';
import { startSkopeo } from '../support/clients/skopeo.js';
import { metricValue } from '../support/metrics.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { startNginx, type NginxHandle } from '../support/nginx.js';
import { hostManifest } from '../support/tar-images.js';
import { createWorld, type Scenario, type World } from './world.js';

const FRONT_CONF = join(import.meta.dirname, '../../deploy/nginx/front.conf');

/**
 * Real clients pull through deploy/nginx/front.conf → a mirror in front mode → the
 * world's registries: cold (the mirror fetches, nginx streams the misses) and warm
 * (every stored blob is sent by nginx from the store). Digests must be the upstream's.
 */
const CLIENTS: readonly { label: string; start: () => Promise<PullClient> }[] = [
  { label: 'skopeo', start: startSkopeo },
  { label: 'containerd', start: () => startContainerdClient('per-registry') },
];

let world: World;

beforeAll(async () => {
  world = await createWorld();
});

afterAll(async () => {
  await world?.dispose();
});

for (const clientCase of CLIENTS)
  describe(`${clientCase.label} through nginx in front of the mirror`, () => {
    let client: PullClient;
    let mirror: MirrorHandle;
    let nginx: NginxHandle;
    let target: Target;

    beforeAll(async () => {
      client = await clientCase.start();
      mirror = await startMirror({
        upstreams: {
          'docker.io': { url: world.upstreamUrls['docker.io'], library: true, aliases: ['index.docker.io', 'registry-1.docker.io'] },
          'ghcr.io': { url: world.upstreamUrls['ghcr.io'] },
        },
        defaultUpstream: 'docker.io',
        front: { mode: 'nginx' },
      });
      nginx = await startNginx(FRONT_CONF, { blobsDir: join(mirror.storeDir, 'blobs', 'sha256'), mirrors: [mirror.host] });
      const host = `127.0.0.1:${nginx.port}`;
      target = { label: 'nginx front', endpoint: (registry) => ({ host, prefix: registry === 'docker.io' ? '' : `${registry}/` }) };
    });

    afterAll(async () => {
      await nginx?.stop();
      await mirror?.stop();
      await client?.stop();
    });

    const pullAll = async (): Promise<void> => {
      for (const scenario of world.scenarios) await pullAndCheck(client, target, scenario);
    };
    const redirected = async (): Promise<{ answers: number; bytes: number }> => {
      const lines = (await nginx.accessLog()).filter((line) => line.includes('redirect="/_store/'));
      const bytes = lines.reduce((sum, line) => sum + Number(/" 20[06] (\d+) /.exec(line)?.[1] ?? 0), 0);
      return { answers: lines.length, bytes };
    };

    it('cold: every image arrives with the upstream digests, the misses streamed through nginx', async () => {
      await pullAll();
      expect(await metricValue(mirror.runtime.metrics.requests, { kind: 'blob', outcome: 'miss' })).toBeGreaterThan(0);
      expect(await metricValue(mirror.runtime.metrics.upstreamBytes)).toBeGreaterThan(0);
    });

    it('warm: every stored blob is sent by nginx, recorded as a hit by the mirror', async () => {
      await mirror.runtime.mirror.drain();
      const fetched = await metricValue(mirror.runtime.metrics.upstreamBytes);
      const hits = await metricValue(mirror.runtime.metrics.requests, { kind: 'blob', outcome: 'hit' });
      const cacheBytes = await metricValue(mirror.runtime.metrics.bytesServed, { source: 'cache' });
      const before = await redirected();
      await pullAll();
      const after = await redirected();
      const newHits = (await metricValue(mirror.runtime.metrics.requests, { kind: 'blob', outcome: 'hit' })) - hits;
      expect(await metricValue(mirror.runtime.metrics.upstreamBytes)).toBe(fetched);
      expect(newHits).toBeGreaterThan(0);
      // Every blob hit of the warm pull was an X-Accel-Redirect answer, and nginx sent its bytes.
      expect(after.answers - before.answers).toBe(newHits);
      expect(after.bytes - before.bytes).toBe((await metricValue(mirror.runtime.metrics.bytesServed, { source: 'cache' })) - cacheBytes);
      expect(after.bytes - before.bytes).toBeGreaterThan(0);
    });
  });

async function pullAndCheck(client: PullClient, target: Target, scenario: Scenario): Promise<void> {
  await client.reset();
  const pulled = await client.pull(scenario.request, target);
  expect(pulled.topDigest, scenario.title).toBe(scenario.image.topDigest);
  const expected =
    client.platforms === 'all' ? scenario.image.manifests.map((m) => m.configDigest) : [hostManifest(scenario.image).configDigest];
  expect([...pulled.configDigests].sort(), scenario.title).toEqual([...expected].sort());
}
