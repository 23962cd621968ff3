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
  await writeFile(
    file('server.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost',
      '',
    ].join('\n'),
  );
  await openssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
  );
  await openssl(
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.crt'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    file('server.ext'),
    '-out',
    file('server.crt'),
  );
  const certDir = file('certs');
  await mkdir(certDir);
  await copyFile(file('ca.crt'), join(certDir, 'ca.crt'));
  return {
    caFile: file('ca.crt'),
    certFile: file('server.crt'),
    keyFile: file('server.key'),
    certDir,
    async createClientCertificate() {
      await writeFile(
        file('client.ext'),
        ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature', 'extendedKeyUsage=clientAuth', ''].join('\n'),
      );
      await openssl(
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-subj',
        '/CN=oci-mirror test client',
        '-keyout',
        file('client.key'),
        '-out',
        file('client.csr'),
      );
      await openssl(
        'x509',
        '-req',
        '-in',
        file('client.csr'),
        '-CA',
        file('ca.crt'),
        '-CAkey',
        file('ca.key'),
        '-CAcreateserial',
        '-days',
        '2',
        '-extfile',
        file('client.ext'),
        '-out',
        file('client.crt'),
      );
      return { certFile: file('client.crt'), keyFile: file('client.key') };
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}
