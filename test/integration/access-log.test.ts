import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { digestOf, gatedBlob, resetAfter, servedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { fetchOutcome } from '../support/http.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';

/**
 * The access log tells how each blob transfer ended: the bytes the client's socket
 * took, whether the body was complete, and why not; served_bytes_total says the same.
 */
const SIZE = 1024 * 1024;
const FIRST = 64 * 1024;

type Line = Record<string, unknown>;

describe('access log of blob transfers', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;
  const lines: Line[] = [];
  const blobLines = (): Line[] => lines.filter((l) => l['msg'] === 'request' && l['kind'] === 'blob');

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Line);
        done();
      },
    });
    mirror = await startMirror({ upstreams: { 'fake.test': { url: upstream.url } } }, { log: createLogger('info', sink) });
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
  });

  /** Waits until the access log has `count` blob lines (a line is written when its response closes). */
  async function blobLinesWhen(count: number): Promise<Line[]> {
    for (let i = 0; i < 500 && blobLines().length < count; i++) await new Promise((r) => setTimeout(r, 10));
    return blobLines();
  }

  it('logs a full transfer with every byte, completed', async () => {
    const body = randomBytes(SIZE);
    upstream.setBlob(digestOf(body), servedBlob(body));
    for (const outcome of ['miss', 'hit']) {
      const got = await fetchOutcome(`${mirror.url}/v2/org/app/blobs/${digestOf(body)}`);
      expect(got.kind === 'complete' && got.body.equals(body)).toBe(true);
      const line = (await blobLinesWhen(outcome === 'miss' ? 1 : 2)).at(-1);
      expect(line).toMatchObject({ outcome, status: 200, bytes: SIZE, completed: true });
      expect(line).not.toHaveProperty('reason');
    }
  });

  it('logs a client that goes away mid-body as incomplete, with the bytes it got and the status it was sent', async () => {
    const body = randomBytes(SIZE);
    const gated = gatedBlob(body, FIRST);
    upstream.setBlob(digestOf(body), gated.handler);
    const before = blobLines().length;
    const received = await readThenLeave(Number(new URL(mirror.url).port), `/v2/org/app/blobs/${digestOf(body)}`, 1);
    const lines = await blobLinesWhen(before + 1);
    gated.finish();
    expect(lines).toHaveLength(before + 1);
    const line = lines.at(-1);
    expect(line).toMatchObject({ status: 200, completed: false, reason: 'client' });
    expect(line?.['bytes']).toBeGreaterThanOrEqual(received);
    expect(line?.['bytes']).toBeLessThan(SIZE);
  });

  it('logs an upstream that fails mid-body as incomplete, for the upstream', async () => {
    const body = randomBytes(SIZE);
    upstream.setBlob(digestOf(body), resetAfter(body, FIRST));
    const before = blobLines().length;
    const got = await fetchOutcome(`${mirror.url}/v2/org/app/blobs/${digestOf(body)}`);
    expect(got.kind).toBe('broken');
    const line = (await blobLinesWhen(before + 1)).at(-1);
    expect(line).toMatchObject({ status: 200, completed: false, reason: 'upstream' });
    expect(line?.['bytes']).toBeLessThan(SIZE);
  });

  it('sums to served_bytes_total', async () => {
    const text = (await mirror.runtime.app.inject({ method: 'GET', url: '/metrics' })).body;
    const served = [...text.matchAll(/^oci_mirror_served_bytes_total\{source="\w+"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    const logged = blobLines().reduce((sum, l) => sum + Number(l['bytes']), 0);
    expect(served).toBeGreaterThan(2 * SIZE);
    expect(logged).toBe(served);
  });
});

/** GETs `path` on a bare socket, reads at least `bytes` of body, then destroys the socket; resolves with the body bytes read. */
function readThenLeave(port: number, path: string, bytes: number): Promise<number> {
  const socket = connect(port, '127.0.0.1');
  let received = Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const headEnd = received.indexOf('\r\n\r\n');
      if (headEnd < 0 || received.length - headEnd - 4 < bytes) return;
      socket.destroy();
      resolve(received.length - headEnd - 4);
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: mirror.test\r\n\r\n`);
  });
}
