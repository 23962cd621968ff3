import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { pushBlob } from '../support/images.js';
import { peakRssBytes, resetPeakRss } from './proc.js';
import { BLOB_BYTES } from './seed.js';
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
const READERS_PER_ADDRESS = 60;
const CONNECT_BATCH = 100;
const MiB = 1024 * 1024;

const log = (line: string): void => void process.stdout.write(`${line}\n`);

interface Reader {
  readonly socket: Socket;
  /** Bytes taken off the socket so far, response head included. */
  readBytes: number;
  status: number | undefined;
}

describe('slow readers', () => {
  it('holds memory bounded with 1 000 clients at 1 KiB/s', { timeout: (SECONDS + 240) * 1000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-bench-slow-'));
    const servers: Server[] = [];
    const readers: Reader[] = [];
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

      const rssBefore = await rssBytes(ours.pid);
      await resetPeakRss([ours.pid]);
      const port = Number(new URL(ours.url).port);
      for (let i = 0; i < READERS; i += CONNECT_BATCH) {
        const batch = Array.from({ length: Math.min(CONNECT_BATCH, READERS - i) }, (_, j) => openReader(port, path, i + j));
        readers.push(...(await Promise.all(batch)));
      }
      const statuses = countBy(readers.map((r) => r.status ?? 0));
      log(`bench: ${readers.length} readers connected; statuses ${JSON.stringify(statuses)}`);
      const rssConnected = await rssBytes(ours.pid);
      log(`bench: all connected: ${await heapFigures(ours.url)}`);

      for (let second = 0; second < SECONDS; second++) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        for (const reader of readers) drain(reader, READ_BYTES_PER_SECOND);
      }
      const peak = await peakRssBytes([ours.pid]);
      const rssDuring = await rssBytes(ours.pid);
      log(`bench: at the end: ${await heapFigures(ours.url)}`);
      const read = readers.reduce((sum, r) => sum + r.readBytes, 0);
      for (const reader of readers) reader.socket.destroy();
      readers.length = 0;
      await idle(ours.url);
      const rssAfter = await rssBytes(ours.pid);

      const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;
      log(`bench: ${READERS} readers × ${SECONDS} s at ${READ_BYTES_PER_SECOND} B/s; ${mib(read)} read in all`);
      log(
        `bench: mirror RSS before ${mib(rssBefore)}, all connected ${mib(rssConnected)}, at the end ${mib(rssDuring)}, peak ${mib(peak)}, after ${mib(rssAfter)}`,
      );
      log(`bench: peak growth over idle ${mib(peak - rssBefore)} (target < 256 MiB): ${peak - rssBefore < 256 * MiB ? 'met' : 'MISSED'}`);
      expect(statuses[200]).toBe(READERS);
    } finally {
      for (const reader of readers) reader.socket.destroy();
      for (const server of servers.reverse()) await server.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** A client from 127.0.1.x that sends the GET, reads the status line, and then reads only when told. */
function openReader(port: number, path: string, index: number): Promise<Reader> {
  const localAddress = `127.0.1.${1 + Math.floor(index / READERS_PER_ADDRESS)}`;
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  const reader: Reader = { socket, readBytes: 0, status: undefined };
  socket.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    socket.once('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: mirror\r\n\r\n`));
    socket.once('close', () => reject(new Error(`reader ${index}: closed before the response head`)));
    socket.once('readable', () => {
      const head = socket.read(Math.min(socket.readableLength, 64)) as Buffer | null;
      reader.readBytes += head?.length ?? 0;
      reader.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head?.toString('latin1') ?? '')?.[1] ?? 0);
      socket.removeAllListeners('close');
      resolve(reader);
    });
  });
}

/** Takes up to `bytes` off the socket's buffer; the rest waits in it and in the kernel. */
function drain(reader: Reader, bytes: number): void {
  const chunk = (reader.socket.read(Math.min(bytes, reader.socket.readableLength)) as Buffer | null) ?? null;
  reader.readBytes += chunk?.length ?? 0;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

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
    return `${name.replace('oci_mirror_nodejs_', '')} ${(value / 1024 / 1024).toFixed(1)} MiB`;
  };
  const outcomes = [...text.matchAll(/^oci_mirror_requests_total\{kind="blob",outcome="(\w+)"\} (\d+)/gm)].map((m) => `${m[1]} ${m[2]}`);
  const heap = ['oci_mirror_nodejs_heap_size_used_bytes', 'oci_mirror_nodejs_external_memory_bytes'].map(figure);
  return [...heap, `blob requests: ${outcomes.join(', ')}`].join(', ');
}

function countBy(values: readonly number[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}
