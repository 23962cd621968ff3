import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamConfig, UpstreamCredentials } from '../../src/config/types.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { createUpstream, type UpstreamRequest } from '../../src/upstream/client.js';
import { TEST_UPSTREAM_POLICY } from '../support/upstream-config.js';

/**
 * Rotating credentials: a Docker credential helper (`docker-credential-<name> get`, the
 * registry host on stdin, `{"Username","Secret"}` on stdout) run once per TTL and again
 * when the upstream refuses its answer; secrets never reach logs or errors.
 */
let dir: string;
let registry: { origin: string; accepted: string; seen: (string | undefined)[]; close(): Promise<void> };
const logLines: string[] = [];
const savedPath = process.env['PATH'];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oci-mirror-helper-'));
  // The helper hands out whatever secret file holds; it logs each run and its stdin.
  await writeFile(
    join(dir, 'docker-credential-test'),
    `#!/bin/sh\nread host\necho "$host" >> "${dir}/runs"\n` +
      `if [ -f "${dir}/fail" ]; then echo "leaked $(cat "${dir}/secret")" >&2; exit 3; fi\n` +
      `printf '{"ServerURL":"%s","Username":"AWS","Secret":"%s"}' "$host" "$(cat "${dir}/secret")"\n`,
  );
  await chmod(join(dir, 'docker-credential-test'), 0o755);
  await writeFile(join(dir, 'secret'), 'first-secret-b5e1');
  process.env['PATH'] = `${dir}:${savedPath ?? ''}`;
  const seen: (string | undefined)[] = [];
  const state = { accepted: basic('first-secret-b5e1') };
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    if (req.headers.authorization === state.accepted) return void res.writeHead(200, { 'content-length': '2' }).end('ok');
    res.writeHead(401, { 'www-authenticate': 'Basic realm="r",service="ecr.amazonaws.com"' }).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  registry = {
    origin,
    get accepted() {
      return state.accepted;
    },
    set accepted(value: string) {
      state.accepted = value;
    },
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
});

afterAll(async () => {
  process.env['PATH'] = savedPath;
  await registry?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function basic(secret: string): string {
  return `Basic ${Buffer.from(`AWS:${secret}`).toString('base64')}`;
}

const request: UpstreamRequest = { method: 'GET', repository: 'team/app', path: 'manifests/v1', notFound: 'MANIFEST_UNKNOWN' };

function upstream(credentials: UpstreamCredentials) {
  const config: UpstreamConfig = {
    name: 'ecr',
    url: registry.origin,
    ...TEST_UPSTREAM_POLICY,
    credentials,
  };
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString());
      done();
    },
  });
  return createUpstream(config, { metrics: createMetrics({ processMetrics: false }), log: createLogger('debug', sink) });
}

async function get(client: ReturnType<typeof upstream>): Promise<string> {
  const res = await client.request(request);
  return (await res.body.toArray()).join('');
}

async function runs(): Promise<string[]> {
  return (await readFile(join(dir, 'runs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
}

describe('auth.helper', () => {
  it('runs the helper with the registry host on stdin, keeps its answer, and runs it again once refused', async () => {
    const client = upstream({ username: '', helper: 'test', helperTtlMs: 3_600_000 });
    try {
      expect(await get(client)).toBe('ok');
      expect(await get(client)).toBe('ok');
      expect(await runs()).toEqual([new URL(registry.origin).host]);
      // The token rotates upstream: the cached answer is refused, the helper runs once more.
      await writeFile(join(dir, 'secret'), 'second-secret-93aa');
      registry.accepted = basic('second-secret-93aa');
      expect(await get(client)).toBe('ok');
      expect(await runs()).toHaveLength(2);
      expect(registry.seen.slice(-2)).toEqual([basic('first-secret-b5e1'), basic('second-secret-93aa')]);
    } finally {
      await client.close();
    }
  });

  it('fails without the helper output in the error, and no secret is ever logged', async () => {
    await writeFile(join(dir, 'fail'), '');
    await writeFile(join(dir, 'secret'), 'third-secret-7c0d');
    registry.accepted = basic('third-secret-7c0d');
    const client = upstream({ username: '', helper: 'test', helperTtlMs: 1 });
    try {
      const failure = await client.request(request).catch((err: unknown) => err);
      expect(failure).toMatchObject({ code: 'UNAVAILABLE' });
      expect(String((failure as Error).message)).toContain('docker-credential-test');
      expect(JSON.stringify(failure)).not.toContain('third-secret');
      expect(String((failure as Error).message)).not.toContain('third-secret');
    } finally {
      await client.close();
      await rm(join(dir, 'fail'));
    }
    const log = logLines.join('');
    expect(log).toContain('authenticate upstream request');
    for (const secret of ['first-secret', 'second-secret', 'third-secret']) expect(log).not.toContain(secret);
    for (const secret of ['first-secret-b5e1', 'second-secret-93aa'])
      expect(log).not.toContain(Buffer.from(`AWS:${secret}`).toString('base64'));
  });
});
