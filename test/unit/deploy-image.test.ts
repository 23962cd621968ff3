import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { inContext, parseCopy, parseDockerfile, stages, type Instruction } from '../support/deploy-dockerfile.js';

/**
 * deploy/Dockerfile, linted by parsing (Debian has no hadolint): the base is an exact
 * Node LTS release that Renovate pins by digest, the build is multi-stage, the image
 * runs unprivileged with OCI labels and a health check, and .dockerignore keeps
 * everything but the COPY sources out of the build context. No Docker engine runs
 * here; test/integration/deploy-image.test.ts replays the build steps that need none.
 */
const ROOT = join(import.meta.dirname, '../..');
const read = (path: string): Promise<string> => readFile(join(ROOT, path), 'utf8');

const args = (instructions: readonly Instruction[], keyword: string): string[] =>
  instructions.filter((i) => i.keyword === keyword).map((i) => i.args);

describe('deploy/Dockerfile', () => {
  it('parses, and every stage but the first builds on the pinned base stage', async () => {
    const all = stages(parseDockerfile(await read('deploy/Dockerfile')));
    expect(all.map((s) => s.name)).toEqual(['node', 'deps', 'build', 'runtime']);
    expect(all.slice(1).map((s) => s.from)).toEqual(['node', 'node', 'node']);
    expect(() => parseDockerfile('FROM node:24\nRUNN true\n')).toThrow(/unknown instruction RUNN/);
  });

  it('starts from an exact Node LTS release (even major, 24 or later), a digest only beside the tag', async () => {
    const [base] = stages(parseDockerfile(await read('deploy/Dockerfile')));
    const match = /^node:(\d+)\.(\d+)\.(\d+)-[a-z]+(?:-slim)?(?:@sha256:[0-9a-f]{64})?$/.exec(base?.from ?? '');
    expect(match, base?.from).not.toBeNull();
    const major = Number(match?.[1]);
    expect(major).toBeGreaterThanOrEqual(24);
    expect(major % 2).toBe(0);
  });

  it('has a Renovate rule that pins and bumps that base', async () => {
    const config = JSON.parse(await read('renovate.json')) as { packageRules: Record<string, unknown>[] };
    const rule = config.packageRules.find((r) => (r.matchPackageNames as string[] | undefined)?.includes('node'));
    expect(rule).toMatchObject({ matchManagers: ['dockerfile'], pinDigests: true, versioning: 'node' });
  });

  it('compiles with dev dependencies and ships production dependencies and dist/ only', async () => {
    const all = stages(parseDockerfile(await read('deploy/Dockerfile')));
    const [, deps, build, runtime] = all;
    expect(args(deps?.instructions ?? [], 'RUN').join(' ')).toMatch(/npm ci --omit=dev/);
    expect(args(build?.instructions ?? [], 'RUN').join(' ')).toMatch(/npm run build/);
    const copies = args(runtime?.instructions ?? [], 'COPY').map(parseCopy);
    expect(copies.filter((c) => c.from).map((c) => `${c.from}:${c.sources.join(',')}`)).toEqual([
      'deps:/src/node_modules',
      'build:/src/dist',
    ]);
  });

  it('runs unprivileged, labelled, with a health check that reads the port from the config', async () => {
    const runtime = stages(parseDockerfile(await read('deploy/Dockerfile'))).at(-1)?.instructions ?? [];
    const user = args(runtime, 'USER').at(-1) ?? '';
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(user).toMatch(/^\d+(:\d+)?$/);
    const labels = args(runtime, 'LABEL').join(' ');
    for (const key of ['title', 'description', 'version', 'revision', 'created', 'licenses']) {
      expect(labels).toContain(`org.opencontainers.image.${key}=`);
    }
    expect(labels).toContain('org.opencontainers.image.version="${VERSION}"');
    const version = (JSON.parse(await read('package.json')) as { version: string }).version;
    expect(args(runtime, 'ARG')).toContain(`VERSION=${version}`);
    const [check] = args(runtime, 'HEALTHCHECK');
    expect(check).toMatch(/CMD \["node", "\/app\/healthcheck\.mjs"\]$/);
    expect(check).not.toMatch(/5000/);
    expect(args(runtime, 'VOLUME')).toEqual(['/var/lib/oci-mirror']);
    expect(args(runtime, 'ENTRYPOINT')).toEqual(['["node", "/app/dist/main.js"]']);
  });

  it('sends the builder exactly what the COPY lines name (.dockerignore)', async () => {
    const ignore = await read('.dockerignore');
    for (const path of [
      'node_modules',
      'node_modules/undici/index.js',
      '.git',
      '.git/HEAD',
      'test',
      'test/unit/deploy.test.ts',
      'dist/main.js',
      'data',
    ]) {
      expect(inContext(ignore, path), path).toBe(false);
    }
    const sources = stages(parseDockerfile(await read('deploy/Dockerfile')))
      .flatMap((s) => args(s.instructions, 'COPY').map(parseCopy))
      .filter((c) => !c.from)
      .flatMap((c) => c.sources);
    expect(sources).toContain('src');
    for (const source of sources) expect(inContext(ignore, source), source).toBe(true);
    expect(inContext(ignore, 'src/main.ts')).toBe(true);
  });
});
