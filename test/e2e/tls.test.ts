import { readFile } from 'node:fs/promises';
import { Agent, request, type RequestOptions } from 'node:https';
import { request as plainRequest } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { createSilentLogger } from '../../src/log.js';
import { createRuntime } from '../../src/runtime.js';
import { createTestPki, type TestPki } from '../support/tls.js';
import { startE2eMirror, type E2eMirror } from './world.js';

/**
 * The mirror's HTTPS listener (`listen.tls`), as clients meet it: the certificate
 * chains to the configured CA, HTTP/1.1 with keep-alive, nothing served in clear on
 * that port, and a start-up that fails loudly on an unreadable key. The real clients
 * over TLS are in clients.test.ts.
 */
describe('HTTPS listener', () => {
  let pki: TestPki;
  let mirror: E2eMirror;
  let port: number;

  beforeAll(async () => {
    pki = await createTestPki();
    // No upstream is contacted by these requests; a dead port stands in for both.
    mirror = await startE2eMirror({ 'docker.io': 'http://127.0.0.1:9', 'ghcr.io': 'http://127.0.0.1:9' }, { pki });
    port = Number(mirror.target.endpoint('docker.io').host.split(':')[1]);
  });

  afterAll(async () => {
    await mirror?.stop();
    await pki?.dispose();
  });

  const get = (path: string, options: RequestOptions): Promise<{ status: number; socket: TLSSocket; reused: boolean }> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, ...options }, (res) => {
        const socket = res.socket as TLSSocket;
        res.resume();
        res.once('end', () => resolve({ status: res.statusCode ?? 0, socket, reused: req.reusedSocket }));
      });
      req.once('error', reject);
      req.end();
    });

  it('serves the registry API over HTTP/1.1 with keep-alive, trusted through the test CA', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: await readFile(pki.caFile) });
    try {
      const first = await get('/v2/', { agent });
      const second = await get('/healthz', { agent });
      expect(first.status).toBe(200);
      expect(second.status).toBe(200);
      expect(first.socket.authorized).toBe(true);
      // ALPN: the server offers nothing but HTTP/1.1 (no h2 negotiation).
      expect(first.socket.alpnProtocol).toBe(false);
      expect(second.reused).toBe(true);
    } finally {
      agent.destroy();
    }
  });

  it('is refused by a client that does not trust the CA', async () => {
    const agent = new Agent({ keepAlive: false });
    await expect(get('/v2/', { agent })).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  it('serves nothing in clear text on the HTTPS port', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = plainRequest({ host: '127.0.0.1', port, path: '/v2/' }, (res) => {
        res.resume();
        resolve(`status ${res.statusCode}`);
      });
      req.once('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
      req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
      req.end();
    });
    // The TLS handshake fails on the HTTP request line and the connection is closed.
    expect(outcome).toMatch(/^error (ECONNRESET|EPROTO)$/);
  });

  it('fails to start, naming the setting, when the key file cannot be read', async () => {
    const config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: 0, tls: { certFile: pki.certFile, keyFile: `${pki.keyFile}.missing` } },
        store: { path: `${pki.certDir}/store` },
        log: { level: 'silent' },
        upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', library: true } },
        defaultUpstream: 'docker.io',
      },
      {},
    );
    await expect(createRuntime(config, { log: createSilentLogger(), processMetrics: false })).rejects.toThrow(
      /listen\.tls\.keyFile: cannot read .*ENOENT/,
    );
  });
});
