import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { launchContainerd } from './clients/containerd.js';
import { terminate } from './process.js';

const run = promisify(execFile);

/**
 * A private containerd (own root, state, socket; no CRI),
 * with `ctr content fetch` pulling through a hosts.toml mirror. Synthetic layers are
 * not real tar.gz, so content is fetched and re-hashed rather than unpacked.
 */
export interface Containerd {
  /** certs.d/<registry>/hosts.toml sending `registry` to the mirror, falling back to a dead port. */
  mirrorRegistry(registry: string, mirrorHost: string): Promise<void>;
  /** Fetches `ref` (e.g. `docker.io/library/alpine:3.20`) through the hosts.toml mirrors. */
  fetch(ref: string): Promise<void>;
  /** sha256 of a piece of content containerd holds, as it reads it back. */
  contentDigest(digest: string): Promise<string>;
  /** The digest containerd recorded for an image. */
  imageTarget(ref: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startContainerd(): Promise<Containerd> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-containerd-'));
  const sock = join(dir, 'containerd.sock');
  const certs = join(dir, 'certs.d');
  const { child } = await launchContainerd(dir, sock, 0);
  const ctr = (...args: string[]) => run('ctr', ['-a', sock, '-n', 'test', ...args], { timeout: 120_000, maxBuffer: 1 << 26 });
  return {
    async mirrorRegistry(registry, mirrorHost) {
      await mkdir(join(certs, registry), { recursive: true });
      await writeFile(
        join(certs, registry, 'hosts.toml'),
        `server = "http://127.0.0.1:9"\n[host."http://${mirrorHost}"]\n  capabilities = ["pull", "resolve"]\n`,
      );
    },
    async fetch(ref) {
      await ctr('content', 'fetch', '--hosts-dir', certs, ref).catch((err: { stderr?: string }) => {
        throw new Error(`ctr content fetch ${ref} failed: ${err.stderr ?? (err as Error).message}`);
      });
    },
    async contentDigest(digest) {
      const { stdout } = await run('ctr', ['-a', sock, '-n', 'test', 'content', 'get', digest], {
        encoding: 'buffer',
        maxBuffer: 1 << 28,
      });
      return `sha256:${createHash('sha256').update(stdout).digest('hex')}`;
    },
    async imageTarget(ref) {
      const { stdout } = await ctr('images', 'ls');
      const line = stdout.split('\n').find((l) => l.startsWith(`${ref} `));
      return /sha256:[a-f0-9]{64}/.exec(line ?? '')?.[0] ?? '';
    },
    async stop() {
      await terminate(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
