import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { terminate, waitForOutput } from './process.js';

/**
 * A real forward proxy (Debian's tinyproxy) on a loopback port, in the foreground with
 * its own config: Basic credentials, CONNECT allowed to one port only, and outgoing
 * connections bound to `bindAddress`, so an upstream can tell the proxy's connections
 * from anybody else's.
 */
export interface ForwardProxy {
  readonly url: string;
  /** `CONNECT host:port` request lines the proxy logged. */
  connects(): string[];
  stop(): Promise<void>;
}

export async function startTinyproxy(options: {
  /** CONNECT is allowed to these ports only. */
  readonly connectPorts: readonly number[];
  readonly bindAddress: string;
  readonly username: string;
  readonly password: string;
}): Promise<ForwardProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-tinyproxy-'));
  const port = await freePort();
  const conf = join(dir, 'tinyproxy.conf');
  await writeFile(
    conf,
    [
      `Port ${port}`,
      'Listen 127.0.0.1',
      `Bind ${options.bindAddress}`,
      'Timeout 30',
      'LogLevel Info',
      'MaxClients 50',
      'Allow 127.0.0.1',
      ...options.connectPorts.map((port) => `ConnectPort ${port}`),
      `BasicAuth ${options.username} ${options.password}`,
      '',
    ].join('\n'),
  );
  const child = spawn('tinyproxy', ['-d', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr])
    stream.on('data', (chunk: Buffer) => lines.push(...chunk.toString('utf8').split('\n')));
  await waitForOutput(child, 'Accepting connections');
  return {
    url: `http://127.0.0.1:${port}`,
    connects: () => lines.flatMap((line) => /Request \(file descriptor \d+\): (CONNECT \S+)/.exec(line)?.[1] ?? []),
    async stop() {
      await terminate(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP gate in front of `target` that admits only connections from `allowedAddress`. */
export interface SourceGate {
  readonly port: number;
  readonly admitted: () => number;
  readonly refused: () => number;
  stop(): Promise<void>;
}

export async function startSourceGate(target: { host: string; port: number }, allowedAddress: string): Promise<SourceGate> {
  let admitted = 0;
  let refused = 0;
  const server: Server = createServer((socket) => {
    if (socket.remoteAddress !== allowedAddress) {
      refused++;
      socket.destroy();
      return;
    }
    admitted++;
    const upstream = createConnection(target);
    socket.pipe(upstream).pipe(socket);
    const close = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port,
    admitted: () => admitted,
    refused: () => refused,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}
