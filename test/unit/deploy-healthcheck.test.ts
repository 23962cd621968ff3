import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/ports.js';
import { waitForOutput } from '../support/process.js';

/**
 * deploy/healthcheck.mjs (the image's HEALTHCHECK) finds the port the way the mirror
 * does: `--port` over the config's listen.port, `--config FILE` over ./mirror.config.json.
 * A stand-in process carries a mirror's command line (`… main.js serve …`) and answers
 * /readyz on loopback with the status it is told.
 */
const run = promisify(execFile);
const HEALTHCHECK = join(import.meta.dirname, '../../deploy/healthcheck.mjs');

const STAND_IN = `
const [port, status] = [Number(process.argv.at(-2)), Number(process.argv.at(-1))];
require('node:http').createServer((req, res) => { res.statusCode = req.url === '/readyz' ? status : 404; res.end(); })
  .listen(port, '127.0.0.1', () => console.log('listening'));`;

describe('deploy/healthcheck.mjs', () => {
  let dir: string;
  let standIn: ChildProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-healthcheck-'));
  });

  afterEach(() => {
    standIn?.kill();
    standIn = undefined;
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A process whose command line is `node -e … -- /app/dist/main.js serve <args> <port> <status>`. */
  async function startStandIn(args: readonly string[], port: number, status: number): Promise<number> {
    const child = spawn(process.execPath, ['-e', STAND_IN, '--', '/app/dist/main.js', 'serve', ...args, String(port), String(status)], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    standIn = child;
    await waitForOutput(child, 'listening');
    return child.pid ?? 0;
  }

  async function check(pid: number): Promise<{ code: number; stdout: string }> {
    try {
      const { stdout } = await run(process.execPath, [HEALTHCHECK, String(pid)]);
      return { code: 0, stdout };
    } catch (err) {
      const failed = err as { code?: unknown; stdout?: string };
      if (typeof failed.code !== 'number') throw err;
      return { code: failed.code, stdout: failed.stdout ?? '' };
    }
  }

  it('probes the port of the --config file', async () => {
    const listen = await freePort();
    await writeFile(join(dir, 'other.json'), JSON.stringify({ listen: { host: '0.0.0.0', port: listen } }));
    const result = await check(await startStandIn(['--config', 'other.json'], listen, 200));
    expect(result).toEqual({ code: 0, stdout: `healthcheck: http://127.0.0.1:${listen}/readyz ready\n` });
  });

  it('prefers --port to the config, and reads ./mirror.config.json without --config', async () => {
    const [listen, configured] = [await freePort(), await freePort()];
    await writeFile(join(dir, 'mirror.config.json'), JSON.stringify({ listen: { port: configured } }));
    expect((await check(await startStandIn([`--port=${listen}`], listen, 200))).code).toBe(0);
    standIn?.kill();
    expect((await check(await startStandIn([], configured, 200))).stdout).toContain(`:${configured}/readyz ready`);
  });

  it('fails while /readyz is not 200, and when nothing listens', async () => {
    const [listen, silent, other] = [await freePort(), await freePort(), await freePort()];
    await writeFile(join(dir, 'mirror.config.json'), JSON.stringify({ listen: { port: listen } }));
    expect(await check(await startStandIn([], listen, 503))).toEqual({
      code: 1,
      stdout: `healthcheck: http://127.0.0.1:${listen}/readyz not ready\n`,
    });
    standIn?.kill();
    expect((await check(await startStandIn(['--port', String(silent)], other, 200))).code).toBe(1);
  });
});
