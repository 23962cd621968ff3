import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchHashed } from '../support/http.js';
import { pushBlob } from '../support/images.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror.js';
import { checkConfig, startNginx, writeConfig, type NginxHandle } from '../support/nginx.js';
import { freePort } from '../support/ports.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';

const SHARDED_CONF = join(import.meta.dirname, '../../deploy/nginx/sharded.conf');
const REPO = 'library/sharded-synth';
const BLOBS = 12;

/**
 * deploy/nginx/sharded.conf in front of three mirror processes with their own stores:
 * each digest lives on one replica, and a dead replica's digests move, nothing else.
 */
describe('digest-sharded replicas behind nginx', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let replicas: MirrorProcess[];
  let nginx: NginxHandle;
  let blobs: { digest: string; size: number }[];

  beforeAll(async () => {
    registry = await startRegistry();
    blobs = [];
    for (let i = 0; i < BLOBS; i++) {
      const size = (64 << 10) + i * 4096;
      blobs.push({ digest: await pushBlob(registry.url, REPO, { seed: `sharded-${i}`, size }), size });
    }
    blobs.push({ digest: await pushBlob(registry.url, REPO, { seed: 'sharded-big', size: 8 << 20 }), size: 8 << 20 });
    proxy = await startCountingProxy(registry.url);
    const input = { upstreams: { 'docker.io': { url: proxy.url, library: true } }, defaultUpstream: 'docker.io' };
    replicas = [];
    for (let i = 0; i < 3; i++) replicas.push(await startMirrorProcess(input, await freePort()));
    nginx = await startNginx(SHARDED_CONF, { mirrors: replicas.map((r) => r.host) });
  });

  afterAll(async () => {
    await nginx?.stop();
    for (const replica of replicas ?? []) await replica.stop();
    await proxy?.stop();
    await registry?.dispose();
  });

  const upstreamGets = (digest?: string): number =>
    proxy.count({ method: 'GET', kind: 'blob', ...(digest === undefined ? {} : { pathIncludes: digest }) });
  const exists = (file: string): Promise<boolean> =>
    access(file).then(
      () => true,
      (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? false : Promise.reject(err)),
    );
  /** The replicas whose store holds `digest`, once one has committed it (a client may finish first). */
  const holders = async (digest: string): Promise<number[]> => {
    for (let attempt = 0; ; attempt++) {
      const found: number[] = [];
      for (const [i, replica] of replicas.entries()) {
        if (await exists(join(replica.storeDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7)))) found.push(i);
      }
      if (found.length > 0 || attempt === 100) return found;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const pullAll = async (query = '', repo = REPO): Promise<void> => {
    const results = await Promise.all(blobs.map(({ digest }) => fetchHashed(`${nginx.url}/v2/${repo}/blobs/${digest}${query}`)));
    expect(results.map((r) => [r.status, r.sha256])).toEqual(blobs.map(({ digest }) => [200, digest]));
  };

  it('passes nginx -t', async () => {
    const { prefix, confPath } = await writeConfig(SHARDED_CONF, { mirrors: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] }, 5000);
    expect(checkConfig(prefix, confPath)).toMatchObject({ status: 0 });
  });

  it('fetches one blob once for 50 concurrent cold clients', async () => {
    const big = blobs.at(-1);
    if (!big) throw new Error('no blob');
    const results = await Promise.all(Array.from({ length: 50 }, () => fetchHashed(`${nginx.url}/v2/${REPO}/blobs/${big.digest}`)));
    expect(results.every((r) => r.status === 200 && r.sha256 === big.digest && r.bytes === big.size)).toBe(true);
    expect(upstreamGets(big.digest)).toBe(1);
    expect(await holders(big.digest)).toHaveLength(1);
  });

  it('places each digest on one replica, whatever repository or ns asks for it', async () => {
    await pullAll();
    await pullAll('?ns=docker.io');
    // Served from the one store that holds it: an open upstream's blob is not tied to a repository.
    await pullAll('', 'team/elsewhere-synth');
    const placed = await Promise.all(blobs.map(({ digest }) => holders(digest)));
    expect(placed.every((on) => on.length === 1)).toBe(true);
    // Three replicas share the blobs: the hash spreads them.
    expect(new Set(placed.flat()).size).toBeGreaterThan(1);
    for (const { digest } of blobs) expect(upstreamGets(digest)).toBe(1);
  });

  it('moves only a dead replica’s digests', async () => {
    const placed = await Promise.all(blobs.map(({ digest }) => holders(digest)));
    const counts = [0, 1, 2].map((i) => placed.filter((on) => on[0] === i).length);
    const dead = counts.indexOf(Math.max(...counts));
    const before = upstreamGets();
    await replicas[dead]?.kill();
    await pullAll();
    await pullAll();
    expect(upstreamGets() - before).toBe(counts[dead]);
    for (const [i, { digest }] of blobs.entries()) {
      const expected = placed[i]?.[0] === dead ? 2 : 1;
      expect(upstreamGets(digest)).toBe(expected);
    }
  });
});
