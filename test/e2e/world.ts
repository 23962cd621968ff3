import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/index.js';
import { createSilentLogger } from '../../src/log.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import type { PullRequest, RegistryName, Target } from '../support/clients/client.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { hostPlatform, pushTarImage, pushTarIndex, type PublishedImage, type TarImageSpec } from '../support/tar-images.js';
import type { TestPki } from '../support/tls.js';

/**
 * The world every client scenario runs in: one local docker-registry per simulated
 * registry (docker.io, ghcr.io), a catalogue of images pushed to them, and mirrors
 * in front of them. Nothing here dials anything but loopback.
 */
export interface Scenario {
  /** Test title, e.g. `docker.io/library/alpine:3.20 (single-arch docker)`. */
  readonly title: string;
  readonly request: PullRequest;
  readonly image: PublishedImage;
}

export interface World {
  readonly registries: Readonly<Record<RegistryName, RegistryHandle>>;
  /** Base URL of each registry, for a mirror's config. */
  readonly upstreamUrls: Readonly<Record<RegistryName, string>>;
  readonly scenarios: readonly Scenario[];
  /** The registries themselves, no mirror: the baseline. */
  readonly direct: Target;
  /** Stops every upstream registry (their storage stays). */
  stopUpstreams(): Promise<void>;
  /** Starts them again on the same ports, if they are not running. */
  startUpstreams(): Promise<void>;
  dispose(): Promise<void>;
}

const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' } as const;
const amd64 = { os: 'linux', architecture: 'amd64' } as const;
/**
 * Layer sizes are multiplied by `OCI_MIRROR_E2E_LAYER_SCALE` (default 1: 2–7 MiB per
 * platform), to measure pull times on larger images without changing the tests.
 */
const LAYER_MIB = (1 << 20) * Math.max(1, Number(process.env.OCI_MIRROR_E2E_LAYER_SCALE ?? 1) || 1);

function platforms(mediaTypes: 'oci' | 'docker', name: string, shared: number, own: number): TarImageSpec[] {
  return [amd64, arm64].map((platform) => ({
    mediaTypes,
    platform,
    layers: [
      { seed: `${name}-shared`, size: shared },
      { seed: `${name}-${platform.architecture}`, size: own },
    ],
  }));
}

export async function createWorld(): Promise<World> {
  const registries = { 'docker.io': await startRegistry(), 'ghcr.io': await startRegistry() };
  const hub = registries['docker.io'].url;
  const ghcr = registries['ghcr.io'].url;
  const host = hostPlatform();
  const alpine = await pushTarImage(hub, 'library/alpine', '3.20', {
    mediaTypes: 'docker',
    platform: host,
    layers: [
      { seed: 'hub-alpine-base', size: 1 * LAYER_MIB },
      { seed: 'hub-alpine-app', size: 6 * LAYER_MIB },
    ],
  });
  const busybox = await pushTarIndex(hub, 'library/busybox', '1.36', {
    mediaTypes: 'docker',
    images: platforms('docker', 'hub-busybox', 2 * LAYER_MIB, 4 * LAYER_MIB),
  });
  const app = await pushTarIndex(hub, 'org/app', '1.0', {
    mediaTypes: 'oci',
    images: platforms('oci', 'hub-app', 1 * LAYER_MIB, 3 * LAYER_MIB),
  });
  // The same repository and tag as on docker.io with other content: only routing by
  // registry (`?ns=`, a path prefix) gets the right digest.
  const ghcrAlpine = await pushTarImage(ghcr, 'library/alpine', '3.20', {
    mediaTypes: 'oci',
    platform: host,
    layers: [{ seed: 'ghcr-alpine', size: 2 * LAYER_MIB }],
  });
  const tool = await pushTarIndex(ghcr, 'team/sub/tool', 'v2', {
    mediaTypes: 'oci',
    images: platforms('oci', 'ghcr-tool', 1 * LAYER_MIB, 3 * LAYER_MIB),
  });
  const scenarios: Scenario[] = [
    {
      title: 'docker.io alpine:3.20, single-arch Docker schema 2',
      request: { registry: 'docker.io', repository: 'library/alpine', reference: '3.20', dockerName: 'alpine:3.20' },
      image: alpine,
    },
    {
      title: 'docker.io library/busybox:1.36, Docker manifest list',
      request: { registry: 'docker.io', repository: 'library/busybox', reference: '1.36', dockerName: 'library/busybox:1.36' },
      image: busybox,
    },
    {
      title: 'docker.io org/app:1.0, OCI index',
      request: { registry: 'docker.io', repository: 'org/app', reference: '1.0', dockerName: 'org/app:1.0' },
      image: app,
    },
    {
      title: 'docker.io org/app by digest, OCI index',
      request: { registry: 'docker.io', repository: 'org/app', reference: app.topDigest, dockerName: 'org/app' },
      image: app,
    },
    {
      title: 'ghcr.io library/alpine:3.20, single-arch OCI (same name as on docker.io)',
      request: { registry: 'ghcr.io', repository: 'library/alpine', reference: '3.20' },
      image: ghcrAlpine,
    },
    {
      title: 'ghcr.io team/sub/tool:v2, OCI index, three-part name',
      request: { registry: 'ghcr.io', repository: 'team/sub/tool', reference: 'v2' },
      image: tool,
    },
    {
      title: 'ghcr.io team/sub/tool by digest, OCI index',
      request: { registry: 'ghcr.io', repository: 'team/sub/tool', reference: tool.topDigest },
      image: tool,
    },
  ];
  const hostOf = (r: RegistryHandle): string => new URL(r.url).host;
  let running = true;
  return {
    registries,
    upstreamUrls: { 'docker.io': hub, 'ghcr.io': ghcr },
    scenarios,
    direct: { label: 'direct', endpoint: (registry) => ({ host: hostOf(registries[registry]), prefix: '' }) },
    async stopUpstreams() {
      running = false;
      await Promise.all(Object.values(registries).map((r) => r.stop()));
    },
    async startUpstreams() {
      if (running) return;
      await Promise.all(Object.values(registries).map((r) => r.restart()));
      running = true;
    },
    async dispose() {
      await Promise.all(Object.values(registries).map((r) => r.dispose()));
    },
  };
}

export interface E2eMirror {
  readonly target: Target;
  readonly runtime: Runtime;
  stop(): Promise<void>;
}

/**
 * A mirror in this process with its own empty store, in front of `upstreams` (the
 * world's registries). Tags are never fresh (`freshFor: 0s`), so a warm pull with the upstreams
 * stopped goes through revalidation, fails it, and must be served stale.
 */
export async function startE2eMirror(
  upstreams: Readonly<Record<RegistryName, string>>,
  options: { pki?: TestPki } = {},
): Promise<E2eMirror> {
  const storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-e2e-store-'));
  const { pki } = options;
  const config = parseConfig(
    {
      listen: { host: '127.0.0.1', port: 0, ...(pki ? { tls: { certFile: pki.certFile, keyFile: pki.keyFile } } : {}) },
      store: { path: storeDir },
      log: { level: 'silent' },
      defaultUpstream: 'docker.io',
      upstreamDefaults: { freshFor: '0s' },
      upstreams: {
        'docker.io': { url: upstreams['docker.io'], library: true, aliases: ['index.docker.io', 'registry-1.docker.io'] },
        'ghcr.io': { url: upstreams['ghcr.io'] },
      },
    },
    {},
  );
  const runtime = await createRuntime(config, { log: createSilentLogger(), processMetrics: false });
  const address = await runtime.app.listen({ host: '127.0.0.1', port: 0 });
  const host = new URL(address).host;
  const tls = pki ? { caFile: pki.caFile, certDir: pki.certDir } : undefined;
  return {
    runtime,
    target: {
      label: pki ? 'mirror (https)' : 'mirror',
      endpoint: (registry) => ({ host, prefix: registry === 'docker.io' ? '' : `${registry}/`, ...(tls ? { tls } : {}) }),
    },
    async stop() {
      await runtime.close();
      await rm(storeDir, { recursive: true, force: true });
    },
  };
}
