import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { terminate, waitForOutput } from '../process.js';
import { describeFailure, refOf, type PullClient, type PullRequest, type Pulled } from './client.js';

const run = promisify(execFile);

/** Debian's CLI (20.10); `/usr/local/bin/docker` may be another version that comes first in PATH. */
const DOCKER_CLI = '/usr/bin/docker';
/** Where dockerd finds the mirror inside its network namespace (any port: the namespace is private). */
const INSIDE = '127.0.0.1:5000';

/**
 * A private dockerd: own data/exec root and socket,
 * `--iptables=false --bridge=none --storage-driver=vfs`, in a network namespace that
 * has only `lo`, so its unswitchable fallback to registry-1.docker.io fails locally.
 * `registry-mirrors` is `http://127.0.0.1:5000` inside; there a socat forwards each
 * connection over a unix socket to a Node bridge outside, which dials the current
 * target (the mirror, or an upstream directly). Retargeting needs no dockerd restart.
 */
export async function startDocker(): Promise<PullClient> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-dockerd-'));
  const bridgeSocket = join(dir, 'bridge.sock');
  const apiSocket = join(dir, 'docker.sock');
  const bridge = await startBridge(bridgeSocket);
  const namespace = spawn(
    'unshare',
    [
      '--net',
      'sh',
      '-c',
      `ip link set lo up && exec socat -d -d TCP-LISTEN:${INSIDE.split(':')[1]},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:${bridgeSocket}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const daemon: { child?: ChildProcess } = {};
  const stop = async (): Promise<void> => {
    if (daemon.child) await terminate(daemon.child, 15_000);
    await terminate(namespace);
    await new Promise((resolve) => bridge.server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitForOutput(namespace, 'listening on');
    await writeFile(join(dir, 'daemon.json'), JSON.stringify({ 'registry-mirrors': [`http://${INSIDE}`] }));
    await mkdir(join(dir, 'cli'));
    const child = spawn(
      'nsenter',
      [
        '-t',
        String(namespace.pid),
        '-n',
        '--',
        'dockerd',
        '--config-file',
        join(dir, 'daemon.json'),
        '--debug',
        '--iptables=false',
        '--ip-forward=false',
        '--ip-masq=false',
        '--bridge=none',
        '--storage-driver=vfs',
        '--data-root',
        join(dir, 'data'),
        '--exec-root',
        join(dir, 'exec'),
        '--pidfile',
        join(dir, 'docker.pid'),
        '--host',
        `unix://${apiSocket}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    daemon.child = child;
    let log = '';
    let partialLine = '';
    // dockerd recovers from a cut blob transfer by itself (a 5 s pause, then `Range`),
    // so a pull can succeed over a broken transfer: count those retries to catch it.
    const retried: string[] = [];
    const keep = (chunk: Buffer): void => {
      const text = chunk.toString();
      log = (log + text).slice(-65_536);
      const lines = (partialLine + text).split('\n');
      partialLine = lines.pop() ?? '';
      retried.push(...lines.filter((line) => line.includes('Download failed, retrying')));
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    await waitForOutput(child, 'API listen on', 60_000);
    const docker = async (...args: string[]): Promise<string> => {
      try {
        const { stdout } = await run(DOCKER_CLI, ['-H', `unix://${apiSocket}`, ...args], {
          env: { ...process.env, DOCKER_CONFIG: join(dir, 'cli') },
          timeout: 180_000,
          maxBuffer: 1 << 24,
        });
        return stdout;
      } catch (err) {
        const failure = describeFailure(`docker ${args.join(' ')}`, err);
        failure.message += `\n--- dockerd log (end) ---\n${log.slice(-3000)}`;
        throw failure;
      }
    };
    const version = (await docker('version', '--format', '{{.Server.Version}}')).trim();
    return {
      name: 'docker',
      version,
      platforms: 'host',
      async pull(request, target) {
        const endpoint = target.endpoint(request.registry);
        bridge.targetHost = endpoint.host;
        const name = dockerName(request, endpoint.prefix);
        const retriesBefore = retried.length;
        await docker('pull', '--quiet', name);
        if (retried.length > retriesBefore)
          throw new Error(`docker pull ${name} had to retry a download: ${retried.slice(retriesBefore).join('\n')}`);
        return inspect(docker, name);
      },
      async reset() {
        const ids = (await docker('image', 'ls', '--all', '--quiet', '--no-trunc')).split('\n').filter(Boolean);
        if (ids.length > 0) await docker('image', 'rm', '--force', ...new Set(ids));
        const left = (await docker('image', 'ls', '--all', '--quiet')).trim();
        if (left) throw new Error(`docker still holds images after reset: ${left}`);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The name a Docker user pulls: Docker Hub images by their Hub name (the daemon sends
 * them to `registry-mirrors`), other registries by the mirror's own host and a path
 * prefix (`127.0.0.1:5000/ghcr.io/team/app:1`), since Docker mirrors only Docker Hub.
 */
function dockerName(request: PullRequest, prefix: string): string {
  if (request.registry === 'docker.io' && request.dockerName) {
    return request.reference.startsWith('sha256:') ? `${request.dockerName.split(':')[0]}@${request.reference}` : request.dockerName;
  }
  return refOf(`${INSIDE}/${prefix}${request.repository}`, request.reference);
}

/** Image ID (the config digest) and the digest recorded for `name`'s repository. */
async function inspect(docker: (...args: string[]) => Promise<string>, name: string): Promise<Pulled> {
  const out = await docker('image', 'inspect', '--format', '{{json .}}', name);
  const image = JSON.parse(out) as { Id: string; RepoDigests: string[] | null };
  // Docker records Hub names in their familiar form: `library/busybox` as `busybox`.
  const repository = name.replace(/[@:][^/]*$/, '').replace(/^library\//, '');
  const recorded = (image.RepoDigests ?? []).filter((d) => d.startsWith(`${repository}@`));
  if (recorded.length !== 1)
    throw new Error(`${name}: expected one RepoDigest for ${repository}, got ${JSON.stringify(image.RepoDigests)}`);
  return { topDigest: recorded[0]!.slice(recorded[0]!.indexOf('@') + 1), configDigests: [image.Id] };
}

/** A unix socket whose every connection is piped to TCP `targetHost` (read at connect time). */
async function startBridge(path: string): Promise<{ server: Server; targetHost: string }> {
  const state = { server: undefined as unknown as Server, targetHost: '' };
  // Half-open sockets: when one side finishes (the registry closes after its response),
  // only that direction ends; the other drains. Auto-closing both at the first FIN
  // would drop response bytes still buffered for dockerd (a cut blob, a 5 s retry).
  state.server = createServer({ allowHalfOpen: true }, (inside) => {
    const [host, port] = state.targetHost.split(':');
    const outside = connect({ port: Number(port), host: host ?? '127.0.0.1', allowHalfOpen: true });
    const fail = (): void => {
      inside.destroy();
      outside.destroy();
    };
    pipeline(inside, outside).catch(fail);
    pipeline(outside, inside).catch(fail);
  });
  await new Promise<void>((resolve, reject) => {
    state.server.once('error', reject);
    state.server.listen(path, resolve);
  });
  return state;
}
