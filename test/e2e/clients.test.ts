import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Metrics } from '../../src/metrics.js';
import type { PullClient, Pulled, Target } from '../support/clients/client.js';
import { startContainerdClient } from '../support/clients/containerd.js';
import { startDocker } from '../support/clients/docker.js';
import { startPodman } from '../support/clients/podman.js';
import { startSkopeo } from '../support/clients/skopeo.js';
import { metricValue } from '../support/metrics.js';
import { hostManifest } from '../support/tar-images.js';
import { createTestPki, type TestPki } from '../support/tls.js';
import { createWorld, startE2eMirror, type E2eMirror, type Scenario, type World } from './world.js';

/**
 * Every real client pulls every scenario three ways: straight from the upstream
 * registries (the baseline), through an empty mirror (cold: the mirror fetches), and
 * through the same mirror with every upstream stopped (warm: only the cache can
 * answer). Clients that can trust a private CA also pull through an HTTPS mirror.
 * Each pull starts from an empty client, and its digests must be the upstream's.
 */
interface ClientCase {
  readonly label: string;
  readonly start: () => Promise<PullClient>;
  readonly direct: boolean;
  readonly tls: boolean;
}

const CLIENTS: readonly ClientCase[] = [
  // dockerd reads a mirror's CA only from /etc/docker/certs.d, a path shared with the
  // machine: HTTPS is left to the clients whose trust can be set per run.
  { label: 'docker', start: startDocker, direct: true, tls: false },
  { label: 'containerd', start: () => startContainerdClient('per-registry'), direct: true, tls: true },
  // `_default` sends every registry to one host: the mirror, never the registries directly.
  { label: 'containerd with a _default hosts.toml', start: () => startContainerdClient('default'), direct: false, tls: false },
  { label: 'podman', start: startPodman, direct: true, tls: true },
  { label: 'skopeo', start: startSkopeo, direct: true, tls: true },
];

interface Timing {
  readonly client: string;
  readonly version: string;
  readonly phase: string;
  readonly scenario: string;
  readonly ms: number;
}

let world: World;
let pki: TestPki;
const timings: Timing[] = [];

beforeAll(async () => {
  world = await createWorld();
  pki = await createTestPki();
});

afterAll(async () => {
  await world?.dispose();
  await pki?.dispose();
  if (timings.length > 0) await reportTimings(timings);
});

/** Resets the client, pulls, checks the digests against the upstream's, and records the time. */
async function pullAndCheck(client: PullClient, target: Target, phase: string, scenario: Scenario): Promise<Pulled> {
  await client.reset();
  const started = performance.now();
  const pulled = await client.pull(scenario.request, target);
  timings.push({
    client: client.name,
    version: client.version,
    phase,
    scenario: scenario.title,
    ms: Math.round(performance.now() - started),
  });
  expect(pulled.topDigest, scenario.title).toBe(scenario.image.topDigest);
  const expected =
    client.platforms === 'all' ? scenario.image.manifests.map((m) => m.configDigest) : [hostManifest(scenario.image).configDigest];
  expect([...pulled.configDigests].sort(), scenario.title).toEqual([...expected].sort());
  return pulled;
}

const upstreamBytes = (metrics: Metrics): Promise<number> => metricValue(metrics.upstreamBytes);
const requests = (metrics: Metrics, outcome: string): Promise<number> => metricValue(metrics.requests, { outcome });

for (const clientCase of CLIENTS)
  describe(clientCase.label, () => {
    let client: PullClient;
    let mirror: E2eMirror;

    beforeAll(async () => {
      client = await clientCase.start();
      mirror = await startE2eMirror(world.upstreamUrls);
    });

    afterAll(async () => {
      await mirror?.stop();
      await client?.stop();
      await world?.startUpstreams();
    });

    if (clientCase.direct) {
      it('pulls every image straight from the upstream registries (the baseline)', async () => {
        for (const scenario of world.scenarios) await pullAndCheck(client, world.direct, 'direct', scenario);
      });
    }

    it('cold: pulls every image through an empty mirror, which fetches each from its upstream', async () => {
      for (const scenario of world.scenarios) await pullAndCheck(client, mirror.target, 'cold', scenario);
      expect(await upstreamBytes(mirror.runtime.metrics)).toBeGreaterThan(0);
      expect(await requests(mirror.runtime.metrics, 'miss')).toBeGreaterThan(0);
    });

    it('warm: pulls every image again with every upstream stopped, from the cache alone', async () => {
      const fetchedBefore = await upstreamBytes(mirror.runtime.metrics);
      const hitsBefore = await requests(mirror.runtime.metrics, 'hit');
      await world.stopUpstreams();
      try {
        for (const scenario of world.scenarios) await pullAndCheck(client, mirror.target, 'warm', scenario);
      } finally {
        await world.startUpstreams();
      }
      expect(await upstreamBytes(mirror.runtime.metrics)).toBe(fetchedBefore);
      expect(await requests(mirror.runtime.metrics, 'hit')).toBeGreaterThan(hitsBefore);
      // Tags are never fresh here: each was revalidated, the upstream failed, the record was served.
      expect(await metricValue(mirror.runtime.metrics.staleServed)).toBeGreaterThan(0);
    });

    if (clientCase.tls) {
      it('pulls through a mirror serving HTTPS with a certificate from a test CA', async () => {
        const secure = await startE2eMirror(world.upstreamUrls, { pki });
        try {
          for (const scenario of world.scenarios.filter((s) => s.image.multiArch))
            await pullAndCheck(client, secure.target, 'cold https', scenario);
          expect(await requests(secure.runtime.metrics, 'miss')).toBeGreaterThan(0);
        } finally {
          await secure.stop();
        }
      });
    }
  });

/** Per client and phase, the total pull time over every scenario; also written as JSON for the record. */
async function reportTimings(all: readonly Timing[]): Promise<void> {
  const rows = new Map<string, { client: string; version: string; phase: string; pulls: number; ms: number }>();
  for (const t of all) {
    const key = `${t.client}\0${t.phase}`;
    const row = rows.get(key) ?? { client: t.client, version: t.version, phase: t.phase, pulls: 0, ms: 0 };
    row.pulls += 1;
    row.ms += t.ms;
    rows.set(key, row);
  }
  await mkdir('.test-results', { recursive: true });
  await writeFile('.test-results/e2e-client-timings.json', `${JSON.stringify({ summary: [...rows.values()], pulls: all }, null, 2)}\n`);
  const lines = [...rows.values()].map(
    (r) =>
      `${r.client.padEnd(40)} ${r.version.padEnd(16)} ${r.phase.padEnd(11)} ${String(r.pulls).padStart(2)} pulls ${String(r.ms).padStart(7)} ms`,
  );
  console.log(`pull times (each pull from an empty client):\n${lines.join('\n')}`);
}
