import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PullClient, Target } from '../support/clients/client.js';
import { startContainerdClient } from '../support/clients/containerd.js';
import { startDocker } from '../support/clients/docker.js';
import { startPodman } from '../support/clients/podman.js';
import { startSkopeo } from '../support/clients/skopeo.js';
import { metricValue } from '../support/metrics.js';
import { startCountingProxy, type CountingProxy, type Recorded } from '../support/proxy.js';
import { hostManifest } from '../support/tar-images.js';
import { createWorld, startE2eMirror, type E2eMirror, type World } from './world.js';

/**
 * A link that cuts the first download of each blob after 512 KiB (every later one
 * whole), between the mirror and its upstreams. containers/image (skopeo, podman) does
 * not resume a cut blob, and containerd does not try another host after a truncated
 * 200 (containerd#9552): the mirror resumes upstream, so every client pulls the
 * upstream digests, none sees a cut (no client asks the mirror for a Range), and the
 * upstream sends each blob about once.
 */
const CUT_AFTER = 512 * 1024;

interface ClientCase {
  readonly label: string;
  readonly start: () => Promise<PullClient>;
  /** The upstream ignores Range (the link drops it): resumes re-read from the start. */
  readonly ignoreRange?: boolean;
}

const CLIENTS: readonly ClientCase[] = [
  { label: 'skopeo', start: startSkopeo },
  { label: 'podman', start: startPodman },
  { label: 'containerd', start: () => startContainerdClient('per-registry') },
  { label: 'docker', start: startDocker },
  { label: 'skopeo, upstream ignoring Range', start: startSkopeo, ignoreRange: true },
];

let world: World;
const table: string[] = [];

beforeAll(async () => {
  world = await createWorld();
});

afterAll(async () => {
  await world?.dispose();
  if (table.length > 0) console.log(`client -> result through a cutting link:\n${table.join('\n')}`);
});

/** Upstream body bytes per blob, over every GET of it (cut, resumed or whole), against the blob's size. */
function perBlob(requests: readonly Recorded[]): { digest: string; sizeBytes: number; bodyBytes: number; gets: number }[] {
  const blobs = new Map<string, { digest: string; sizeBytes: number; bodyBytes: number; gets: number }>();
  for (const r of requests) {
    const digest = /\/blobs\/(sha256:[a-f0-9]{64})/.exec(r.path)?.[1];
    if (!digest || r.method !== 'GET') continue;
    const row = blobs.get(digest) ?? { digest, sizeBytes: 0, bodyBytes: 0, gets: 0 };
    if (r.status === 200 && r.length !== undefined) row.sizeBytes = Math.max(row.sizeBytes, r.length);
    row.bodyBytes += r.bytes;
    row.gets += 1;
    blobs.set(digest, row);
  }
  return [...blobs.values()];
}

for (const clientCase of CLIENTS)
  describe(clientCase.label, () => {
    let client: PullClient;
    let links: CountingProxy[];
    let front: CountingProxy;
    let mirror: E2eMirror;

    beforeAll(async () => {
      client = await clientCase.start();
      const fault = { linkFault: { afterBytes: CUT_AFTER, ignoreRange: clientCase.ignoreRange ?? false } };
      links = [
        await startCountingProxy(world.upstreamUrls['docker.io'], fault),
        await startCountingProxy(world.upstreamUrls['ghcr.io'], fault),
      ];
      mirror = await startE2eMirror({ 'docker.io': links[0]!.url, 'ghcr.io': links[1]!.url });
      // What the client asks of the mirror, recorded on the way.
      front = await startCountingProxy(`http://${mirror.target.endpoint('docker.io').host}`);
    });

    afterAll(async () => {
      await front?.stop();
      await mirror?.stop();
      for (const link of links ?? []) await link.stop();
      await client?.stop();
    });

    it('pulls multi-layer, multi-arch images with the upstream digests although the link cuts every blob once', async () => {
      const target: Target = {
        label: 'mirror behind a cutting link',
        endpoint: (registry) => ({ ...mirror.target.endpoint(registry), host: new URL(front.url).host }),
      };
      const scenarios = world.scenarios.filter((s) => s.image.multiArch && !s.request.reference.startsWith('sha256:'));
      try {
        for (const scenario of scenarios) {
          await client.reset();
          const pulled = await client.pull(scenario.request, target);
          expect(pulled.topDigest, scenario.title).toBe(scenario.image.topDigest);
          const expected =
            client.platforms === 'all' ? scenario.image.manifests.map((m) => m.configDigest) : [hostManifest(scenario.image).configDigest];
          expect([...pulled.configDigests].sort(), scenario.title).toEqual([...expected].sort());
        }
        table.push(`${clientCase.label} ${client.version}: ok`);
      } catch (err) {
        table.push(`${clientCase.label} ${client.version}: FAILED ${(err as Error).message.slice(0, 300)}`);
        throw err;
      }
      const requests = links.flatMap((link) => link.requests);
      const cut = requests.filter((r) => r.cut).length;
      const outcome = clientCase.ignoreRange ? 'refetched' : 'resumed';
      const resumed = await metricValue(mirror.runtime.metrics.upstreamResumes, { outcome });
      expect(cut).toBeGreaterThan(0);
      expect(resumed).toBe(cut);
      // No client saw a cut: none came back for a Range.
      expect(front.requests.filter((r) => r.headers.range !== undefined)).toEqual([]);
      const blobs = perBlob(requests);
      const sizeBytes = blobs.reduce((sum, b) => sum + b.sizeBytes, 0);
      const bodyBytes = blobs.reduce((sum, b) => sum + b.bodyBytes, 0);
      // Bytes the mirror received; the link may have sent more (an RST drops what the receiver had not read yet).
      const fetched = await metricValue(mirror.runtime.metrics.upstreamBytes);
      const refetched = await metricValue(mirror.runtime.metrics.upstreamRefetchedBytes);
      if (clientCase.ignoreRange) {
        expect(refetched).toBeGreaterThan(0);
        expect(fetched).toBe(sizeBytes + refetched);
      } else {
        expect(refetched).toBe(0);
        expect(fetched).toBeLessThanOrEqual(1.1 * sizeBytes);
      }
      const rows = blobs.map(
        (b) =>
          `  ${b.digest.slice(7, 19)} ${String(b.sizeBytes).padStart(9)} B blob ${String(b.bodyBytes).padStart(9)} B upstream ${b.gets} GETs`,
      );
      const figures = `${sizeBytes} blob bytes, ${fetched} received (${(fetched / sizeBytes).toFixed(3)}×), ${refetched} refetched, ${bodyBytes} sent by the link`;
      console.log(`${clientCase.label}: ${cut} cuts, ${resumed} ${outcome}; ${figures}\n${rows.join('\n')}`);
    });
  });
