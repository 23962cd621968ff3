import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { terminate, waitForOutput } from './process.js';

const REGISTRY_BIN = '/usr/bin/docker-registry';

/** TLS for the registry's listener; with `clientCaFile` it requires a client certificate that CA signed. */
export interface RegistryTls {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile?: string;
}

/** A real CNCF Distribution registry (Debian's docker-registry) on a loopback port. */
export interface RegistryHandle {
  /** http://, or https:// once restarted with TLS. */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Stops the process; storage stays so that `restart()` serves the same content. */
  stop(): Promise<void>;
  /** Starts it again on the same port and storage; with `tls`, serving HTTPS from then on. */
  restart(options?: { readonly tls?: RegistryTls }): Promise<void>;
  /** Stops it and removes its storage. */
  dispose(): Promise<void>;
}

export async function startRegistry(): Promise<RegistryHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-registry-'));
  const port = await freePort();
  const configFile = join(dir, 'config.yml');
  let scheme = 'http';
  const writeConfig = (tls: RegistryTls | undefined) =>
    writeFile(
      configFile,
      [
        'version: 0.1',
        'log:',
        '  level: info',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${join(dir, 'data')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: 127.0.0.1:${port}`,
        ...(tls === undefined ? [] : ['  tls:', `    certificate: ${tls.certFile}`, `    key: ${tls.keyFile}`]),
        ...(tls?.clientCaFile === undefined ? [] : ['    clientcas:', `      - ${tls.clientCaFile}`]),
        '',
      ].join('\n'),
    );
  await writeConfig(undefined);
  let child: ChildProcess | undefined = await launch(configFile);
  return {
    get url() {
      return `${scheme}://127.0.0.1:${port}`;
    },
    port,
    dir,
    async stop() {
      if (child) await terminate(child);
      child = undefined;
    },
    async restart(options = {}) {
      if (child) await terminate(child);
      if (options.tls) {
        await writeConfig(options.tls);
        scheme = 'https';
      }
      child = await launch(configFile);
    },
    async dispose() {
      if (child) await terminate(child);
      child = undefined;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Spawns the registry and resolves once it logs that it listens. */
async function launch(configFile: string): Promise<ChildProcess> {
  const child = spawn(REGISTRY_BIN, ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  await waitForOutput(child, 'listening on');
  return child;
}
