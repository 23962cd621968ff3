import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { terminate } from './process.js';

const NGINX_BIN = '/usr/sbin/nginx';

/** Where a shipped config in deploy/nginx/ is pointed for a test. */
export interface NginxPaths {
  /** The store's blobs/sha256/ directory (front.conf's internal location). */
  readonly blobsDir?: string;
  /** `host:port` of each mirror, in order (front.conf has one, sharded.conf three). */
  readonly mirrors: readonly string[];
}

export interface NginxHandle {
  readonly url: string;
  readonly port: number;
  /** nginx's access log so far, one line per request in the config's own format. */
  accessLog(): Promise<string[]>;
  stop(): Promise<void>;
}

/**
 * A shipped config with its deployment paths replaced: a loopback port, the test's
 * store and mirrors, and pid, temp and log files inside `prefix`. `user root;` because
 * the tests run as root, whose default worker user (nobody) could not read the store.
 */
export function renderConfig(text: string, prefix: string, port: number, paths: NginxPaths): string {
  let mirror = 0;
  let out = text
    .replace(/^pid \/tmp\/nginx\.pid;/m, `user root;\npid ${join(prefix, 'nginx.pid')};`)
    .replace(/\/tmp\/nginx-([a-z-]+);/g, (_m, name: string) => `${join(prefix, name)};`)
    .replace(/access_log \/dev\/stdout/g, `access_log ${join(prefix, 'access.log')}`)
    .replace(/listen 5000;/g, `listen 127.0.0.1:${port};`)
    .replace(/server mirror(-\d)?:5000( [^;]*)?;/g, (_m, _n: string | undefined, rest: string | undefined) => {
      const host = paths.mirrors[mirror++];
      if (host === undefined) throw new Error('the config names more mirrors than the test started');
      return `server ${host}${rest ?? ''};`;
    });
  if (paths.blobsDir !== undefined)
    out = out.replace(/alias \/var\/lib\/oci-mirror\/store\/blobs\/sha256\/;/g, `alias ${paths.blobsDir}/;`);
  if (mirror !== paths.mirrors.length) throw new Error(`the config names ${mirror} mirrors, the test started ${paths.mirrors.length}`);
  return out;
}

/** `nginx -t` on a config: its exit status and what it printed. */
export function checkConfig(prefix: string, confPath: string): { status: number | null; output: string } {
  const run = spawnSync(NGINX_BIN, ['-t', '-p', prefix, '-c', confPath, '-e', 'stderr'], { encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

/** Writes a rendered config into a fresh prefix directory; returns both paths. */
export async function writeConfig(file: string, paths: NginxPaths, port: number): Promise<{ prefix: string; confPath: string }> {
  const prefix = await mkdtemp(join(tmpdir(), 'oci-mirror-nginx-'));
  await mkdir(join(prefix, 'logs'));
  const confPath = join(prefix, 'nginx.conf');
  await writeFile(confPath, renderConfig(await readFile(file, 'utf8'), prefix, port, paths));
  return { prefix, confPath };
}

/** nginx in the foreground on a loopback port, with a shipped config pointed at the test's mirrors. */
export async function startNginx(file: string, paths: NginxPaths): Promise<NginxHandle> {
  const port = await freePort();
  const { prefix, confPath } = await writeConfig(file, paths, port);
  const checked = checkConfig(prefix, confPath);
  if (checked.status !== 0) throw new Error(`nginx -t failed: ${checked.output}`);
  const child: ChildProcess = spawn(NGINX_BIN, ['-p', prefix, '-c', confPath, '-e', 'stderr', '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let errors = '';
  child.stderr?.on('data', (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-8_192)));
  await waitForPort(port, child, () => errors);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    async accessLog() {
      const text = await readFile(join(prefix, 'access.log'), 'utf8');
      return text.split('\n').filter((line) => line !== '');
    },
    async stop() {
      await terminate(child);
      await rm(prefix, { recursive: true, force: true });
    },
  };
}

async function waitForPort(port: number, child: ChildProcess, errors: () => string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${errors()}`);
    const res = await fetch(`http://127.0.0.1:${port}/nginx-probe`).catch((err: unknown) => {
      if ((err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED') return undefined;
      throw err;
    });
    if (res) {
      await res.body?.cancel();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nginx did not listen on ${port}: ${errors()}`);
}
