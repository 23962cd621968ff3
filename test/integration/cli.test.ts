import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/ports.js';
import { terminate } from '../support/process.js';

const run = promisify(execFile);

interface Exit {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The built bin (`dist/main.js`), as users run it, until it exits. */
async function oci(args: readonly string[]): Promise<Exit> {
  const child = spawn(process.execPath, ['dist/main.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

/** Start-up failures end in one line naming the cause and the config key, and exit 3. */
describe('oci-mirror start-up failures', () => {
  let dir: string;
  let blocker: Server;
  let busyPort: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-cli-'));
    blocker = createServer().listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    busyPort = (blocker.address() as { port: number }).port;
  });

  afterAll(async () => {
    blocker?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function configFile(name: string, config: Record<string, unknown>): Promise<string> {
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify({ log: { level: 'silent' }, store: { path: join(dir, `store-${name}`) }, ...config }));
    return file;
  }

  function expectOneLine(exit: Exit, line: RegExp): void {
    expect(exit.code).toBe(3);
    expect(exit.stderr.trim().split('\n')).toHaveLength(1);
    expect(exit.stderr).toMatch(line);
    expect(exit.stderr).not.toMatch(/\n\s+at /);
  }

  it('names listen.port when the port is in use', async () => {
    const config = await configFile('busy', { listen: { host: '127.0.0.1', port: busyPort } });
    expectOneLine(
      await oci(['serve', '--config', config]),
      new RegExp(`^oci-mirror: listen.port: 127.0.0.1:${busyPort} is already in use.*EADDRINUSE`),
    );
  });

  it('stops the whole group, not a restart loop, when the workers cannot listen', async () => {
    const config = await configFile('busy-workers', { listen: { host: '127.0.0.1', port: busyPort } });
    const exit = await oci(['serve', '--workers', '2', '--config', config]);
    expect(exit.code).toBe(3);
    expect(exit.stderr).toMatch(/^oci-mirror: listen.port: .*EADDRINUSE/m);
    expect(exit.stderr).not.toMatch(/\n\s+at /);
  });

  it('names listen.host when the host does not resolve or is not local', async () => {
    const unknown = await configFile('nohost', { listen: { host: 'no-such-host.invalid', port: 0 } });
    expectOneLine(await oci(['serve', '--config', unknown]), /^oci-mirror: listen.host: no such host "no-such-host.invalid"/);
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    const foreign = await configFile('foreign', { listen: { host: '192.0.2.1', port: 0 } });
    expectOneLine(
      await oci(['serve', '--config', foreign]),
      /^oci-mirror: listen.host: 192.0.2.1 is not an address of this machine \(EADDRNOTAVAIL\)/,
    );
  });

  it('names store.path when a file stands where a directory should be', async () => {
    await writeFile(join(dir, 'a-file'), 'not a directory');
    const config = await configFile('under-file', { listen: { port: 0 }, store: { path: join(dir, 'a-file', 'store') } });
    expectOneLine(await oci(['serve', '--config', config]), /^oci-mirror: store.path: .* is not a directory \(ENOTDIR\)/);
  });

  it('names store.path and the read-only file system (not ENOENT) on a read-only mount', async () => {
    // The tests run as root, who may write anywhere a mode bit forbids: a read-only mount refuses root too.
    const ro = join(dir, 'ro');
    await mkdir(ro);
    await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
    try {
      const config = await configFile('read-only', { listen: { port: 0 }, store: { path: join(ro, 'store') } });
      expectOneLine(await oci(['serve', '--config', config]), /^oci-mirror: store.path: .*: read-only file system \(EROFS\)/);
      expectOneLine(await oci(['prune', '--max-size', '1GiB', '--config', config]), /^oci-mirror: store.path: .*read-only file system/);
    } finally {
      await run('umount', [ro]);
    }
  });

  it('names the missing import file', async () => {
    const config = await configFile('import', {});
    expectOneLine(
      await oci(['import', join(dir, 'missing.tar'), '--config', config]),
      /^oci-mirror: import FILE: no such file .*missing.tar \(ENOENT\)/,
    );
  });

  it('exits 1 from stats when no mirror answers, after printing the store figures', async () => {
    const config = await configFile('stats', {});
    const exit = await oci(['stats', '--url', `http://127.0.0.1:${await freePort()}`, '--config', config]);
    expect(exit.code).toBe(1);
    expect(exit.stdout).toMatch(/^store .*: 0 ?B in 0 entries\b/m);
    expect(exit.stdout).toMatch(/no mirror answered/);
  });
});

describe('oci-mirror serve start-up line', () => {
  it('shows the address as bound: 0.0.0.0 for every interface, and the port chosen', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-cli-'));
    const config = join(dir, 'c.json');
    await writeFile(config, JSON.stringify({ listen: { host: '0.0.0.0', port: 0 }, store: { path: join(dir, 'store') } }));
    const child = spawn(process.execPath, ['dist/main.js', 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          output += chunk.toString();
          if (output.includes('mirror listening')) resolve();
        });
        child.once('exit', () => reject(new Error(output)));
      });
      const line = JSON.parse(output.split('\n').find((l) => l.includes('mirror listening'))!) as { address: string };
      expect(line.address).toMatch(/^http:\/\/0\.0\.0\.0:[1-9]\d*$/);
    } finally {
      await terminate(child);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('oci-mirror COMMAND --help', () => {
  it.each(['serve', 'prune', 'stats', 'warm', 'export', 'import'])('prints the page of %s and exits 0', async (command) => {
    const exit = await oci([command, '--help']);
    expect(exit.code).toBe(0);
    expect(exit.stdout).toMatch(new RegExp(`^Usage: oci-mirror \\[?${command}`));
    expect(exit.stdout).toMatch(new RegExp(`Example:\\n {2}oci-mirror ${command} `));
    expect(exit.stdout).toContain('Exit status:');
  });
});
