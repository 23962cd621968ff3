import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import { renderConfig } from '../support/nginx.js';
import { NGINX_BIN, launch, startMirror, type Server } from './systems.js';

/**
 * The deploy/nginx/ layouts as bench systems: `ours-front` (front.conf before a mirror in
 * front mode on ours' store, so its blobs are warm) and `ours-sharded` (sharded.conf
 * before three mirrors with stores of their own). A system's CPU is nginx's and its
 * mirrors' together.
 */
const DEPLOY_NGINX = fileURLToPath(new URL('../../deploy/nginx/', import.meta.url));

export async function startFront(dir: string, upstreamUrl: string, storeDir: string, main: string | undefined): Promise<Server> {
  const mirror = await startMirror(dir, upstreamUrl, {
    name: 'ours-front-mirror',
    storeDir,
    front: true,
    behindProxy: true,
    ...(main ? { main } : {}),
  });
  return withNginx(dir, 'ours-front', 'front.conf', { blobsDir: join(storeDir, 'blobs', 'sha256'), mirrors: [mirror.host] }, [mirror]);
}

export async function startSharded(dir: string, upstreamUrl: string, main: string | undefined): Promise<Server> {
  const replicas: Server[] = [];
  for (let i = 0; i < 3; i++) {
    const storeDir = join(dir, `ours-shard-${i}-store`);
    replicas.push(await startMirror(dir, upstreamUrl, { name: `ours-shard-${i}`, storeDir, behindProxy: true, ...(main ? { main } : {}) }));
  }
  return withNginx(dir, 'ours-sharded', 'sharded.conf', { mirrors: replicas.map((r) => r.host) }, replicas);
}

async function withNginx(
  dir: string,
  name: 'ours-front' | 'ours-sharded',
  file: string,
  paths: { blobsDir?: string; mirrors: readonly string[] },
  mirrors: readonly Server[],
): Promise<Server> {
  const port = await freePort();
  const prefix = join(dir, name);
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  await writeFile(conf, renderConfig(await readFile(join(DEPLOY_NGINX, file), 'utf8'), prefix, port, paths));
  const nginx = await launch(
    name,
    dir,
    NGINX_BIN,
    ['-p', prefix, '-c', conf, '-e', join(dir, `${name}.err.log`), '-g', 'daemon off;'],
    port,
    '/v2/',
  );
  return {
    ...nginx,
    async pids() {
      const all = await Promise.all([nginx, ...mirrors].map((s) => s.pids()));
      return all.flat();
    },
    async stop() {
      await nginx.stop();
      for (const mirror of mirrors) await mirror.stop();
    },
  };
}
