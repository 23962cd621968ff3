import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describeFailure, refOf, type Endpoint, type PullClient, type RegistryName, type Target } from './client.js';

const run = promisify(execFile);

/** Nothing listens on the discard port: the fallback to the registry itself fails locally. */
const DEAD_LOCATION = '127.0.0.1:9';
const REGISTRIES: readonly RegistryName[] = ['docker.io', 'ghcr.io'];

/**
 * podman with every config private: its own
 * containers.conf, registries.conf, storage.conf, auth file and TMPDIR, vfs storage
 * under a fresh root per reset. Each registry gets a `[[registry.mirror]]` whose
 * location carries the mirror's path prefix (`127.0.0.1:5000/ghcr.io`), since podman
 * sends no registry name of its own.
 */
export async function startPodman(): Promise<PullClient> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-podman-'));
  const file = (name: string): string => join(dir, name);
  await mkdir(file('tmp'));
  await writeFile(file('policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(file('auth.json'), '{}');
  await writeFile(
    file('containers.conf'),
    ['[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', `events_logfile_path = "${file('events.log')}"`, ''].join('\n'),
  );
  let generation = 0;
  const storage = (): string[] => ['--root', file(`root-${generation}`), '--runroot', file(`run-${generation}`), '--storage-driver', 'vfs'];
  const writeStorageConf = (): Promise<void> =>
    writeFile(
      file('storage.conf'),
      ['[storage]', 'driver = "vfs"', `graphroot = "${file(`root-${generation}`)}"`, `runroot = "${file(`run-${generation}`)}"`, ''].join(
        '\n',
      ),
    );
  await writeStorageConf();
  const podman = async (args: string[], registries = ''): Promise<string> => {
    await writeFile(file('registries.conf'), registries);
    try {
      const { stdout } = await run('podman', [...storage(), ...args], {
        env: {
          ...process.env,
          CONTAINERS_CONF: file('containers.conf'),
          CONTAINERS_REGISTRIES_CONF: file('registries.conf'),
          CONTAINERS_STORAGE_CONF: file('storage.conf'),
          REGISTRY_AUTH_FILE: file('auth.json'),
          TMPDIR: file('tmp'),
        },
        timeout: 180_000,
        maxBuffer: 1 << 24,
      });
      return stdout;
    } catch (err) {
      throw describeFailure(`podman ${args.join(' ')}`, err);
    }
  };
  const version = (await podman(['version', '--format', '{{.Client.Version}}'])).trim();
  return {
    name: 'podman',
    version,
    platforms: 'host',
    async pull(request, target) {
      const ref = refOf(`${request.registry}/${request.repository}`, request.reference);
      const tls = target.endpoint(request.registry).tls;
      const certDir = tls ? ['--cert-dir', tls.certDir] : [];
      await podman(['pull', '--quiet', '--signature-policy', file('policy.json'), ...certDir, ref], registriesConf(target));
      const out = await podman(['image', 'inspect', '--format', '{{json .}}', ref]);
      const [image] = JSON.parse(out) as { Id: string; Digest: string; RepoDigests: string[] }[];
      if (!image) throw new Error(`podman image inspect ${ref}: nothing`);
      const repo = `${request.registry}/${request.repository}@`;
      const recorded = image.RepoDigests.filter((d) => d.startsWith(repo)).map((d) => d.slice(repo.length));
      // RepoDigests lists the index and the platform's manifest; Digest is what the reference resolved to.
      if (!recorded.includes(image.Digest))
        throw new Error(`${ref}: Digest ${image.Digest} not among ${JSON.stringify(image.RepoDigests)}`);
      return { topDigest: image.Digest, configDigests: [`sha256:${image.Id}`] };
    },
    async reset() {
      await rm(file(`root-${generation}`), { recursive: true, force: true });
      await rm(file(`run-${generation}`), { recursive: true, force: true });
      generation += 1;
      await writeStorageConf();
    },
    async stop() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * registries.conf for `target`: per registry, the real location replaced by a dead
 * port (the fallback) and the endpoint as the mirror. The shape users copy is in
 * ../../deploy/containers/registries.conf.
 */
function registriesConf(target: Target): string {
  const lines = ['unqualified-search-registries = []', 'short-name-mode = "disabled"'];
  for (const registry of REGISTRIES) {
    const endpoint: Endpoint = target.endpoint(registry);
    const location = `${endpoint.host}/${endpoint.prefix}`.replace(/\/+$/, '');
    lines.push(
      '[[registry]]',
      `prefix = "${registry}"`,
      `location = "${DEAD_LOCATION}"`,
      'insecure = true',
      '[[registry.mirror]]',
      `location = "${location}"`,
      `insecure = ${endpoint.tls ? 'false' : 'true'}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
