import { randomBytes } from 'node:crypto';
import { get, type IncomingMessage } from 'node:http';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, gatedBlob, servedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { fetchHashed } from '../support/http.js';
import { startMirrorProcess } from '../support/mirror.js';
import { freePort } from '../support/ports.js';
import { tempFiles } from '../support/store.js';

const MiB = 1024 * 1024;

/** How a response ended, as events: a clean end, or a broken transfer. */
interface Transfer {
  readonly response: IncomingMessage;
  readonly settled: Promise<{ ended: boolean; broken: boolean; bytes: number }>;
}

/** A GET whose body is not read until `settled` is awaited after `resume()`: a client that reads slowly. */
function slowGet(url: string): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const req = get(url, (response) => {
      response.pause();
      const settled = new Promise<{ ended: boolean; broken: boolean; bytes: number }>((done) => {
        let bytes = 0;
        let ended = false;
        let broken = false;
        response.on('data', (chunk: Buffer) => (bytes += chunk.length));
        response.on('end', () => (ended = true));
        response.on('aborted', () => (broken = true));
        response.on('error', () => (broken = true));
        response.on('close', () => done({ ended, broken, bytes }));
      });
      resolve({ response, settled });
    });
    req.on('error', reject);
  });
}

/** Every blob in the store holds the bytes its name says. */
async function storedBlobsAreWhole(storeDir: string): Promise<string[]> {
  const root = join(storeDir, 'blobs', 'sha256');
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  const digests: string[] = [];
  for (const entry of entries.filter((e) => e.isFile())) {
    const digest = `sha256:${entry.name}`;
    expect(digestOf(await readFile(join(entry.parentPath, entry.name))), 'a stored blob is whole').toBe(digest);
    digests.push(digest);
  }
  return digests;
}

describe('shutdown within listen.drainTimeout', () => {
  let upstream: FakeUpstream;
  let work: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    work = await mkdtemp(join(tmpdir(), 'oci-mirror-shutdown-'));
  });

  afterAll(async () => {
    await upstream?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('SIGTERM ends a slow download and a stuck fill as broken transfers, exits, and leaves no partial blob', async () => {
    const cached = randomBytes(32 * MiB);
    const stuck = randomBytes(4 * MiB);
    const gate = gatedBlob(stuck, MiB);
    upstream.setBlob(digestOf(cached), servedBlob(cached));
    upstream.setBlob(digestOf(stuck), gate.handler);
    const storeDir = join(work, 'store');
    const mirror = await startMirrorProcess(
      {
        upstreams: { 'docker.io': { url: upstream.url, library: true } },
        upstreamDefaults: { retries: 0 },
        listen: { drainTimeout: '1s' },
      },
      await freePort(),
      { storeDir },
    );
    try {
      const blobUrl = (digest: string): string => `${mirror.url}/v2/library/app/blobs/${digest}`;
      expect((await fetchHashed(blobUrl(digestOf(cached)))).sha256).toBe(digestOf(cached));
      // A client that never reads holds the response open: the kernel buffers fill and the mirror waits on it.
      const slow = await slowGet(blobUrl(digestOf(cached)));
      const filling = await slowGet(blobUrl(digestOf(stuck)));
      await gate.started;

      process.kill(mirror.pid, 'SIGTERM');
      const code = await Promise.race([
        mirror.exited,
        new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 30_000).unref()),
      ]);
      expect(code, mirror.output().slice(-2000)).toBe(0);
      expect(mirror.output()).toContain('drain time is over');

      slow.response.resume();
      filling.response.resume();
      const [slowEnd, fillingEnd] = await Promise.all([slow.settled, filling.settled]);
      expect(slowEnd).toMatchObject({ ended: false, broken: true });
      expect(slowEnd.bytes).toBeLessThan(cached.length);
      expect(fillingEnd).toMatchObject({ ended: false, broken: true });
      expect(fillingEnd.bytes).toBeLessThan(stuck.length);

      // The fill never finished: its blob is not in the store and its spool is gone. At most its
      // fill record is left under tmp/fills/, which the next process on the store sweeps.
      expect(await storedBlobsAreWhole(storeDir)).toEqual([digestOf(cached)]);
      expect((await tempFiles(storeDir)).filter((f) => !f.startsWith('fills/'))).toEqual([]);
    } finally {
      gate.finish();
      await mirror.stop();
    }
  });
});
