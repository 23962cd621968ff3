import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { freePort } from '../support/ports.js';
import { terminate } from '../support/process.js';
import { processTree } from './proc.js';

/**
 * The processes under test, each started on its own loopback port with its output in
 * files (never a pipe the bench must drain, which would cost the bench CPU during a run):
 * the upstream (a plain Distribution registry), Distribution in proxy mode, oci-mirror
 * (one process, and `--workers 2` on the same store) and nginx serving the mirror's blob
 * files straight from disk.
 */
export type SystemName = 'ours' | 'ours-w2' | 'ours-front' | 'ours-sharded' | 'distribution' | 'nginx';

export interface Server {
  /** A system, `upstream`, or a part of a system (one mirror behind a front). */
  readonly name: string;
  readonly url: string;
  /** `host:port`, as skopeo wants it. */
  readonly host: string;
  readonly pid: number;
  /** The server's processes (its primary and children), as they are now. */
  pids(): Promise<number[]>;
  stop(): Promise<void>;
}

const REGISTRY_BIN = '/usr/bin/docker-registry';
export const NGINX_BIN = '/usr/sbin/nginx';
const READY_TIMEOUT_MS = 20_000;
const live = new Set<ChildProcess>();

// A bench stopped half way (an exception, Ctrl-C) must not leave servers behind.
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Spawns `command` with stdout and stderr in files under `dir`, and waits until `readyUrl` answers. */
export async function launch(
  name: Server['name'],
  dir: string,
  command: string,
  args: readonly string[],
  port: number,
  readyPath: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Server> {
  const out = openSync(join(dir, `${name}.out.log`), 'a');
  const err = openSync(join(dir, `${name}.err.log`), 'a');
  const child = spawn(command, args, { stdio: ['ignore', out, err], env });
  closeSync(out);
  closeSync(err);
  live.add(child);
  child.once('exit', () => live.delete(child));
  const url = `http://127.0.0.1:${port}`;
  await waitReady(child, `${url}${readyPath}`, join(dir, `${name}.err.log`));
  return {
    name,
    url,
    host: `127.0.0.1:${port}`,
    pid: child.pid ?? 0,
    pids: () => processTree(child.pid ?? 0),
    stop: () => terminate(child),
  };
}

async function waitReady(child: ChildProcess, url: string, errLog: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    const answered = await request(url)
      .then(async (res) => {
        await res.body.dump();
        return res.statusCode < 500;
      })
      .catch(() => false);
    if (answered) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const log = await readFile(errLog, 'utf8').catch(() => '');
  child.kill('SIGKILL');
  throw new Error(`${child.spawnfile} did not answer ${url}: ${log.slice(-2000)}`);
}

/** The upstream, with Distribution's access log (stdout) kept: it is how upstream traffic is counted. */
export interface Upstream extends Server {
  readonly accessLog: string;
}

export async function startUpstream(dir: string): Promise<Upstream> {
  const port = await freePort();
  const config = join(dir, 'upstream.yml');
  await writeFile(config, registryConfig(port, join(dir, 'upstream-data'), [], ['  delete:', '    enabled: true']));
  const server = await launch('upstream', dir, REGISTRY_BIN, ['serve', config], port, '/v2/');
  return { ...server, accessLog: join(dir, 'upstream.out.log') };
}

/** CNCF Distribution in proxy mode (`proxy.remoteurl`), with its own storage and default logging. */
export async function startDistributionProxy(dir: string, upstreamUrl: string): Promise<Server> {
  const port = await freePort();
  const config = join(dir, 'distribution.yml');
  await writeFile(
    config,
    registryConfig(
      port,
      join(dir, 'distribution-data'),
      ['proxy:', `  remoteurl: ${upstreamUrl}`],
      ['  cache:', '    blobdescriptor: inmemory'],
    ),
  );
  return launch('distribution', dir, REGISTRY_BIN, ['serve', config], port, '/v2/');
}

function registryConfig(port: number, root: string, extra: readonly string[], storage: readonly string[]): string {
  return [
    'version: 0.1',
    'log:',
    '  level: info',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${root}`,
    ...storage,
    'http:',
    `  addr: 127.0.0.1:${port}`,
    ...extra,
    '',
  ].join('\n');
}

/** The upstream names the mirror is configured with; requests name no registry, so `bench.local` serves them. */
export const FRESH_UPSTREAM = 'bench.local';
/** Reached by the path prefix `/v2/stale.local/…`: the same upstream with `freshFor: 0s`, every tag pull past the window. */
export const STALE_UPSTREAM = 'stale.local';

export interface MirrorOptions {
  readonly name: string;
  readonly storeDir: string;
  readonly workers?: number;
  /** Directory for `--cpu-prof` profiles (written when the process exits). */
  readonly cpuProfDir?: string;
  /** The mirror's entry point; default the repository's `dist/main.js`. */
  readonly main?: string;
  /** Front mode (config `front.mode: "nginx"`): stored blobs are answered with X-Accel-Redirect. */
  readonly front?: boolean;
  /** Behind nginx (front or sharded): clients are counted by the address nginx appended (`listen.trustedProxies`). */
  readonly behindProxy?: boolean;
}

const BUILT_MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

/** The built mirror (`dist/main.js serve`), logging at its default level (info) to a file. */
export async function startMirror(dir: string, upstreamUrl: string, options: MirrorOptions): Promise<Server> {
  const port = await freePort();
  const config = join(dir, `${options.name}.config.json`);
  await writeFile(
    config,
    JSON.stringify({
      listen: { host: '127.0.0.1', port, ...(options.behindProxy ? { trustedProxies: 1 } : {}) },
      store: { path: options.storeDir },
      log: { level: 'info' },
      defaultUpstream: FRESH_UPSTREAM,
      // A tag pulled in the bench stays fresh for the whole run (the default is 5m).
      upstreams: { [FRESH_UPSTREAM]: { url: upstreamUrl, freshFor: '1h' }, [STALE_UPSTREAM]: { url: upstreamUrl, freshFor: '0s' } },
      ...(options.front ? { front: { mode: 'nginx' } } : {}),
    }),
  );
  const node = [
    ...(options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : []),
    ...(process.env['BENCH_TRACE_GC'] ? ['--trace-gc'] : []),
    ...(process.env['BENCH_NODE_FLAGS']?.split(' ').filter((f) => f !== '') ?? []),
  ];
  const workers = options.workers ? ['--workers', String(options.workers)] : [];
  const server = await launch(
    options.name,
    dir,
    process.execPath,
    [...node, options.main ?? BUILT_MAIN, 'serve', '--config', config, ...workers],
    port,
    '/v2/',
  );
  if (options.workers) await waitForWorkers(server, join(dir, `${options.name}.out.log`), options.workers);
  return server;
}

/** `--workers N` answers as soon as one worker listens; measure only once all N do (each logs it). */
async function waitForWorkers(server: Server, logFile: string, count: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const log = await readFile(logFile, 'utf8').catch(() => '');
    if (log.split('mirror listening').length - 1 >= count) return;
    if (Date.now() > deadline) throw new Error(`${server.name}: fewer than ${count} workers listen`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * nginx serving blob and manifest files straight from the mirror's store with sendfile:
 * the physical floor for a warm hit. It speaks just enough of the API for a GET by digest.
 */
export async function startNginx(dir: string, storeDir: string): Promise<Server> {
  const port = await freePort();
  const prefix = join(dir, 'nginx');
  await mkdir(join(prefix, 'tmp'), { recursive: true });
  const blobs = join(storeDir, 'blobs', 'sha256');
  const digestPath = '(([0-9a-f]{2})[0-9a-f]{62})$';
  const conf = [
    'daemon off;',
    'worker_processes auto;',
    // As root, workers would switch to nobody, who cannot read a 0700 temp dir.
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    `pid ${join(prefix, 'nginx.pid')};`,
    `error_log ${join(dir, 'nginx.err.log')} warn;`,
    // As deploy/nginx/front.conf: room for the slow-readers scenario's clients in one worker.
    'events { worker_connections 4096; }',
    'http {',
    `  access_log ${join(dir, 'nginx.access.log')};`,
    '  sendfile on;',
    '  tcp_nopush on;',
    '  keepalive_requests 1000000;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(prefix, 'tmp', t)};`),
    '  types {}',
    '  default_type application/octet-stream;',
    '  server {',
    `    listen 127.0.0.1:${port};`,
    `    location ~ "^/v2/.+/blobs/sha256:${digestPath}" { alias ${blobs}/$2/$1; }`,
    `    location ~ "^/v2/.+/manifests/sha256:${digestPath}" {`,
    '      default_type application/vnd.oci.image.manifest.v1+json;',
    `      alias ${blobs}/$2/$1;`,
    '    }',
    "    location = /v2/ { return 200 '{}'; }",
    '  }',
    '}',
    '',
  ].join('\n');
  await writeFile(join(prefix, 'nginx.conf'), conf);
  return launch('nginx', dir, NGINX_BIN, ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(dir, 'nginx.err.log')], port, '/v2/');
}

/** One line of Distribution's access log (Apache combined format). */
export interface AccessEntry {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly bytes: number;
}

const ACCESS_LINE = /"([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) (\d+|-)/;

/** Where the access log ends now; `accessSince` reads what was appended after it. */
export async function accessMark(upstream: Upstream): Promise<number> {
  return (await stat(upstream.accessLog)).size;
}

/**
 * Upstream requests logged since `mark`. Distribution logs a request when its response
 * ends, so the log is read once it has been quiet for a moment (bounded).
 */
export async function accessSince(upstream: Upstream, mark: number): Promise<AccessEntry[]> {
  let size = await accessMark(upstream);
  for (let quiet = 0, waited = 0; quiet < 4 && waited < 100; waited++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const now = await accessMark(upstream);
    quiet = now === size ? quiet + 1 : 0;
    size = now;
  }
  const text = (await readFile(upstream.accessLog)).subarray(mark).toString('utf8');
  const entries: AccessEntry[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS_LINE.exec(line);
    if (m) entries.push({ method: m[1] as string, path: m[2] as string, status: Number(m[3]), bytes: m[4] === '-' ? 0 : Number(m[4]) });
  }
  return entries;
}
