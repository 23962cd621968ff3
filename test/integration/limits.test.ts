import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { digestOf, gatedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { fetchHashed } from '../support/http.js';

const KiB = 1024;

/**
 * The ceilings on what clients can make the process hold: requests in flight per client
 * address (429 with Retry-After beyond it) and connections in all (closed on accept).
 */
describe('client limits', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;
  let agent: Agent;

  beforeEach(async () => {
    upstream = await startFakeUpstream();
    agent = new Agent({ connections: null });
  });

  afterEach(async () => {
    await agent.close();
    await mirror?.runtime.mirror.drain();
    await mirror?.stop();
    await upstream.stop();
  });

  async function refused(limit: string): Promise<number> {
    const metric = await mirror.runtime.metrics.refused.get();
    return metric.values.find((v) => v.labels.limit === limit)?.value ?? 0;
  }

  it('answers requests beyond the per-client limit 429 with Retry-After, and serves the rest whole', async () => {
    mirror = await startMirror({ upstreams: { 'fake.test': { url: upstream.url } }, listen: { maxRequestsPerClient: 4 } });
    const body = randomBytes(512 * KiB);
    const digest = digestOf(body);
    // Each admitted request stays in flight until the upstream is let go.
    const gated = gatedBlob(body, 64 * KiB);
    upstream.setBlob(digest, gated.handler);
    const url = `${mirror.url}/v2/org/app/blobs/${digest}`;

    const responses = await Promise.all(Array.from({ length: 7 }, () => request(url, { dispatcher: agent })));
    const ok = responses.filter((r) => r.statusCode === 200);
    const tooMany = responses.filter((r) => r.statusCode === 429);
    expect(ok).toHaveLength(4);
    expect(tooMany).toHaveLength(3);
    for (const res of tooMany) {
      expect(res.headers['retry-after']).toBe('1');
      const envelope = (await res.body.json()) as { errors: { code: string }[] };
      expect(envelope.errors[0]?.code).toBe('TOOMANYREQUESTS');
    }
    expect(await refused('requests_per_client')).toBe(3);

    gated.finish();
    for (const res of ok) {
      const got = Buffer.from(await res.body.arrayBuffer());
      expect(`sha256:${createHash('sha256').update(got).digest('hex')}`).toBe(digest);
    }
    // The finished requests left the count: as many again are served.
    const again = await Promise.all(Array.from({ length: 4 }, () => fetchHashed(url)));
    expect(again.map((r) => r.sha256)).toEqual(Array.from({ length: 4 }, () => digest));
    expect(await refused('requests_per_client')).toBe(3);
  });

  it('behind a trusted proxy, counts each client by the address the proxy appended, never by one it wrote itself', async () => {
    mirror = await startMirror({
      upstreams: { 'fake.test': { url: upstream.url } },
      listen: { maxRequestsPerClient: 2, trustedProxies: 1 },
    });
    const body = randomBytes(512 * KiB);
    const digest = digestOf(body);
    const gated = gatedBlob(body, 64 * KiB);
    upstream.setBlob(digest, gated.handler);
    const url = `${mirror.url}/v2/org/app/blobs/${digest}`;
    // As nginx sends them ($proxy_add_x_forwarded_for): two clients, two requests each, all from the proxy's address.
    const from = (forwardedFor: string) => request(url, { dispatcher: agent, headers: { 'x-forwarded-for': forwardedFor } });
    const admitted = await Promise.all(['10.0.0.1', '10.0.0.2', '10.0.0.1', '10.0.0.2'].map(from));
    expect(admitted.map((r) => r.statusCode)).toEqual([200, 200, 200, 200]);
    // A third from 10.0.0.1 that names another address first is still 10.0.0.1's.
    const spoofed = await from('10.0.0.9, 10.0.0.1');
    expect(spoofed.statusCode).toBe(429);
    await spoofed.body.dump();
    expect(await refused('requests_per_client')).toBe(1);
    gated.finish();
    for (const res of admitted) await res.body.dump();
  });

  it('closes a connection beyond maxConnections on accept, and keeps serving the open ones', async () => {
    mirror = await startMirror({ upstreams: { 'fake.test': { url: upstream.url } }, listen: { maxConnections: 3 } });
    const { port } = new URL(mirror.url);
    const open: Socket[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const socket = connect(Number(port), '127.0.0.1');
        open.push(socket);
        expect(await healthz(socket)).toMatch(/^HTTP\/1\.1 200/);
      }
      const extra = connect(Number(port), '127.0.0.1');
      open.push(extra);
      let received = '';
      extra.on('data', (chunk: Buffer) => (received += chunk.toString()));
      extra.on('error', () => undefined);
      extra.write('GET /healthz HTTP/1.1\r\nHost: mirror\r\n\r\n');
      await once(extra, 'close');
      expect(received).toBe('');
      expect(await refused('connections')).toBe(1);
      for (const socket of open.slice(0, 3)) expect(await healthz(socket)).toMatch(/^HTTP\/1\.1 200/);
    } finally {
      for (const socket of open) socket.destroy();
    }
  });
});

/** One keep-alive request on a raw connection; resolves with the response head and body. */
async function healthz(socket: Socket): Promise<string> {
  socket.write('GET /healthz HTTP/1.1\r\nHost: mirror\r\n\r\n');
  let text = '';
  while (!text.includes('{"status":"ok"}')) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    text += chunk.toString();
  }
  return text;
}
