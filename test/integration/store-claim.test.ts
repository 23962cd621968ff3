import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

interface Run {
  readonly code: number;
  readonly stderr: string;
}

/** The built bin (`dist/main.js`), as an operator runs it; resolves with its exit code. */
function runBin(args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['dist/main.js', ...args], (err, _stdout, stderr) => {
      resolve({ code: err ? Number(err.code) : 0, stderr });
    });
  });
}

async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.map((e) => relative(dir, join(e.parentPath, e.name)) + (e.isDirectory() ? '/' : '')).sort();
}

/** `store.path` pointing at a directory that is not a store: the command stops, says so in one line, touches nothing. */
describe('store.path that is not a store', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-claim-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a dry-run prune on a directory with foreign files and a tmp/ exits 2 with one line, deleting nothing', async () => {
    const target = join(dir, 'etc');
    await mkdir(join(target, 'tmp'), { recursive: true });
    await writeFile(join(target, 'hosts'), '127.0.0.1 localhost\n');
    await writeFile(join(target, 'tmp', 'session'), "not the mirror's");
    const before = await tree(target);
    const config = join(dir, 'mirror.config.json');
    const upstreams = { 'docker.io': { url: 'http://127.0.0.1:9', library: true } };
    await writeFile(config, JSON.stringify({ store: { path: target }, upstreams }));
    const run = await runBin(['prune', '--max-size', '1GiB', '--config', config]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(
      `oci-mirror: store.path: ${target} is not empty (hosts) and has no oci-mirror-store.json; refusing to use it as a store\n`,
    );
    expect(await tree(target)).toEqual(before);
  });
});
