import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A throw-away CA and a server certificate it signed for 127.0.0.1 / ::1 / localhost,
 * made with openssl for one test run. `certDir` is laid out as containers/image and
 * Docker expect a per-host directory: `ca.crt` only (no client certificate).
 */
export interface TestPki {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** A directory holding only `ca.crt` (skopeo `--src-cert-dir`, podman `--cert-dir`). */
  readonly certDir: string;
  /** Makes a client certificate (extendedKeyUsage clientAuth) the same CA signed, for mTLS. */
  createClientCertificate(): Promise<{ readonly certFile: string; readonly keyFile: string }>;
  dispose(): Promise<void>;
}

export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-pki-'));
  const file = (name: string): string => join(dir, name);
  const openssl = async (...args: string[]): Promise<void> => {
    await run('openssl', args, { timeout: 30_000 }).catch((err: Error & { stderr?: string }) => {
      throw new Error(`openssl ${args[0]} failed: ${err.stderr ?? err.message}`, { cause: err });
    });
  };
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=oci-mirror test CA',
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.crt'),
  );
  /** A key and a certificate signed by the test CA, with `extensions` (openssl x509 -extfile). */
  const issue = async (name: string, subject: string, extensions: readonly string[]): Promise<void> => {
    await writeFile(file(`${name}.ext`), [...extensions, ''].join('\n'));
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await openssl('req', ...ec, '-subj', subject, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`));
    const ca = ['-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '2'];
    await openssl('x509', '-req', '-in', file(`${name}.csr`), ...ca, '-extfile', file(`${name}.ext`), '-out', file(`${name}.crt`));
  };
  await issue('server', '/CN=127.0.0.1', [
    'basicConstraints=CA:FALSE',
    'keyUsage=digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost',
  ]);
  const certDir = file('certs');
  await mkdir(certDir);
  await copyFile(file('ca.crt'), join(certDir, 'ca.crt'));
  return {
    caFile: file('ca.crt'),
    certFile: file('server.crt'),
    keyFile: file('server.key'),
    certDir,
    async createClientCertificate() {
      await issue('client', '/CN=oci-mirror test client', [
        'basicConstraints=CA:FALSE',
        'keyUsage=digitalSignature',
        'extendedKeyUsage=clientAuth',
      ]);
      return { certFile: file('client.crt'), keyFile: file('client.key') };
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}
