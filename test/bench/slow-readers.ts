import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { pushBlob } from '../support/images.js';
import { peakRssBytes, resetPeakRss, rssBytes } from './proc.js';
import { BLOB_BYTES } from './seed.js';
import { createSlowReaders, type SlowReaders } from './slow-clients.js';
import { startMirror, startUpstream, type Server } from './systems.js';

/**
 * `npm run bench:slow-readers`: the memory a slow client costs. READERS clients (1 000)
 * each GET one cached 100 MiB blob and read it at 1 KiB/s for SECONDS (30); the mirror's
 * RSS is reported before (idle, blob cached), at its peak, and after the clients left.
 * Target: peak growth under 256 MiB over idle. Clients connect from READERS / 60 loopback
 * addresses (127.0.1.x), as many machines would, each under `listen.maxRequestsPerClient`.
 * Not part of `npm test`; prints its figures.
 *
 *   BENCH_READERS (1000)  BENCH_SECONDS (30)  BENCH_READ_BYTES_PER_SECOND (1024)
 */
const env = process.env;
const READERS = Number(env['BENCH_READERS'] ?? 1000);
const SECONDS = Number(env['BENCH_SECONDS'] ?? 30);
const READ_BYTES_PER_SECOND = Number(env['BENCH_READ_BYTES_PER_SECOND'] ?? 1024);
const MiB = 1024 * 1024;

const log = (line: string): void => void process.stdout.write(`${line}\n`);

describe('slow readers', () => {
  it('holds memory bounded with 1 000 clients at 1 KiB/s', { timeout: (SECONDS + 240) * 1000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-bench-slow-'));
    const servers: Server[] = [];
    let readers: SlowReaders | undefined;
    try {
      const upstream = await startUpstream(dir);
      servers.push(upstream);
      const digest = await pushBlob(upstream.url, 'bench/warm', { seed: 'bench-warm', size: BLOB_BYTES });
      const ours = await startMirror(dir, upstream.url, { name: 'ours', storeDir: join(dir, 'store') });
      servers.push(ours);
      const path = `/v2/bench/warm/blobs/${digest}`;
      const warm = await request(`${ours.url}${path}`);
      await warm.body.dump();
      expect(warm.statusCode).toBe(200);
      // Readers are cache hits: wait until the fill has committed (verify, fsync, rename).
      await committed(ours.url);

      const rssBefore = await rssBytes([ours.pid]);
      await resetPeakRss([ours.pid]);
      readers = createSlowReaders(Number(new URL(ours.url).port), path);
      await readers.open(READERS);
      const statuses = readers.statuses();
      log(`bench: ${READERS} readers connected; statuses ${JSON.stringify(statuses)}`);
      const rssConnected = await rssBytes([ours.pid]);
      log(`bench: all connected: ${await heapFigures(ours.url)}`);

      await readers.readSlowly(SECONDS, READ_BYTES_PER_SECOND);
      const peak = await peakRssBytes([ours.pid]);
      const rssDuring = await rssBytes([ours.pid]);
      log(`bench: at the end: ${await heapFigures(ours.url)}`);
      const read = readers.readBytes();
      readers.destroy();
      await idle(ours.url);
      const rssAfter = await rssBytes([ours.pid]);

      const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;
      log(`bench: ${READERS} readers × ${SECONDS} s at ${READ_BYTES_PER_SECOND} B/s; ${mib(read)} read in all`);
      log(
        `bench: mirror RSS before ${mib(rssBefore)}, all connected ${mib(rssConnected)}, at the end ${mib(rssDuring)}, peak ${mib(peak)}, after ${mib(rssAfter)}`,
      );
      log(`bench: peak growth over idle ${mib(peak - rssBefore)} (target < 256 MiB): ${peak - rssBefore < 256 * MiB ? 'met' : 'MISSED'}`);
      expect(statuses[200]).toBe(READERS);
    } finally {
      readers?.destroy();
      for (const server of servers.reverse()) await server.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** Waits until the mirror answers again with the readers gone, plus a second for their streams to close. */
async function idle(url: string): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const res = await request(`${url}/healthz`);
  await res.body.dump();
}

/** Resolves once the mirror counts a committed fill; throws after 60 s. */
async function committed(url: string): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const res = await request(`${url}/metrics`);
    if (/^oci_mirror_fills_total\{result="committed"\} [1-9]/m.test(await res.body.text())) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the warm blob was not committed within 60 s');
}

/** The mirror's own view of its memory (prom-client's process metrics): heap and buffers outside it. */
async function heapFigures(url: string): Promise<string> {
  const res = await request(`${url}/metrics`);
  const text = await res.body.text();
  const figure = (name: string): string => {
    const value = Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
    return `${name.replace('nodejs_', '')} ${(value / 1024 / 1024).toFixed(1)} MiB`;
  };
  const outcomes = [...text.matchAll(/^oci_mirror_requests_total\{kind="blob",outcome="(\w+)"\} (\d+)/gm)].map((m) => `${m[1]} ${m[2]}`);
  // prom-client's default metrics, which /metrics serves without a prefix.
  const heap = ['nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes'].map(figure);
  return [...heap, `blob requests: ${outcomes.join(', ')}`].join(', ');
}
