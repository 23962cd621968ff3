import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { fetchHashed } from '../support/http.js';
import { buildImage, pushImage, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { createTestPki, type TestPki } from '../support/tls.js';

/**
 * TLS per upstream against a real Distribution registry serving HTTPS with a test CA:
 * an internal registry with a company CA (tls.caFile), one that requires a client
 * certificate (http.tls.clientcas, mTLS), and the explicit insecure switch.
 */
describe('upstream TLS: private CA and client certificates', () => {
  let pki: TestPki;
  let client: { certFile: string; keyFile: string };
  let registry: RegistryHandle;
  let image: Pushed;
  const mirrors: MirrorHandle[] = [];

  beforeAll(async () => {
    pki = await createTestPki();
    client = await pki.createClientCertificate();
    registry = await startRegistry();
    image = await pushImage(registry.url, 'team/tls-synth', 'v1', buildImage({ mediaTypes: 'oci', layers: [{ seed: 'tls', size: 8192 }] }));
    await registry.restart({ tls: { certFile: pki.certFile, keyFile: pki.keyFile } });
  });

  afterAll(async () => {
    for (const mirror of mirrors) await mirror.stop();
    await registry?.dispose();
    await pki?.dispose();
  });

  async function mirrorWith(tls: Record<string, unknown> | undefined, lines: string[] = []): Promise<MirrorHandle> {
    const log = createLogger('warn', { write: (line: string) => void lines.push(line) });
    const upstream = { url: registry.url, downFor: '0s', ...(tls === undefined ? {} : { tls }) };
    const mirror = await startMirror(
      {
        upstreams: { 'registry.test': upstream },
        upstreamDefaults: { retries: 0, timeouts: { connect: '2s', headers: '2s', body: '2s' } },
      },
      { log },
    );
    mirrors.push(mirror);
    return mirror;
  }

  const pull = async (mirror: MirrorHandle) => {
    const res = await fetchHashed(`${mirror.url}/v2/team/tls-synth/manifests/v1`, { keepBody: true });
    return { status: res.status, sha256: res.sha256, body: String(res.body) };
  };

  it('fails with a clear TLS error when the upstream CA is not trusted', async () => {
    const res = await pull(await mirrorWith(undefined));
    expect(res.status).toBe(503);
    expect(res.body).toContain('TLS handshake with the upstream failed');
    expect(res.body).toContain('tls.caFile');
  });

  it('pulls with the CA in tls.caFile', async () => {
    const res = await pull(await mirrorWith({ caFile: pki.caFile }));
    expect(res.status).toBe(200);
    expect(res.sha256).toBe(image.topDigest);
  });

  it('pulls unverified with insecureSkipVerify, and warns at start-up', async () => {
    const lines: string[] = [];
    const mirror = await mirrorWith({ insecureSkipVerify: true }, lines);
    expect(lines.some((line) => line.includes('tls.insecureSkipVerify'))).toBe(true);
    expect((await pull(mirror)).sha256).toBe(image.topDigest);
  });

  it('is refused by a registry requiring a client certificate, and pulls with one (mTLS)', async () => {
    await registry.restart({ tls: { certFile: pki.certFile, keyFile: pki.keyFile, clientCaFile: pki.caFile } });
    const refused = await pull(await mirrorWith({ caFile: pki.caFile }));
    expect(refused.status).toBe(503);
    expect(refused.body).toContain('UNAVAILABLE');
    const mtls = await pull(await mirrorWith({ caFile: pki.caFile, certFile: client.certFile, keyFile: client.keyFile }));
    expect(mtls.status).toBe(200);
    expect(mtls.sha256).toBe(image.topDigest);
  });
});
