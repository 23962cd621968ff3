import { resolve, sep } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseDigest } from '../../src/oci/digest.js';
import { RegistryError } from '../../src/oci/errors.js';
import { parseApiPath, routeName, type UpstreamTable } from '../../src/oci/path.js';
import { parseRange, resolveRange } from '../../src/oci/range.js';
import { parseReference } from '../../src/oci/reference.js';
import { createLayout } from '../../src/store/layout.js';

/**
 * Property tests: whatever a client sends, the parsers either return a value that obeys
 * the distribution grammar (and so maps to a path inside the store) or throw a 4xx
 * RegistryError. Never anything else, never a path outside the store.
 */
const table: UpstreamTable = {
  findUpstream: (host) => ({ 'docker.io': 'docker.io', 'ghcr.io': 'ghcr.io' })[host],
  defaultUpstream: 'docker.io',
  usesLibrary: (upstream) => upstream === 'docker.io',
};
const HEX = 'ab'.repeat(32);
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const ROOT = resolve('/srv/oci-mirror/store');
const layout = createLayout(ROOT);

/** Runs `fn`; a throw must be a RegistryError with a 4xx status. */
function valueOr4xx<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    const status = (err as RegistryError).statusCode;
    expect(status >= 400 && status < 500, String(status)).toBe(true);
    return undefined;
  }
}

const insideStore = (path: string): boolean => resolve(path).startsWith(ROOT + sep);

/** Path segments that matter: grammar edges, traversal, escapes, routing words. */
const segment = fc.oneof(
  fc.constantFrom('a', 'org', 'x.y', 'a_b', 'a__b', 'a---b', 'A', '..', '.', '', '_x', '-a', 'a.', 'ghcr.io', 'docker.io'),
  fc.constantFrom('manifests', 'blobs', 'tags', 'list', 'referrers', 'uploads', '_catalog', 'latest', `sha256:${HEX}`, 'sha256:xyz'),
  fc.constantFrom('%2e%2e', '%2f', '%00', '%5c', '..\\..', '\u0000', '\n', ' ', '\u00e9', '~root', '$HOME'),
  fc.string({ maxLength: 8 }),
  fc.stringMatching(/^[a-z0-9._-]{1,20}$/),
);
const apiPath = fc.array(segment, { maxLength: 10 }).map((parts) => `/v2/${parts.join('/')}`);

describe('parsers under random input', () => {
  it('parseDigest yields only sha256 with 64 lowercase hex, else DIGEST_INVALID 400', () => {
    const digestish = fc.oneof(
      fc.string(),
      fc
        .tuple(fc.constantFrom('sha256', 'SHA256', 'sha512', 'md5', ''), fc.stringMatching(/^[0-9a-fA-F]{0,130}$/))
        .map(([a, h]) => `${a}:${h}`),
    );
    fc.assert(
      fc.property(digestish, (text) => {
        try {
          expect(parseDigest(text)).toMatch(/^sha256:[a-f0-9]{64}$/);
        } catch (err) {
          expect(err).toMatchObject({ code: 'DIGEST_INVALID', statusCode: 400 });
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('parseReference yields a tag of the grammar or a valid digest, else a 400', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.stringMatching(/^[\w.:-]{0,140}$/)), (text) => {
        const ref = valueOr4xx(() => parseReference(text));
        if (ref?.kind === 'tag') expect(ref.tag).toMatch(/^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/);
        if (ref?.kind === 'digest') expect(ref.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
      }),
      { numRuns: 3000 },
    );
  });

  it('parseApiPath and routeName yield grammar names whose store paths stay inside the store', () => {
    fc.assert(
      fc.property(apiPath, fc.option(fc.constantFrom('docker.io', 'ghcr.io', 'evil.test', '..', ''), { nil: undefined }), (path, ns) => {
        const api = valueOr4xx(() => parseApiPath(path));
        if (api === undefined || !('name' in api)) return;
        const route = valueOr4xx(() => routeName(api.name, ns, table));
        if (route === undefined) return;
        expect(route.repository).toMatch(NAME);
        expect(route.repository.length).toBeLessThanOrEqual(255 + 'library/'.length);
        const tag = api.kind === 'manifest' && api.reference.kind === 'tag' ? api.reference.tag : 'latest';
        expect(insideStore(layout.tagPath(route.upstream, route.repository, tag))).toBe(true);
        if (api.kind === 'blob') expect(insideStore(layout.blobPath(api.digest))).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });

  it('parseRange and resolveRange yield a window inside the blob, else RANGE_INVALID', () => {
    const header = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc
        .tuple(
          fc.constantFrom('bytes=', 'bytes =', 'items=', 'BYTES='),
          fc.option(fc.nat(), { nil: undefined }),
          fc.option(fc.nat(), { nil: undefined }),
          fc.constantFrom('', ',0-1', ' '),
        )
        .map(([unit, a, b, tail]) => `${unit}${a ?? ''}-${b ?? ''}${tail}`),
    );
    fc.assert(
      fc.property(header, fc.nat({ max: 1 << 30 }), (text, sizeBytes) => {
        const spec = valueOr4xx(() => parseRange(text));
        if (spec === undefined) return;
        const range = valueOr4xx(() => resolveRange(spec, sizeBytes));
        if (range === undefined) return;
        expect(range.start).toBeGreaterThanOrEqual(0);
        expect(range.end).toBeGreaterThanOrEqual(range.start);
        expect(range.end).toBeLessThan(sizeBytes);
      }),
      { numRuns: 3000 },
    );
  });
});
