import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inContext, parseCopy, parseDockerfile, stages, type Stage } from '../support/deploy-dockerfile.js';
import { freePort } from '../support/ports.js';
import { terminate, waitForOutput } from '../support/process.js';

/**
 * deploy/Dockerfile's build, replayed without a Docker engine. `docker build` needs a
 * daemon and the node base image, and no registry is reachable here to pull it, so the
 * image itself cannot be built on this machine. What does not need the base is done
 * for real, from the Dockerfile's own instructions: each stage gets a directory for its
 * root file system, COPY takes files from the build context (filtered by .dockerignore)
 * or from another stage, RUN runs the stage's commands (npm ci, npm run build) with the
 * host's Node, and the runtime stage's ENTRYPOINT, CMD and HEALTHCHECK are run against
 * the result. Not replayed: the base image's content, and the runtime stage's RUN (it
 * creates and chowns /var/lib/oci-mirror, a path and an owner only the image has).
 */
const ROOT = join(import.meta.dirname, '../..');
const run = promisify(execFile);
const NOT_REPLAYED = ['RUN mkdir -p /var/lib/oci-mirror && chown 1000:1000 /var/lib/oci-mirror'];

interface Replay {
  readonly dir: string;
  /** A path in a stage's root file system, on this machine. */
  at(stage: string, path: string): string;
  readonly skipped: string[];
  readonly env: Record<string, string>;
}

async function copyInto(from: string, dest: string, destIsDir: boolean): Promise<void> {
  const target = destIsDir ? join(dest, basename(from)) : dest;
  await mkdir(destIsDir ? dest : join(target, '..'), { recursive: true });
  await cp(from, target, { recursive: true });
}

async function replayStage(replay: Replay, stage: Stage, ignore: string): Promise<void> {
  const name = stage.name ?? '';
  let workdir = '/';
  for (const { keyword, args } of stage.instructions) {
    if (keyword === 'WORKDIR') {
      workdir = args;
      await mkdir(replay.at(name, workdir), { recursive: true });
    } else if (keyword === 'ENV') {
      const [key = '', value = ''] = args.split('=');
      replay.env[key] = value;
    } else if (keyword === 'COPY') {
      const copy = parseCopy(args);
      const dest = copy.dest.startsWith('/') ? copy.dest : join(workdir, copy.dest);
      const destIsDir = copy.dest.endsWith('/') || copy.sources.length > 1;
      for (const source of copy.sources) {
        if (!copy.from && !inContext(ignore, source)) throw new Error(`COPY ${source}: excluded by .dockerignore`);
        await copyInto(copy.from ? replay.at(copy.from, source) : join(ROOT, source), replay.at(name, dest), destIsDir);
      }
    } else if (keyword === 'RUN' && name !== 'runtime') {
      // The npm cache on this machine stands in for the registry.
      await run('sh', ['-c', args], { cwd: replay.at(name, workdir), env: { ...process.env, npm_config_prefer_offline: 'true' } });
    } else if (keyword === 'RUN') replay.skipped.push(`RUN ${args}`);
  }
}

describe('deploy/Dockerfile, replayed without Docker', () => {
  let replay: Replay;
  let runtime: Stage;
  let mirror: ChildProcess | undefined;

  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-image-'));
    replay = { dir, at: (stage, path) => join(dir, stage, path), skipped: [], env: {} };
    const all = stages(parseDockerfile(await readFile(join(ROOT, 'deploy/Dockerfile'), 'utf8')));
    const ignore = await readFile(join(ROOT, '.dockerignore'), 'utf8');
    for (const stage of all.slice(1)) await replayStage(replay, stage, ignore);
    runtime = all.at(-1) as Stage;
  }, 600_000);

  afterAll(async () => {
    if (mirror) await terminate(mirror);
    await rm(replay.dir, { recursive: true, force: true });
  });

  const image = (path: string): string => replay.at('runtime', path);
  const exec = (keyword: string): string[] =>
    JSON.parse(runtime.instructions.find((i) => i.keyword === keyword)?.args.replace(/^.*CMD /, '') ?? '[]') as string[];
  /** An image path in an argument list, mapped to the replayed runtime root. */
  const mapped = (argv: readonly string[]): string[] => argv.map((a) => (a.startsWith('/app/') ? image(a) : a));

  it('replays every instruction but the runtime stage RUN that only an image can run', () => {
    expect(replay.skipped).toEqual(NOT_REPLAYED);
    expect(replay.env.NODE_ENV).toBe('production');
  });

  it('ships production dependencies and dist/, without dev dependencies or sources', async () => {
    await expect(stat(image('/app/dist/main.js'))).resolves.toBeTruthy();
    await expect(stat(image('/app/node_modules/fastify/package.json'))).resolves.toBeTruthy();
    for (const absent of ['/app/node_modules/typescript', '/app/node_modules/vitest', '/app/src', '/app/test']) {
      await expect(stat(image(absent)), absent).rejects.toMatchObject({ code: 'ENOENT' });
    }
    const { stdout } = await run(process.execPath, [...mapped(exec('ENTRYPOINT')).slice(1), '--version']);
    expect(stdout.trim()).toBe((JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
  });

  it('serves with the image config on another port, and the health check follows it', async () => {
    const imageConfig = JSON.parse(await readFile(image('/etc/oci-mirror/mirror.config.json'), 'utf8')) as Record<string, unknown>;
    const port = await freePort();
    const config = {
      ...imageConfig,
      listen: { host: '127.0.0.1', port },
      store: { path: join(replay.dir, 'store') },
      log: { level: 'info' },
    };
    const configFile = join(replay.dir, 'mirror.config.json');
    await writeFile(configFile, JSON.stringify(config));
    const cmd = exec('CMD').map((a) => (a === '/etc/oci-mirror/mirror.config.json' ? configFile : a));
    expect(cmd).toEqual(['serve', '--config', configFile]);
    const workdir = image('/var/lib/oci-mirror');
    await mkdir(workdir, { recursive: true });
    const child = spawn(process.execPath, [...mapped(exec('ENTRYPOINT')).slice(1), ...cmd], {
      cwd: workdir,
      env: { ...process.env, ...replay.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    mirror = child;
    await waitForOutput(child, 'mirror listening');

    const healthcheck = [...mapped(exec('HEALTHCHECK')).slice(1), String(child.pid)];
    const healthy = await run(process.execPath, healthcheck, { cwd: workdir });
    expect(healthy.stdout).toContain(`http://127.0.0.1:${port}/readyz ready`);

    await terminate(child);
    mirror = undefined;
    await expect(run(process.execPath, healthcheck, { cwd: workdir })).rejects.toMatchObject({ code: 1 });
  });
});
