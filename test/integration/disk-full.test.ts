import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { digestOf, gatedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';
import { tempFiles } from '../support/store.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/**
 * A store on a small tmpfs of its own, filled up by the test: the mirror must keep
 * serving (relaying from upstream without caching), store nothing partial, say
 * `degraded` on /readyz and count the failures. Needs root for `mount`, as CI has.
 */
describe('a full disk', () => {
  let mountDir: string;
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;

  async function mountStore(sizeMiB: number, inodes = 100_000): Promise<string> {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,nr_inodes=${inodes}`, 'tmpfs', mountDir]);
    return join(mountDir, 'store');
  }

  /** Uses up every inode left: no file or directory can be created, not even a lock. */
  async function exhaustInodes(): Promise<void> {
    const dir = join(mountDir, 'inodes');
    await mkdir(dir);
    for (let i = 0; ; i++) {
      const created = await writeFile(join(dir, String(i)), '').then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOSPC') return false;
          throw err;
        },
      );
      if (!created) return;
    }
  }

  /** Takes the store's file system until about `leaveBytes` are free (or none, if the mirror writes meanwhile). */
  async function fillDisk(leaveBytes: number): Promise<void> {
    const fs = await statfs(mountDir);
    const target = fs.bavail * fs.bsize - leaveBytes;
    const filler = await open(join(mountDir, 'filler'), 'a');
    try {
      for (let written = 0; written < target;) {
        const chunk = Buffer.alloc(Math.min(MiB, target - written));
        const ok = await filler.write(chunk).then(
          () => true,
          (err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOSPC') return false;
            throw err;
          },
        );
        if (!ok) break;
        written += chunk.length;
      }
    } finally {
      await filler.close();
    }
  }

  beforeEach(async () => {
    mountDir = await mkdtemp(join(tmpdir(), 'oci-mirror-tmpfs-'));
    upstream = await startFakeUpstream();
  });

  afterEach(async () => {
    await mirror?.runtime.mirror.drain();
    await mirror?.stop();
    await upstream.stop();
    await run('umount', [mountDir]).catch(() => undefined);
    await rm(mountDir, { recursive: true, force: true });
  });

  async function start(sizeMiB: number, inodes?: number): Promise<void> {
    const storeDir = await mountStore(sizeMiB, inodes);
    mirror = await startMirror(
      {
        upstreams: { 'fake.test': { url: upstream.url } },
        upstreamDefaults: { retries: 0, timeouts: { connect: '2s', headers: '5s', body: '5s' } },
        store: { maxSize: '10GiB' },
      },
      { storeDir },
    );
  }

  async function readyz(): Promise<{ status: number; body: { status: string; detail?: string } }> {
    const res = await request(`${mirror.url}/readyz`);
    return { status: res.statusCode, body: (await res.body.json()) as { status: string; detail?: string } };
  }

  async function counter(name: 'cacheWriteFailures' | 'fills', label?: string): Promise<number> {
    const metric = await mirror.runtime.metrics[name].get();
    return metric.values.filter((v) => label === undefined || v.labels.result === label).reduce((sum, v) => sum + v.value, 0);
  }

  it('relays a blob that does not fit, stores nothing, and reports degraded until a write succeeds', async () => {
    await start(16);
    expect((await readyz()).body.status).toBe('ready');
    const body = randomBytes(6 * MiB);
    const digest = digestOf(body);
    upstream.setBlob(digest, (_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    });
    await fillDisk(2 * MiB);

    const pulled = await fetchHashed(`${mirror.url}/v2/org/app/blobs/${digest}`);
    expect(pulled.status).toBe(200);
    expect(pulled.sha256).toBe(digest);
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBeUndefined();
    expect(await tempFiles(mirror.storeDir)).toEqual([]);
    expect(await counter('fills', 'relayed')).toBe(1);
    expect(await counter('cacheWriteFailures')).toBeGreaterThanOrEqual(1);
    const degraded = await readyz();
    expect(degraded.status).toBe(200);
    expect(degraded.body.status).toBe('degraded');
    expect(degraded.body.detail).toContain('ENOSPC');

    // The same pull again still works (a second relay), and each is its own upstream GET.
    const again = await fetchHashed(`${mirror.url}/v2/org/app/blobs/${digest}`);
    expect(again.sha256).toBe(digest);
    expect(upstream.hits.filter((h) => h.method === 'GET' && h.path.endsWith(digest))).toHaveLength(2);
  });

  it('switches a fill to relaying when the disk fills up mid-blob: the client gets every verified byte', async () => {
    await start(96);
    const body = randomBytes(24 * MiB);
    const digest = digestOf(body);
    const gated = gatedBlob(body, 4 * MiB);
    upstream.setBlob(digest, gated.handler);

    const pulling = fetchHashed(`${mirror.url}/v2/org/app/blobs/${digest}`);
    await gated.started;
    // Something else takes the disk while the blob is being spooled.
    await fillDisk(1 * MiB);
    gated.finish();

    const pulled = await pulling;
    expect(pulled.status).toBe(200);
    expect(pulled.bytes).toBe(body.length);
    expect(pulled.sha256).toBe(digest);
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBeUndefined();
    expect(await tempFiles(mirror.storeDir)).toEqual([]);
    expect(await counter('fills', 'relayed')).toBe(1);
    expect(await counter('fills', 'committed')).toBe(0);
    expect((await readyz()).body.status).toBe('degraded');
  });

  it('evicts nothing for a blob that eviction could not make room for, and counts the relay as disk_full', async () => {
    await start(16);
    // Content the store holds (as a warm or import leaves it): ~3 MiB, far short of a 6 MiB blob plus the reserve.
    const held: string[] = [];
    for (let i = 0; i < 6; i++) {
      const content = randomBytes(512 * 1024);
      const digest = digestOf(content);
      await mirror.runtime.store.blobs.putVerified(digest as never, content);
      mirror.runtime.index.touch(digest as never, content.length);
      held.push(digest);
    }
    const body = randomBytes(6 * MiB);
    const digest = digestOf(body);
    upstream.setBlob(digest, (_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    });

    const pulled = await fetchHashed(`${mirror.url}/v2/org/app/blobs/${digest}`);
    expect(pulled.status).toBe(200);
    expect(pulled.sha256).toBe(digest);
    await mirror.runtime.mirror.drain();
    expect(mirror.runtime.index.entries).toBe(held.length);
    for (const d of held) expect(await mirror.runtime.store.blobs.stat(d as never), d).toBe(512 * 1024);
    const relays = await mirror.runtime.metrics.relays.get();
    expect(relays.values).toEqual([expect.objectContaining({ labels: { reason: 'disk_full' }, value: 1 })]);
    expect((await mirror.runtime.metrics.evictions.get()).values.reduce((sum, v) => sum + v.value, 0)).toBe(0);
    expect(await tempFiles(mirror.storeDir)).toEqual([]);
  });

  it('relays when not even a lock or a temp file can be created (no inodes left)', async () => {
    await start(128, 500);
    const body = randomBytes(2 * MiB);
    const digest = digestOf(body);
    upstream.setBlob(digest, (_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    });
    await exhaustInodes();
    const pulled = await fetchHashed(`${mirror.url}/v2/org/app/blobs/${digest}`);
    expect(pulled.status).toBe(200);
    expect(pulled.sha256).toBe(digest);
    await mirror.runtime.mirror.drain();
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBeUndefined();
    expect((await readyz()).body.status).toBe('degraded');
  });

  it('serves a manifest it cannot store, and caches again once there is room', async () => {
    await start(16);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: [] }));
    const digest = digestOf(manifest);
    upstream.setPath('org/app/manifests/v1', (_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'content-length': String(manifest.length),
        'docker-content-digest': digest,
      });
      res.end(manifest);
    });
    await fillDisk(0);
    const accept = { accept: 'application/vnd.oci.image.manifest.v1+json' };
    const pulled = await fetchHashed(`${mirror.url}/v2/org/app/manifests/v1`, { headers: accept });
    expect(pulled.status).toBe(200);
    expect(pulled.sha256).toBe(digest);
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBeUndefined();
    expect((await readyz()).body.status).toBe('degraded');

    await rm(join(mountDir, 'filler'));
    const again = await fetchHashed(`${mirror.url}/v2/org/app/manifests/v1`, { headers: accept });
    expect(again.sha256).toBe(digest);
    expect(await mirror.runtime.store.blobs.stat(digest as never)).toBe(manifest.length);
    expect((await readyz()).body.status).toBe('ready');
  });
});
