import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import {
  startStyledRegistry,
  styleImage,
  type Seen,
  type StyleImage,
  type StyleSpec,
  type StyledRegistry,
} from '../support/registry-styles.js';
import { readDirImage, skopeoCopy } from '../support/skopeo.js';

/**
 * One skopeo pull per registry style through the mirror, cold then warm, against
 * emulations that refuse what the real services refuse (test/support/registry-styles.ts).
 * Every cold pull costs one 401 per origin that challenges; a warm pull revalidates its
 * tag with the token or credentials already known (no 401) and fetches no blob.
 */
interface Case {
  readonly spec: StyleSpec;
  readonly repository: string;
  /** The upstream's `auth` block, given the running emulation. */
  readonly auth?: (registry: StyledRegistry) => Record<string, unknown>;
  /** Origins that answer 401 once on a cold pull. */
  readonly challengingOrigins: number;
}

const ecrPassword = { value: 'ecr-token-1' };
const secret = 'gl-private-token-7f3a';
const acrSecret = 'acr-scoped-token-91c2';

const CASES: readonly Case[] = [
  {
    spec: {
      name: 'docker-hub',
      auth: 'bearer',
      realmHost: 'other',
      service: 'registry.docker.io',
      tokenFields: 'both',
      storage: { status: 307, ttlMs: 60_000 },
    },
    repository: 'library/alpine-styled',
    challengingOrigins: 1,
  },
  {
    spec: { name: 'ghcr', auth: 'bearer', service: 'ghcr.io', storage: { status: 307, ttlMs: 60_000 } },
    repository: 'owner/app',
    challengingOrigins: 1,
  },
  {
    spec: { name: 'quay', auth: 'bearer', realmPath: '/v2/auth', service: 'quay.io', storage: { status: 302, ttlMs: 2_000 } },
    repository: 'org/app',
    challengingOrigins: 1,
  },
  {
    spec: {
      name: 'registry.k8s.io',
      auth: 'bearer',
      realmPath: '/v2/token',
      service: 'us-docker.pkg.dev',
      frontPrefix: 'k8s-artifacts-prod/images/',
      storage: { status: 302, ttlMs: 60_000 },
    },
    repository: 'pause',
    challengingOrigins: 1,
  },
  {
    spec: {
      name: 'ecr',
      auth: 'basic',
      service: 'ecr.amazonaws.com',
      credentials: () => ({ username: 'AWS', password: ecrPassword.value }),
      storage: { status: 307, ttlMs: 60_000 },
    },
    repository: 'team/service',
    auth: () => ({ username: 'AWS', passwordFile: ecrFile }),
    challengingOrigins: 1,
  },
  {
    spec: {
      name: 'ecr-public',
      auth: 'bearer',
      realmPath: '/token/',
      service: 'public.ecr.aws',
      challengeScope: 'aws',
      storage: { status: 307, ttlMs: 60_000 },
    },
    repository: 'docker/library/busybox',
    challengingOrigins: 1,
  },
  {
    spec: { name: 'mcr', auth: 'anonymous', storage: { status: 307, ttlMs: 60_000 } },
    repository: 'dotnet/runtime',
    challengingOrigins: 0,
  },
  {
    spec: {
      name: 'acr',
      auth: 'bearer',
      realmPath: '/oauth2/token',
      service: 'myreg.azurecr.io',
      tokenFields: 'access_token',
      anonymousTokens: 'refused',
      credentials: () => ({ username: '00000000-0000-0000-0000-000000000000', password: acrSecret }),
      storage: { status: 307, ttlMs: 60_000 },
    },
    repository: 'apps/web',
    auth: () => ({ username: '00000000-0000-0000-0000-000000000000', passwordEnv: 'ACR_TOKEN' }),
    challengingOrigins: 1,
  },
  {
    spec: {
      name: 'gitlab',
      auth: 'bearer',
      realmHost: 'other',
      realmPath: '/jwt/auth',
      service: 'container_registry',
      anonymousTokens: 'unscoped',
      credentials: () => ({ username: 'deploy', password: secret }),
    },
    repository: 'group/project/image',
    auth: (registry) => ({ username: 'deploy', passwordEnv: 'GITLAB_TOKEN', realms: [registry.realmOrigin] }),
    challengingOrigins: 1,
  },
  {
    spec: { name: 'harbor', auth: 'bearer', realmPath: '/service/token', service: 'harbor-registry' },
    repository: 'proxy/library/nginx',
    challengingOrigins: 1,
  },
];

let ecrFile = '';
const table: string[] = ['| style | pull | registry | realm (token) | storage | front | 401s |', '|---|---|---|---|---|---|---|'];

describe('registry styles, pulled with skopeo through the mirror', () => {
  let out: string;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'oci-mirror-styles-'));
    ecrFile = join(out, 'ecr-password');
    await writeFile(ecrFile, `${ecrPassword.value}\n`);
  });

  afterAll(async () => {
    console.log(table.join('\n'));
    if (out) await rm(out, { recursive: true, force: true });
  });

  for (const c of CASES) {
    it(`${c.spec.name}: cold and warm, exact digests, tokens only where they belong`, async () => {
      const image = styleImage(c.repository, '1.0', c.spec.name, [48 << 10, 160 << 10]);
      const second = styleImage(`${c.repository}-next`, '2.0', `${c.spec.name}-next`, [32 << 10]);
      const registry = await startStyledRegistry(c.spec, [image, second]);
      let mirror: MirrorHandle | undefined;
      try {
        mirror = await startMirror(
          // Tags revalidate on every pull, so the warm pull shows the cached token reused.
          { upstreams: { [c.spec.name]: { url: registry.url, freshFor: '1ms', ...(c.auth ? { auth: c.auth(registry) } : {}) } } },
          { env: { GITLAB_TOKEN: secret, ACR_TOKEN: acrSecret } },
        );
        await pullAndCheck(mirror, image, join(out, `${c.spec.name}-cold`));
        const cold = registry.seen.splice(0);
        record(c.spec.name, 'cold', cold);
        expect(cold.filter((s) => s.status === 401)).toHaveLength(c.challengingOrigins);
        expectNoLeaks(cold);
        await pullAndCheck(mirror, image, join(out, `${c.spec.name}-warm`));
        const warm = registry.seen.splice(0);
        record(c.spec.name, 'warm', warm);
        expect(warm.filter((s) => s.kind === 'blob' || s.kind === 'storage')).toHaveLength(0);
        expect(warm.filter((s) => s.status === 401)).toHaveLength(0);
        expect(warm.filter((s) => s.host === 'registry' && s.method === 'HEAD' && s.kind === 'manifest' && s.status === 200)).toHaveLength(
          1,
        );
        if (c.spec.name === 'ecr') await rotateEcr(mirror, registry, second, out);
      } finally {
        await mirror?.stop();
        await registry.stop();
      }
    });
  }

  it('gitlab: a private project without credentials is refused (insufficient_scope), not served', async () => {
    const spec = CASES.find((c) => c.spec.name === 'gitlab')?.spec as StyleSpec;
    const image = styleImage('group/private/image', '1.0', 'gl-private', [1024]);
    const registry = await startStyledRegistry(spec, [image]);
    const mirror = await startMirror({ upstreams: { gitlab: { url: registry.url } } });
    try {
      await expect(skopeoCopy(`${mirror.host}/group/private/image:1.0`, join(out, 'gl-anon'))).rejects.toThrow();
      // An anonymous token was granted without the scope, and the registry refused it.
      expect(registry.seen.filter((s) => s.kind === 'token').length).toBeGreaterThan(0);
      expect(registry.seen.some((s) => s.kind === 'manifest' && s.status === 401 && s.authorization?.startsWith('Bearer '))).toBe(true);
      expect(registry.seen.some((s) => s.kind === 'manifest' && s.status === 200)).toBe(false);
    } finally {
      await mirror.stop();
      await registry.stop();
    }
  });
});

async function pullAndCheck(mirror: MirrorHandle, image: StyleImage, dest: string): Promise<void> {
  await skopeoCopy(`${mirror.host}/${image.repository}:${image.tag}`, dest);
  const pulled = await readDirImage(dest);
  expect(pulled.topDigest).toBe(image.digest);
  expect(pulled.blobs.map((b) => b.digest).sort()).toEqual([...image.blobs.keys()].sort());
  for (const blob of pulled.blobs) expect(blob.sha256).toBe(blob.digest);
}

/** Storage and front hosts never see Authorization; no signed URL was refused. */
function expectNoLeaks(seen: readonly Seen[]): void {
  for (const s of seen.filter((x) => x.host === 'storage' || x.host === 'front')) expect(s.authorization).toBeUndefined();
  expect(seen.filter((s) => s.host === 'storage' && s.status !== 200)).toEqual([]);
}

/**
 * ECR: the 12-hour token rotates (the registry now takes only the new one); the mirror
 * reads it from its file at the next use, without a restart and without a refused request.
 */
async function rotateEcr(mirror: MirrorHandle, registry: StyledRegistry, next: StyleImage, out: string): Promise<void> {
  ecrPassword.value = 'ecr-token-2';
  await writeFile(ecrFile, `${ecrPassword.value}\n`);
  await pullAndCheck(mirror, next, join(out, 'ecr-rotated'));
  const seen = registry.seen.splice(0);
  record('ecr, password rotated', 'cold', seen);
  expect(seen.filter((s) => s.status === 401)).toHaveLength(0);
}

function record(style: string, pull: string, seen: readonly Seen[]): void {
  const at = (host: Seen['host']) => {
    const kinds = new Map<string, number>();
    for (const s of seen.filter((x) => x.host === host)) kinds.set(`${s.method} ${s.kind}`, (kinds.get(`${s.method} ${s.kind}`) ?? 0) + 1);
    return [...kinds].map(([k, n]) => `${k} ×${n}`).join(', ') || '–';
  };
  table.push(
    `| ${style} | ${pull} | ${at('registry')} | ${at('realm')} | ${at('storage')} | ${at('front')} | ${seen.filter((s) => s.status === 401).length} |`,
  );
}
