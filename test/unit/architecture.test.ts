import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Keeps the layering of ARCHITECTURE.md true: each third-party library that does I/O or
 * owns a concern has one home; store and upstream never import each other or anything
 * above them; http reaches the store and the upstreams only through the mirror.
 */
const SRC = join(import.meta.dirname, '../../src');

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const files = await Promise.all(
    entries.map((e) =>
      e.isDirectory() ? sourceFiles(join(dir, e.name)) : Promise.resolve(e.name.endsWith('.ts') ? [join(dir, e.name)] : []),
    ),
  );
  return files.flat();
}

async function importsOf(): Promise<Map<string, string[]>> {
  const map = new Map<string, string[]>();
  for (const file of await sourceFiles(SRC)) {
    const text = await readFile(file, 'utf8');
    const specs = [...text.matchAll(/^\s*(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1] as string);
    map.set(relative(SRC, file), specs);
  }
  return map;
}

/** lru-cache is not here: a data structure without I/O, for any bounded map with a TTL. */
const HOMES: Record<string, RegExp> = {
  fastify: /^http\//,
  undici: /^upstream\//,
  'prom-client': /^metrics\.ts$/,
  pino: /^log\.ts$/,
  'proper-lockfile': /^store\/lock\.ts$/,
  'tar-stream': /^bundle\/tar\.ts$/,
  bcryptjs: /^http\/client-auth\.ts$/,
  'ajv/dist/2020.js': /^config\//,
};

const FORBIDDEN: [RegExp, RegExp][] = [
  [/^store\//, /\/(upstream|mirror|http|cli|bundle)\/|\/runtime\.js$/],
  [/^upstream\//, /\/(store|mirror|http|cli|bundle)\/|\/runtime\.js$/],
  [/^http\//, /\/(store|upstream)\//],
  [/^oci\//, /\/(store|upstream|mirror|http)\//],
];

describe('module layering', () => {
  it('imports each third-party library only from its home module', async () => {
    const offenders: string[] = [];
    for (const [file, specs] of await importsOf()) {
      for (const spec of specs) {
        const home = HOMES[spec];
        if (home && !home.test(file)) offenders.push(`${file} imports ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('keeps store and upstream apart and below the mirror, http away from both, and oci free of I/O layers', async () => {
    const offenders: string[] = [];
    for (const [file, specs] of await importsOf()) {
      for (const [from, to] of FORBIDDEN) {
        if (from.test(file)) for (const spec of specs) if (to.test(spec)) offenders.push(`${file} imports ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
