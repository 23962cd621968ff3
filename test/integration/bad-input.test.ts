import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { rawRequest, requestHead, type RawResponse } from '../support/raw-http.js';

/**
 * Bad input from clients, sent as raw bytes (fetch would normalise most of it): each
 * request gets the spec's 4xx OCI error, no upstream is contacted, and nothing is
 * written anywhere, in the store or beside it.
 */
const HEX = 'a'.repeat(64);
const DIGEST = `sha256:${HEX}`;
/** OCI distribution spec §"Error Codes", plus 416 for ranges. */
const SPEC_CODES = [
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
  'RANGE_INVALID',
];

interface Case {
  readonly name: string;
  readonly request: string | Buffer;
  readonly status: number;
  readonly code: string;
}

const get = (target: string, headers: Record<string, string> = {}): string => requestHead('GET', target, headers);

/** Every file and directory under `dir`, relative to it. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}

describe('bad input from clients', () => {
  let base: string;
  let upstream: FakeUpstream;
  let mirror: MirrorHandle;
  let port: number;
  /** A server no request may ever reach: named by ns, prefixes and absolute-form targets. */
  let victim: Server;
  let victimPort: number;
  let victimConnections = 0;
  let before: string[];

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'oci-mirror-bad-input-'));
    await mkdir(join(base, 'etc'));
    await writeFile(join(base, 'etc', 'passwd'), 'canary\n');
    upstream = await startFakeUpstream();
    mirror = await startMirror(
      { upstreams: { 'fake.test': { url: upstream.url } }, upstreamDefaults: { retries: 0, downFor: '0s' } },
      { storeDir: join(base, 'store') },
    );
    port = Number(new URL(mirror.url).port);
    victim = createServer((socket) => {
      victimConnections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => victim.listen(0, '127.0.0.1', resolve));
    victimPort = (victim.address() as { port: number }).port;
    before = await tree(base);
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
    await new Promise((resolve) => victim?.close(resolve));
    await rm(base, { recursive: true, force: true });
  });

  function expectOciError(response: RawResponse | undefined, status: number, code: string): void {
    expect(response, 'the mirror answered').toBeDefined();
    if (!response) return;
    expect(response.status).toBe(status);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    const envelope = JSON.parse(response.body.toString()) as { errors: { code: string; message: string }[] };
    expect(envelope.errors).toHaveLength(1);
    expect(envelope.errors[0]?.code).toBe(code);
    expect(SPEC_CODES).toContain(envelope.errors[0]?.code);
  }

  const names: Case[] = [
    { name: '.. segments', request: get('/v2/a/../../etc/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'a name that is only ..', request: get(`/v2/../blobs/${DIGEST}`), status: 400, code: 'NAME_INVALID' },
    { name: '%2e%2e segments', request: get('/v2/%2e%2e/%2e%2e/etc/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: '%2f inside a component', request: get('/v2/a%2f..%2fb/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'an empty component (//)', request: get('/v2/a//b/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'a leading slash (///)', request: get('/v2///etc/passwd/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'upper case', request: get('/v2/Library/Alpine/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'a 256-character name', request: get(`/v2/${'a'.repeat(256)}/manifests/latest`), status: 400, code: 'NAME_INVALID' },
    { name: 'a 5000-character name', request: get(`/v2/${'ab/'.repeat(1666)}c/manifests/latest`), status: 400, code: 'NAME_INVALID' },
    { name: 'an encoded NUL', request: get('/v2/a%00b/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'an encoded newline', request: get('/v2/a%0d%0aset-cookie:x/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'a raw control byte', request: get('/v2/a\x01b/manifests/latest'), status: 400, code: 'UNSUPPORTED' },
    { name: 'a raw DEL byte', request: get('/v2/a\x7fb/manifests/latest'), status: 400, code: 'UNSUPPORTED' },
    { name: 'raw UTF-8 (not HTTP)', request: Buffer.from(get('/v2/caf\u00e9/manifests/latest'), 'utf8'), status: 400, code: 'UNSUPPORTED' },
    { name: 'percent-encoded UTF-8', request: get('/v2/caf%C3%A9/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'a % that is not an escape', request: get('/v2/a%zz/manifests/latest'), status: 400, code: 'NAME_INVALID' },
    { name: 'a 129-character tag', request: get(`/v2/a/manifests/${'t'.repeat(129)}`), status: 400, code: 'MANIFEST_INVALID' },
    { name: 'a tag starting with -', request: get('/v2/a/manifests/-latest'), status: 400, code: 'MANIFEST_INVALID' },
    { name: 'a tag with %2f', request: get('/v2/a/manifests/v1%2f..%2f..'), status: 400, code: 'MANIFEST_INVALID' },
    { name: 'an unknown ns', request: get('/v2/a/manifests/latest?ns=evil.example.com'), status: 404, code: 'NAME_UNKNOWN' },
    { name: 'an ns naming a loopback server', request: get(`/v2/a/manifests/latest?ns=127.0.0.1:${0}`), status: 404, code: 'NAME_UNKNOWN' },
    {
      name: 'an ns with a URL in it',
      request: get('/v2/a/manifests/latest?ns=http%3A%2F%2F169.254.169.254%2F'),
      status: 404,
      code: 'NAME_UNKNOWN',
    },
  ];

  const digests: Case[] = [
    { name: 'sha256:xyz', request: get('/v2/a/blobs/sha256:xyz'), status: 400, code: 'DIGEST_INVALID' },
    { name: 'a 63-hex digest', request: get(`/v2/a/blobs/sha256:${'a'.repeat(63)}`), status: 400, code: 'DIGEST_INVALID' },
    { name: 'a 65-hex digest', request: get(`/v2/a/blobs/sha256:${'a'.repeat(65)}`), status: 400, code: 'DIGEST_INVALID' },
    { name: 'upper-case hex', request: get(`/v2/a/blobs/sha256:${'A'.repeat(64)}`), status: 400, code: 'DIGEST_INVALID' },
    { name: 'an unknown algorithm', request: get(`/v2/a/blobs/md5:${'a'.repeat(32)}`), status: 400, code: 'DIGEST_INVALID' },
    { name: 'sha512, which we do not verify', request: get(`/v2/a/blobs/sha512:${'a'.repeat(128)}`), status: 400, code: 'DIGEST_INVALID' },
    { name: 'an empty digest', request: get('/v2/a/blobs/sha256:'), status: 400, code: 'DIGEST_INVALID' },
    {
      name: 'a traversal in the digest',
      request: get('/v2/a/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd'),
      status: 400,
      code: 'DIGEST_INVALID',
    },
    { name: 'a bad manifest digest', request: get('/v2/a/manifests/sha256:xyz'), status: 400, code: 'DIGEST_INVALID' },
    { name: 'a bad referrers digest', request: get('/v2/a/referrers/sha256:xyz'), status: 400, code: 'DIGEST_INVALID' },
  ];

  const ranges: Case[] = [
    ['multi-range', 'bytes=0-1,5-6'],
    ['end before start', 'bytes=5-1'],
    ['another unit', 'items=0-1'],
    ['no bounds', 'bytes=-'],
    ['not numbers', 'bytes=abc-def'],
    ['a 20-digit start', 'bytes=99999999999999999999-'],
    ['a negative start', 'bytes=-5-10'],
  ].map(([name, range]) => ({
    name: `Range: ${name}`,
    request: get(`/v2/a/blobs/${DIGEST}`, { Range: range as string }),
    status: 416,
    code: 'RANGE_INVALID',
  }));

  const protocol: Case[] = [
    {
      name: 'two Range headers',
      request: `GET /v2/a/blobs/${DIGEST} HTTP/1.1\r\nHost: m\r\nConnection: close\r\nRange: bytes=0-1\r\nRange: bytes=5-6\r\n\r\n`,
      status: 416,
      code: 'RANGE_INVALID',
    },
    {
      name: 'a 64 KiB header line',
      request: get(`/v2/a/blobs/${DIGEST}`, { 'X-Padding': 'x'.repeat(64 << 10) }),
      status: 431,
      code: 'UNSUPPORTED',
    },
    { name: 'a 64 KiB request target', request: get(`/v2/a/manifests/latest?q=${'x'.repeat(64 << 10)}`), status: 431, code: 'UNSUPPORTED' },
    { name: 'a malformed request line', request: 'GET /v2/ HTTP/9.9 extra\r\n\r\n', status: 400, code: 'UNSUPPORTED' },
    { name: 'an unknown method token', request: requestHead('FETCH', '/v2/a/manifests/latest'), status: 400, code: 'UNSUPPORTED' },
    {
      name: 'a header without a colon',
      request: 'GET /v2/ HTTP/1.1\r\nHost: m\r\nbroken header\r\n\r\n',
      status: 400,
      code: 'UNSUPPORTED',
    },
    { name: 'a request target that is not a path', request: get('*'), status: 404, code: 'NAME_UNKNOWN' },
    ...['POST', 'PUT', 'PATCH', 'DELETE'].map((method) => ({
      name: `${method} on a manifest`,
      request: requestHead(method, '/v2/a/manifests/latest', { 'Content-Length': '0' }),
      status: 405,
      code: 'UNSUPPORTED',
    })),
    ...['OPTIONS', 'TRACE', 'PROPFIND', 'PURGE'].map((method) => ({
      name: `${method} on a manifest`,
      request: requestHead(method, '/v2/a/manifests/latest'),
      status: 405,
      code: 'UNSUPPORTED',
    })),
    {
      name: 'POST to start an upload',
      request: requestHead('POST', '/v2/a/blobs/uploads/', { 'Content-Length': '0' }),
      status: 405,
      code: 'UNSUPPORTED',
    },
    { name: 'GET on an upload', request: get('/v2/a/blobs/uploads/some-uuid'), status: 405, code: 'UNSUPPORTED' },
    { name: 'the catalog', request: get('/v2/_catalog'), status: 405, code: 'UNSUPPORTED' },
  ];

  describe.each([
    ['repository names and tags', names],
    ['digests', digests],
    ['ranges', ranges],
    ['protocol', protocol],
  ] as const)('%s', (_group, cases) => {
    it.each(cases)('$name: the spec 4xx error, no upstream contact', async (c) => {
      const hits = upstream.hits.length;
      const request = typeof c.request === 'string' ? c.request.replace('127.0.0.1:0', `127.0.0.1:${victimPort}`) : c.request;
      expectOciError(await rawRequest(port, request), c.status, c.code);
      expect(upstream.hits.length).toBe(hits);
    });
  });

  it('never acts as a forward proxy: absolute-form targets and CONNECT reach no other server', async () => {
    const hits = upstream.hits.length;
    const absolute = await rawRequest(port, get(`http://127.0.0.1:${victimPort}/v2/a/manifests/latest`));
    expect(absolute?.status ?? 0).toBeGreaterThanOrEqual(400);
    expect(absolute?.status ?? 0).toBeLessThan(500);
    const upstreamAbsolute = await rawRequest(port, get(`${upstream.url}/v2/org/app/tags/list?ns=127.0.0.1:${victimPort}`));
    expect(upstreamAbsolute?.status ?? 0).toBeGreaterThanOrEqual(400);
    expect(upstreamAbsolute?.status ?? 0).toBeLessThan(500);
    // Node closes a CONNECT nobody handles; either way nothing is tunnelled.
    const tunnel = await rawRequest(port, `CONNECT 127.0.0.1:${victimPort} HTTP/1.1\r\nHost: 127.0.0.1:${victimPort}\r\n\r\n`);
    expect(tunnel === undefined || (tunnel.status >= 400 && tunnel.status < 500)).toBe(true);
    const hostHeader = await rawRequest(
      port,
      `GET /v2/a/manifests/latest?ns=127.0.0.1:${victimPort} HTTP/1.1\r\nHost: 127.0.0.1:${victimPort}\r\nConnection: close\r\n\r\n`,
    );
    expectOciError(hostHeader, 404, 'NAME_UNKNOWN');
    expect(victimConnections).toBe(0);
    expect(upstream.hits.length).toBe(hits);
  });

  it('answers random request targets with a 4xx OCI error or content, never a 5xx, and sends only valid names upstream', async () => {
    const segment = fc.oneof(
      fc.constantFrom(
        'a',
        'b0',
        'org',
        'x.y',
        'a_b',
        'a__b',
        'a-b',
        'A',
        '..',
        '.',
        '',
        '_',
        '-a',
        'manifests',
        'blobs',
        'tags',
        'list',
        'referrers',
      ),
      fc.constantFrom(
        'uploads',
        '_catalog',
        'latest',
        'v1.0',
        DIGEST,
        'sha256:xyz',
        `sha256:${'F'.repeat(64)}`,
        '%2e%2e',
        '%2f',
        '%00',
        '%0a',
        '%25',
        'fake.test',
      ),
      fc.stringMatching(/^[a-z0-9._%-]{1,12}$/),
      fc.string({ unit: 'binary-ascii', maxLength: 6 }).map((s) => encodeURIComponent(s)),
    );
    const target = fc
      .tuple(
        fc.array(segment, { minLength: 0, maxLength: 8 }),
        fc.option(fc.constantFrom('ns=fake.test', 'ns=evil.test', 'n=1', 'ns=', 'ns=%2e%2e'), { nil: undefined }),
      )
      .map(([parts, query]) => `/v2/${parts.join('/')}${query ? `?${query}` : ''}`);
    await fc.assert(
      fc.asyncProperty(target, fc.constantFrom('GET', 'HEAD'), async (path, method) => {
        const response = await rawRequest(port, requestHead(method, path));
        expect(response, path).toBeDefined();
        if (!response) return;
        expect(response.status, path).toBeLessThan(500);
        if (response.status >= 400 && method === 'GET') {
          const envelope = JSON.parse(response.body.toString()) as { errors: { code: string }[] };
          expect(SPEC_CODES, path).toContain(envelope.errors[0]?.code);
        }
      }),
      { numRuns: 400 },
    );
    for (const hit of upstream.hits) {
      const name = /^\/v2\/(.+)\/(?:manifests|blobs|tags|referrers)\//.exec(hit.path)?.[1] ?? '';
      expect(name, hit.path).toMatch(/^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/);
    }
  });

  it('wrote nothing anywhere: the store and what lies beside it are as they were', async () => {
    expect(await tree(base)).toEqual(before);
    expect(victimConnections).toBe(0);
  });
});
