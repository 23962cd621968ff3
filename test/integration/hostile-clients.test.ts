import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, servedBlob, startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { fetchOutcome, type Outcome } from '../support/http.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';

/**
 * Clients that try to wear the mirror down: password guessing (throttled per address,
 * counted by reason), request heads sent a byte at a time (closed by headersTimeout),
 * and the small print of the API (`q=0`, `_catalog`).
 */
const PASSWORD = 'alice-Pa55word-hostile';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const FAILURES_ALLOWED = 3;
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('hostile clients', () => {
  let dir: string;
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;
  let port: number;
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: {}, layers: [] }));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-hostile-'));
    await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync(PASSWORD, 4)}\n`);
    upstream = await startFakeUpstream();
    const headers = { 'content-type': OCI_MANIFEST, 'docker-content-digest': digestOf(manifest) };
    upstream.setPath('org/app/manifests/v1', servedBlob(manifest, headers));
    mirror = await startMirror({
      upstreams: { 'fake.test': { url: upstream.url } },
      clientAuth: { htpasswdFile: join(dir, 'htpasswd'), failedLoginsPerMinute: FAILURES_ALLOWED },
      listen: { headersTimeout: '500ms' },
    });
    port = Number(new URL(mirror.url).port);
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const status = (outcome: Outcome): number | undefined => outcome.status;
  const authFailures = async (): Promise<Record<string, number>> => {
    const text = (await mirror.runtime.app.inject({ method: 'GET', url: '/metrics' })).body;
    const counts: Record<string, number> = {};
    for (const [, reason = '', value = ''] of text.matchAll(/^oci_mirror_auth_failures_total\{reason="(\w+)"\} (\d+)$/gm)) {
      counts[reason] = Number(value);
    }
    return counts;
  };

  it('counts failed logins by reason, then answers 429 with Retry-After before checking, and still serves a known login', async () => {
    const alice = basic('alice', PASSWORD);
    expect(await authFailures()).toEqual({ unknown_user: 0, bad_password: 0, throttled: 0, malformed: 0 });
    expect(status(await fetchOutcome(`${mirror.url}/v2/`, { authorization: alice }))).toBe(200);
    expect(status(await fetchOutcome(`${mirror.url}/v2/`))).toBe(401);
    expect(status(await fetchOutcome(`${mirror.url}/v2/`, { authorization: basic('mallory', PASSWORD) }))).toBe(401);
    expect(status(await fetchOutcome(`${mirror.url}/v2/`, { authorization: basic('alice', 'guess') }))).toBe(401);
    expect(status(await fetchOutcome(`${mirror.url}/v2/`, { authorization: 'Basic bm8tY29sb24=' }))).toBe(401);
    expect(await authFailures()).toEqual({ unknown_user: 1, bad_password: 1, throttled: 0, malformed: 1 });

    const throttled = await fetchOutcome(`${mirror.url}/v2/`, { authorization: basic('alice', 'another-guess') });
    expect(throttled.kind === 'complete' && throttled.status).toBe(429);
    if (throttled.kind !== 'complete') return;
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);
    expect(JSON.parse(throttled.body.toString())).toEqual({
      errors: [{ code: 'TOOMANYREQUESTS', message: 'too many failed logins from this address' }],
    });
    // A login already verified is not held back by the guesses made beside it.
    expect(status(await fetchOutcome(`${mirror.url}/v2/`, { authorization: alice }))).toBe(200);
    expect(await authFailures()).toEqual({ unknown_user: 1, bad_password: 1, throttled: 1, malformed: 1 });
  });

  it('answers a client that refuses the stored type with q=0 MANIFEST_UNKNOWN, as Distribution does an unaccepted type', async () => {
    const authorization = basic('alice', PASSWORD);
    const url = `${mirror.url}/v2/org/app/manifests/v1`;
    const served = await fetchOutcome(url, { authorization, accept: `${OCI_MANIFEST}, */*` });
    expect(served.kind === 'complete' && served.body.equals(manifest)).toBe(true);
    for (const accept of [`${OCI_MANIFEST};q=0`, `${OCI_MANIFEST};q=0, */*`, 'application/vnd.oci.image.index.v1+json, */*;q=0']) {
      const refused = await fetchOutcome(url, { authorization, accept });
      expect(refused.kind === 'complete' && refused.status, accept).toBe(404);
      if (refused.kind === 'complete') {
        expect(JSON.parse(refused.body.toString())).toMatchObject({ errors: [{ code: 'MANIFEST_UNKNOWN' }] });
      }
    }
  });

  it('answers /v2/_catalog UNSUPPORTED with its own reason', async () => {
    const outcome = await fetchOutcome(`${mirror.url}/v2/_catalog`, { authorization: basic('alice', PASSWORD) });
    expect(outcome.kind === 'complete' && outcome.status).toBe(405);
    if (outcome.kind !== 'complete') return;
    expect(JSON.parse(outcome.body.toString())).toEqual({
      errors: [{ code: 'UNSUPPORTED', message: 'this is a pull-through mirror: it has no catalog of repositories' }],
    });
  });

  it('closes connections that send their request head a byte at a time, with 408', async () => {
    const SLOW = 3;
    const results = await Promise.all(Array.from({ length: SLOW }, () => trickle(port)));
    expect(results.map((r) => r.closedByServer)).toEqual(Array(SLOW).fill(true));
    expect(results.map((r) => r.answer.split('\r\n', 1)[0])).toEqual(Array(SLOW).fill('HTTP/1.1 408 Request Timeout'));
    // Each was closed while its head was still incomplete.
    for (const r of results) expect(r.bytesSent).toBeLessThan(r.headLength);
  });

  it('leaves an idle keep-alive connection alone past headersTimeout: the limit is on a request head, not on idling', async () => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    let closed = false;
    socket.on('close', () => (closed = true));
    const answers = (): string[] => received.match(/HTTP\/1\.1 \d+/g) ?? [];
    const request = `GET /healthz HTTP/1.1\r\nHost: mirror.test\r\n\r\n`;
    socket.write(request);
    await until(() => answers().length === 1);
    // Idle for several times headersTimeout (500 ms) and several of Node's checks, then ask again.
    await new Promise((resolve) => setTimeout(resolve, 4 * 1000));
    socket.write(request);
    await until(() => answers().length >= 2 || closed);
    socket.destroy();
    expect(answers()).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200']);
  });
});

async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
}

/**
 * Sends a request head one byte every 50 ms until the server closes the connection or
 * the whole head (about 4 KiB, so over 3 minutes) has gone: the count of closes decides,
 * not the time taken.
 */
function trickle(port: number): Promise<{ closedByServer: boolean; answer: string; bytesSent: number; headLength: number }> {
  const head = Buffer.from(`GET /v2/ HTTP/1.1\r\nHost: mirror.test\r\nX-Padding: ${randomBytes(2048).toString('hex')}\r\n\r\n`);
  const socket = connect(port, '127.0.0.1');
  let sent = 0;
  let answer = '';
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (sent >= head.length) {
        clearInterval(timer);
        socket.destroy();
        return;
      }
      socket.write(head.subarray(sent, sent + 1));
      sent += 1;
    }, 50);
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ closedByServer: sent < head.length, answer, bytesSent: sent, headLength: head.length });
    });
  });
}
