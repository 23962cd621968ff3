import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RegistryError } from '../../src/oci/errors.js';
import { parseApiPath, routeName, type UpstreamTable } from '../../src/oci/path.js';
import { isValidName } from '../../src/oci/reference.js';
import { parseRange, resolveRange } from '../../src/oci/range.js';
import { acceptsManifest, parseAccept, parseRefused } from '../../src/oci/media-types.js';

const table: UpstreamTable = {
  findUpstream: (host) =>
    ({ 'docker.io': 'docker.io', 'index.docker.io': 'docker.io', 'registry-1.docker.io': 'docker.io', 'ghcr.io': 'ghcr.io' })[host],
  defaultUpstream: 'docker.io',
  usesLibrary: (upstream) => upstream === 'docker.io',
};
const HEX = 'a'.repeat(64);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof RegistryError ? `${err.code} ${err.statusCode}` : 'not a RegistryError';
  }
  return undefined;
}

describe('parseApiPath', () => {
  it('parses every pull-side form, matching names with slashes from the end', () => {
    expect(parseApiPath('/v2/')).toEqual({ kind: 'base' });
    expect(parseApiPath('/v2')).toEqual({ kind: 'base' });
    expect(parseApiPath('/v2/team/sub/app/manifests/1.0')).toEqual({
      kind: 'manifest',
      name: 'team/sub/app',
      reference: { kind: 'tag', tag: '1.0' },
    });
    expect(parseApiPath(`/v2/a/manifests/manifests/sha256:${HEX}`)).toEqual({
      kind: 'manifest',
      name: 'a/manifests',
      reference: { kind: 'digest', digest: `sha256:${HEX}` },
    });
    expect(parseApiPath(`/v2/a/blobs/sha256:${HEX}`)).toEqual({ kind: 'blob', name: 'a', digest: `sha256:${HEX}` });
    expect(parseApiPath('/v2/a/b/tags/list')).toEqual({ kind: 'tags', name: 'a/b' });
    expect(parseApiPath(`/v2/a/referrers/sha256:${HEX}`)).toEqual({ kind: 'referrers', name: 'a', digest: `sha256:${HEX}` });
    expect(parseApiPath('/v2/a/blobs/uploads/').kind).toBe('push');
    expect(parseApiPath('/v2/a/blobs/uploads/3f2a-uuid').kind).toBe('push');
    expect(parseApiPath('/v2/_catalog').kind).toBe('catalog');
  });

  it('refuses bad digests with DIGEST_INVALID and bad tags with a 400', () => {
    for (const digest of ['sha256:xyz', `sha256:${'a'.repeat(63)}`, `sha256:${'A'.repeat(64)}`, `sha512:${'a'.repeat(128)}`]) {
      expect(codeOf(() => parseApiPath(`/v2/a/blobs/${digest}`))).toBe('DIGEST_INVALID 400');
    }
    expect(codeOf(() => parseApiPath(`/v2/a/manifests/${'t'.repeat(129)}`))).toMatch(/ 400$/);
    expect(codeOf(() => parseApiPath('/v2/a/manifests/-bad'))).toMatch(/ 400$/);
    expect(codeOf(() => parseApiPath('/v3/a/manifests/x'))).toBe('NAME_UNKNOWN 404');
  });
});

describe('routeName', () => {
  it('routes ?ns= through the allowlist, folding Docker Hub aliases and adding library/', () => {
    expect(routeName('alpine', 'docker.io', table)).toEqual({ upstream: 'docker.io', repository: 'library/alpine' });
    expect(routeName('alpine', 'index.docker.io', table)).toEqual({ upstream: 'docker.io', repository: 'library/alpine' });
    expect(routeName('alpine', 'REGISTRY-1.DOCKER.IO', table)).toEqual({ upstream: 'docker.io', repository: 'library/alpine' });
    expect(routeName('org/app', 'ghcr.io', table)).toEqual({ upstream: 'ghcr.io', repository: 'org/app' });
    expect(routeName('app', 'ghcr.io', table)).toEqual({ upstream: 'ghcr.io', repository: 'app' });
  });

  it('refuses an unknown ns instead of dialling it', () => {
    expect(codeOf(() => routeName('alpine', 'evil.example.com', table))).toBe('NAME_UNKNOWN 404');
    expect(codeOf(() => routeName('alpine', '169.254.169.254', table))).toBe('NAME_UNKNOWN 404');
  });

  it('takes a configured registry as a path prefix, else sends the whole name to the default upstream', () => {
    expect(routeName('ghcr.io/org/app', undefined, table)).toEqual({ upstream: 'ghcr.io', repository: 'org/app' });
    expect(routeName('docker.io/alpine', undefined, table)).toEqual({ upstream: 'docker.io', repository: 'library/alpine' });
    expect(routeName('myorg/app', undefined, table)).toEqual({ upstream: 'docker.io', repository: 'myorg/app' });
    expect(routeName('ghcr.io/org/app', 'docker.io', table)).toEqual({ upstream: 'docker.io', repository: 'ghcr.io/org/app' });
  });

  it('refuses names outside the distribution grammar with NAME_INVALID', () => {
    for (const name of ['a/../b', '%2e%2e/b', 'a//b', 'Upper/case', 'a\u0000b', 'x'.repeat(256), '.hidden', 'a/_links']) {
      expect(codeOf(() => routeName(name, undefined, table))).toBe('NAME_INVALID 400');
    }
  });

  it('never lets a random path through as anything but a valid name or a RegistryError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), fc.option(fc.string({ maxLength: 40 }), { nil: undefined }), (raw, ns) => {
        try {
          const api = parseApiPath(`/v2/${raw}`);
          if ('name' in api) {
            const route = routeName(api.name, ns, table);
            expect(isValidName(route.repository)).toBe(true);
            expect(route.repository).not.toMatch(/\.\.|%|^\/|\/\//);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(RegistryError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('Range and Accept', () => {
  it('parses single ranges and refuses multi-range or malformed headers', () => {
    expect(parseRange('bytes=524288-')).toEqual({ kind: 'from', start: 524288 });
    expect(parseRange('bytes=0-99')).toEqual({ kind: 'from', start: 0, end: 99 });
    expect(parseRange('bytes=-10')).toEqual({ kind: 'suffix', length: 10 });
    expect(parseRange(undefined)).toBeUndefined();
    for (const bad of ['bytes=0-1,5-6', 'bytes=5-1', 'items=0-1', 'bytes=-', 'bytes=abc-']) {
      expect(codeOf(() => parseRange(bad))).toBe('RANGE_INVALID 416');
    }
  });

  it('resolves ranges against the size, clamping the end and refusing a start past it', () => {
    expect(resolveRange({ kind: 'from', start: 10, end: 1000 }, 100)).toEqual({ start: 10, end: 99 });
    expect(resolveRange({ kind: 'suffix', length: 500 }, 100)).toEqual({ start: 0, end: 99 });
    expect(resolveRange({ kind: 'suffix', length: 10 }, 100)).toEqual({ start: 90, end: 99 });
    try {
      resolveRange({ kind: 'from', start: 100 }, 100);
      expect.unreachable();
    } catch (err) {
      expect((err as RegistryError).headers['content-range']).toBe('bytes */100');
    }
  });

  it('reads Accept as a list, whether sent as many lines or one comma-joined line', () => {
    expect(parseAccept(['application/vnd.oci.image.index.v1+json', 'application/json'])).toEqual([
      'application/vnd.oci.image.index.v1+json',
      'application/json',
    ]);
    expect(parseAccept('application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json;q=0.9, */*')).toEqual(
      ['application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.index.v1+json', '*/*'],
    );
    expect(parseAccept(undefined)).toEqual([]);
  });

  it('serves a manifest to clients that accept its type, a wildcard, or name no manifest type', () => {
    const index = 'application/vnd.oci.image.index.v1+json';
    expect(acceptsManifest([], index)).toBe(true);
    expect(acceptsManifest(['application/vnd.oci.image.manifest.v1+json', '*/*'], index)).toBe(true);
    expect(acceptsManifest(['a/one'], index)).toBe(true);
    expect(acceptsManifest([index], index)).toBe(true);
    expect(acceptsManifest(['application/vnd.docker.distribution.manifest.v2+json'], index)).toBe(false);
  });

  it('never serves a type the client marked q=0 (RFC 9110 §12.4.2)', () => {
    const manifest = 'application/vnd.oci.image.manifest.v1+json';
    const refuse = (header: string) => acceptsManifest(parseAccept(header), manifest, parseRefused(header));
    expect(parseRefused(`${manifest};q=0, */*;Q=0.000, a/b;q=0.5`)).toEqual([manifest, '*/*']);
    expect(refuse(`${manifest};q=0`)).toBe(false);
    expect(refuse(`${manifest} ; q=0.0, */*`)).toBe(false);
    expect(refuse(`application/vnd.oci.image.index.v1+json, */*;q=0`)).toBe(false);
    expect(refuse(`${manifest};q=0.001`)).toBe(true);
    expect(refuse(`${manifest}, */*;q=0`)).toBe(true);
    expect(refuse(`application/vnd.oci.image.index.v1+json;q=0`)).toBe(true);
  });
});
