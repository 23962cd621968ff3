import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../../src/config/index.js';
import { checkConfig, writeConfig } from '../support/nginx.js';

/**
 * deploy/nginx/: the front and sharded configs pass `nginx -t` once pointed at a test's
 * paths (the integration tests run them: nginx-front, nginx-sharded), and the compose
 * variant runs the mirror in front mode behind nginx with the store read-only.
 */
const DEPLOY = join(import.meta.dirname, '../../deploy');
const read = (path: string): Promise<string> => readFile(join(DEPLOY, path), 'utf8');

describe('deploy/nginx', () => {
  it.each([
    ['front.conf', { blobsDir: '/tmp', mirrors: ['127.0.0.1:1'] }],
    ['sharded.conf', { mirrors: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] }],
  ])('%s passes nginx -t', async (file, paths) => {
    const { prefix, confPath } = await writeConfig(join(DEPLOY, 'nginx', file), paths, 5000);
    const checked = checkConfig(prefix, confPath);
    await rm(prefix, { recursive: true, force: true });
    expect(checked.output).toContain('test is successful');
    expect(checked.status).toBe(0);
  });

  it('fails nginx -t on a broken config (the check binds)', async () => {
    const { prefix, confPath } = await writeConfig(join(DEPLOY, 'nginx/front.conf'), { blobsDir: '/tmp', mirrors: ['127.0.0.1:1'] }, 5000);
    const text = await readFile(confPath, 'utf8');
    const broken = join(prefix, 'broken.conf');
    await writeFile(broken, text.replace('internal;', 'internal'));
    const checked = checkConfig(prefix, broken);
    await rm(prefix, { recursive: true, force: true });
    expect(checked.status).not.toBe(0);
  });

  it('runs the compose variant in front mode, the deploy config otherwise unchanged', async () => {
    const base = JSON.parse(await read('mirror.config.json')) as Record<string, unknown>;
    const front = JSON.parse(await read('nginx/mirror.config.json')) as Record<string, unknown>;
    expect(front).toEqual({
      ...base,
      $schema: '../../mirror.config.schema.json',
      // Behind nginx: clients are counted by the address nginx appends to X-Forwarded-For.
      listen: { ...(base['listen'] as object), trustedProxies: 1 },
      front: { mode: 'nginx', internalPrefix: '/_store/' },
    });
    expect(parseConfig(front, {}).front).toEqual({ mode: 'nginx', internalPrefix: '/_store/' });
    expect(await read('nginx/front.conf')).toContain('location /_store/ {');

    interface Service {
      volumes: string[];
      ports?: string[];
      user?: string;
    }
    const compose = parseYaml(await read('nginx/compose.front.yaml'), { customTags: [resetTag, overrideTag] }) as {
      services: Record<string, Service>;
    };
    const { nginx, 'oci-mirror': mirror } = compose.services;
    expect(nginx?.volumes).toEqual(['store:/var/lib/oci-mirror:ro', './nginx/front.conf:/etc/nginx/oci-mirror/nginx.conf:ro']);
    expect(nginx?.ports).toEqual(['5000:5000']);
    expect(mirror?.ports).toEqual([]);
    expect(mirror?.volumes).toContain('./nginx/mirror.config.json:/etc/oci-mirror/mirror.config.json:ro');
  });
});

/** Compose's merge tags: the value as written. */
const resetTag = { tag: '!reset', collection: 'seq', resolve: (value: unknown): unknown => value } as const;
const overrideTag = { tag: '!override', collection: 'seq', resolve: (value: unknown): unknown => value } as const;
