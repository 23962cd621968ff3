import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { terminate } from '../process.js';
import { hostPlatform } from '../tar-images.js';
import { describeFailure, refOf, type Endpoint, type PullClient, type RegistryName, type Target } from './client.js';

const run = promisify(execFile);

/** Nothing listens on the discard port: the `server` fallback fails at once and locally. */
const DEAD_SERVER = 'http://127.0.0.1:9';
const REGISTRIES: readonly RegistryName[] = ['docker.io', 'ghcr.io'];

/**
 * `hosts.toml` layout: one `certs.d/<registry>/hosts.toml` per registry, or only
 * `certs.d/_default/hosts.toml` sending every registry to one mirror.
 */
export type HostsLayout = 'per-registry' | 'default';

/**
 * A private containerd (own root, state, socket; no CRI),
 * and `ctr images pull --hosts-dir`, which resolves, fetches the host platform and
 * unpacks it with overlayfs (so the layers' diff_ids are checked). Reset restarts it
 * on an empty root.
 */
export async function startContainerdClient(layout: HostsLayout): Promise<PullClient> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-ctr-'));
  const sock = join(dir, 'containerd.sock');
  const certs = join(dir, 'certs.d');
  let generation = 0;
  let daemon = await launchContainerd(dir, sock, generation);
  const ctr = async (...args: string[]): Promise<string> => {
    try {
      const { stdout } = await run('ctr', ['-a', sock, '-n', 'test', ...args], { timeout: 180_000, maxBuffer: 1 << 26 });
      return stdout;
    } catch (err) {
      throw describeFailure(`ctr ${args.join(' ')}`, err);
    }
  };
  const contentDigest = async (digest: string): Promise<{ sha256: string; body: Buffer }> => {
    const { stdout } = await run('ctr', ['-a', sock, '-n', 'test', 'content', 'get', digest], { encoding: 'buffer', maxBuffer: 1 << 28 });
    return { sha256: `sha256:${createHash('sha256').update(stdout).digest('hex')}`, body: stdout };
  };
  const version = /Version:\s+(\S+)/.exec(await ctr('version'))?.[1] ?? 'unknown';
  return {
    name: layout === 'default' ? 'containerd (_default hosts.toml)' : 'containerd',
    version,
    platforms: 'host',
    async pull(request, target) {
      await writeHosts(certs, layout, target);
      const ref = refOf(`${request.registry}/${request.repository}`, request.reference);
      await ctr('images', 'pull', '--hosts-dir', certs, ref);
      const listed = (await ctr('images', 'ls')).split('\n').find((line) => line.startsWith(`${ref} `));
      const topDigest = /sha256:[a-f0-9]{64}/.exec(listed ?? '')?.[0];
      if (!topDigest) throw new Error(`ctr images ls has no ${ref}`);
      return { topDigest, configDigests: [await verifyHostImage(contentDigest, topDigest)] };
    },
    async reset() {
      await terminate(daemon.child);
      generation += 1;
      daemon = await launchContainerd(dir, sock, generation);
    },
    async stop() {
      await terminate(daemon.child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Re-hashes what containerd stored for the host platform, top-down: the index (if
 * any), the manifest, its config and layers. Returns the config digest.
 */
async function verifyHostImage(get: (digest: string) => Promise<{ sha256: string; body: Buffer }>, topDigest: string): Promise<string> {
  const readJson = async (digest: string): Promise<Record<string, unknown>> => {
    const { sha256, body } = await get(digest);
    if (sha256 !== digest) throw new Error(`containerd holds ${digest} with sha256 ${sha256}`);
    return JSON.parse(body.toString()) as Record<string, unknown>;
  };
  let manifest = await readJson(topDigest);
  if (Array.isArray(manifest.manifests)) {
    const { architecture } = hostPlatform();
    const entries = manifest.manifests as { digest: string; platform?: { architecture?: string } }[];
    const chosen = entries.find((m) => m.platform?.architecture === architecture);
    if (!chosen) throw new Error(`index ${topDigest} has no ${architecture} manifest`);
    manifest = await readJson(chosen.digest);
  }
  const config = manifest.config as { digest: string };
  for (const blob of [config, ...(manifest.layers as { digest: string }[])]) {
    const { sha256 } = await get(blob.digest);
    if (sha256 !== blob.digest) throw new Error(`containerd holds ${blob.digest} with sha256 ${sha256}`);
  }
  return config.digest;
}

/** Writes certs.d for `target`, replacing what the last pull used. */
async function writeHosts(certs: string, layout: HostsLayout, target: Target): Promise<void> {
  await rm(certs, { recursive: true, force: true });
  const files: [string, Endpoint][] =
    layout === 'default' ? [['_default', target.endpoint('docker.io')]] : REGISTRIES.map((r) => [r, target.endpoint(r)]);
  for (const [name, endpoint] of files) {
    await mkdir(join(certs, name), { recursive: true });
    await writeFile(join(certs, name, 'hosts.toml'), hostsToml(endpoint));
  }
}

/**
 * The file ../../deploy/containerd documents: the mirror first, then a `server` that
 * fails locally. containerd adds `?ns=<registry>` to every request it sends a host
 * that is not the registry itself, which is how the mirror routes.
 */
function hostsToml(endpoint: Endpoint): string {
  const url = `${endpoint.tls ? 'https' : 'http'}://${endpoint.host}`;
  return [
    `server = "${DEAD_SERVER}"`,
    `[host."${url}"]`,
    '  capabilities = ["pull", "resolve"]',
    ...(endpoint.tls ? [`  ca = "${endpoint.tls.caFile}"`] : []),
    '',
  ].join('\n');
}

/** A private containerd in `dir` (generation `n` gets a fresh root), serving on `sock`; resolves once it booted. */
export async function launchContainerd(dir: string, sock: string, generation: number): Promise<{ child: ChildProcess }> {
  const base = join(dir, `gen-${generation}`);
  await rm(join(dir, `gen-${generation - 1}`), { recursive: true, force: true });
  await mkdir(base, { recursive: true });
  const config = join(base, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${join(base, 'root')}"`,
      `state = "${join(base, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
      '[grpc]',
      `  address = "${sock}"`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = "${join(base, 'opt')}"`,
      '',
    ].join('\n'),
  );
  const child = spawn('containerd', ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-16_384);
      if (output.includes('containerd successfully booted')) resolve();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`containerd exited with ${code}: ${output.slice(-2000)}`)));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
  return { child };
}
