import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, pushIndex, type Pushed } from '../support/images.js';
import { startMirror, startMirrorProcess, type MirrorHandle } from '../support/mirror.js';
import { freePort } from '../support/ports.js';
import { readDirImage, skopeoCopy } from '../support/skopeo.js';
import { tempFiles } from '../support/store.js';
import { startContainerd } from '../support/containerd.js';
import { fetchHashed } from '../support/http.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The built CLI, as an operator runs it. */
async function cli(args: readonly string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['dist/main.js', ...args], { timeout: 120_000, maxBuffer: 64 * MiB });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/**
 * Air-gapped operation end to end: warm from a real registry, export one bundle,
 * import it into an empty store on the far side, serve it with no upstream at all.
 */
describe('warm, export, import, offline', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let work: string;
  let single: Pushed;
  let multi: Pushed;
  let dockerList: Pushed;
  let connectedConfig: string;
  let connectedStore: string;
  const IMAGES = ['alpine-synth:3.20', 'ghcr.io/team/app:v1', 'docker.io/library/busybox-synth'];

  beforeAll(async () => {
    registry = await startRegistry();
    single = await pushImage(
      registry.url,
      'library/alpine-synth',
      '3.20',
      buildImage({ mediaTypes: 'oci', layers: [{ seed: 'ag-single', size: 2 * MiB }] }),
    );
    multi = await pushIndex(registry.url, 'team/app', 'v1', {
      mediaTypes: 'oci',
      images: [
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'ag-shared', size: MiB },
            { seed: 'ag-amd64', size: MiB },
          ],
          platform: { os: 'linux', architecture: 'amd64' },
        }),
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'ag-shared', size: MiB },
            { seed: 'ag-arm64', size: MiB },
          ],
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        }),
      ],
    });
    dockerList = await pushIndex(registry.url, 'library/busybox-synth', 'latest', {
      mediaTypes: 'docker',
      images: [
        buildImage({
          mediaTypes: 'docker',
          layers: [{ seed: 'ag-docker', size: 512 * 1024 }],
          platform: { os: 'linux', architecture: 'amd64' },
        }),
      ],
    });
    proxy = await startCountingProxy(registry.url);
    work = await mkdtemp(join(tmpdir(), 'oci-mirror-airgap-'));
    connectedStore = join(work, 'connected');
    connectedConfig = await writeConfig('connected.json', {
      store: { path: connectedStore },
      upstreams: { 'docker.io': { url: proxy.url, library: true }, 'ghcr.io': { url: proxy.url } },
    });
  });

  afterAll(async () => {
    await proxy?.stop();
    await registry?.dispose();
    await rm(work, { recursive: true, force: true });
  });

  async function writeConfig(name: string, config: object): Promise<string> {
    const path = join(work, name);
    await writeFile(path, JSON.stringify({ log: { level: 'silent' }, ...config }));
    return path;
  }

  it('round trip: warm 3 images, export, import with no upstream, pull each by tag and digest with skopeo and containerd', async () => {
    const warm = await cli(['warm', ...IMAGES, '--config', connectedConfig, '--json']);
    expect(warm.code, warm.stderr).toBe(0);
    const events = warm.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; ref?: string; images?: { ref: string; fetchedBytes: number }[] });
    expect(
      events
        .filter((e) => e.type === 'done')
        .map((e) => e.ref)
        .sort(),
    ).toEqual([...IMAGES].sort());
    const summary = events.at(-1);
    expect(summary?.type).toBe('summary');
    expect(summary?.images?.every((i) => i.fetchedBytes > 0)).toBe(true);

    // Re-running resumes: everything is cached, nothing is fetched.
    proxy.reset();
    const again = await cli(['warm', ...IMAGES, '--config', connectedConfig]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/IMAGE\s+PLATFORMS\s+BYTES\s+CACHED\s+FETCHED\s+TIME/);
    expect(again.stdout).toContain('3 warmed, 0 failed');
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);

    const bundle = join(work, 'bundle.tar');
    const exported = await cli(['export', '--all', '--output', bundle, '--config', connectedConfig]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout).toContain('exported 3 images');
    // The bundle is a plain oci-archive: skopeo reads an image out of it by its full name.
    const policy = join(work, 'policy.json');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const fromArchive = await mkdtemp(join(work, 'archive-'));
    await run('skopeo', [
      '--policy',
      policy,
      'copy',
      '--preserve-digests',
      `oci-archive:${bundle}:docker.io/library/alpine-synth:3.20`,
      `dir:${fromArchive}`,
    ]);
    expect((await readDirImage(fromArchive)).topDigest).toBe(single.topDigest);

    const farStore = join(work, 'far');
    const farConfig = await writeConfig('far.json', {
      store: { path: farStore },
      offline: true,
      upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', library: true }, 'ghcr.io': { url: 'http://127.0.0.1:9' } },
    });
    const imported = await cli(['import', bundle, '--config', farConfig]);
    expect(imported.code, imported.stdout + imported.stderr).toBe(0);
    expect(imported.stdout).toContain('imported 3 images');

    const far = await startMirror(
      { upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', library: true }, 'ghcr.io': { url: 'http://127.0.0.1:9' } }, offline: true },
      { storeDir: farStore },
    );
    try {
      await expectPulled(far, 'library/alpine-synth:3.20', single, false);
      await expectPulled(far, `library/alpine-synth@${single.topDigest}`, single, false);
      await expectPulled(far, 'ghcr.io/team/app:v1', multi, true);
      await expectPulled(far, `ghcr.io/team/app@${multi.topDigest}`, multi, true);
      await expectPulled(far, 'library/busybox-synth:latest', dockerList, true);
      await expectContainerdPulled(far);
      const miss = await fetchHashed(`${far.url}/v2/library/never-warmed/manifests/1`, { keepBody: true });
      expect(miss.status).toBe(404);
      expect(miss.body?.toString()).toMatch(/MANIFEST_UNKNOWN.*offline/);
      const offlineMisses = await far.runtime.metrics.offlineMisses.get();
      expect(offlineMisses.values.reduce((sum, v) => sum + v.value, 0)).toBe(1);
    } finally {
      await far.stop();
    }
  });

  /** containerd through hosts.toml (`?ns=` routing), by tag and by digest, every image. */
  async function expectContainerdPulled(mirror: MirrorHandle): Promise<void> {
    const containerd = await startContainerd();
    try {
      await containerd.mirrorRegistry('docker.io', mirror.host);
      await containerd.mirrorRegistry('ghcr.io', mirror.host);
      const refs: [string, Pushed][] = [
        ['docker.io/library/alpine-synth:3.20', single],
        [`docker.io/library/alpine-synth@${single.topDigest}`, single],
        ['ghcr.io/team/app:v1', multi],
        [`ghcr.io/team/app@${multi.topDigest}`, multi],
        ['docker.io/library/busybox-synth:latest', dockerList],
      ];
      for (const [ref, image] of refs) {
        await containerd.fetch(ref);
        expect(await containerd.imageTarget(ref), ref).toBe(image.topDigest);
        expect(await containerd.contentDigest(image.topDigest)).toBe(image.topDigest);
        const amd64 = image.manifests.find((m) => m.platform?.architecture === 'amd64') ?? image.manifests[0]!;
        expect(await containerd.contentDigest(amd64.digest)).toBe(amd64.digest);
      }
      for (const blob of [...single.blobs, ...dockerList.blobs]) expect(await containerd.contentDigest(blob.digest)).toBe(blob.digest);
    } finally {
      await containerd.stop();
    }
  }

  async function expectPulled(mirror: MirrorHandle, name: string, image: Pushed, all: boolean): Promise<void> {
    const dest = await mkdtemp(join(work, 'pulled-'));
    await skopeoCopy(`${mirror.host}/${name}`, dest, { all });
    const pulled = await readDirImage(dest);
    expect(pulled.topDigest, name).toBe(image.topDigest);
    for (const blob of pulled.blobs) expect(blob.sha256).toBe(blob.digest);
    if (all) expect([...pulled.manifests].sort()).toEqual(image.manifests.map((m) => m.digest).sort());
  }

  it('imports an oci-archive that skopeo wrote, filed under the full name it was given', async () => {
    const archive = join(work, 'skopeo.tar');
    const policy = join(work, 'policy-import.json');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    await run('skopeo', [
      '--policy',
      policy,
      'copy',
      '--preserve-digests',
      '--src-tls-verify=false',
      `docker://${registry.url.replace('http://', '')}/library/alpine-synth:3.20`,
      `oci-archive:${archive}:docker.io/library/alpine-synth:3.20`,
    ]);
    const store = join(work, 'from-skopeo');
    const upstreams = { 'docker.io': { url: 'http://127.0.0.1:9', library: true } };
    const config = await writeConfig('from-skopeo.json', { store: { path: store }, offline: true, upstreams });
    const imported = await cli(['import', archive, '--config', config, '--json']);
    expect(imported.code, imported.stdout + imported.stderr).toBe(0);
    const report = JSON.parse(imported.stdout.trim().split('\n').at(-1)!) as { images: { name: string; digest: string }[] };
    expect(report.images).toEqual([{ name: 'docker.io/library/alpine-synth:3.20', digest: single.topDigest }]);
    const far = await startMirror({ upstreams, offline: true }, { storeDir: store });
    try {
      await expectPulled(far, 'library/alpine-synth:3.20', single, false);
      // The import brought the tag list too: an offline mirror answers tags/list from it.
      const listed = await fetchHashed(`${far.url}/v2/library/alpine-synth/tags/list`, { keepBody: true });
      expect(listed.status).toBe(200);
      expect(JSON.parse(listed.body!.toString())).toEqual({ name: 'library/alpine-synth', tags: ['3.20'] });
    } finally {
      await far.stop();
    }
  });

  it('--platform fetches only the chosen platform of an index', async () => {
    const store = join(work, 'platform');
    const config = await writeConfig('platform.json', {
      store: { path: store },
      upstreams: { 'ghcr.io': { url: proxy.url } },
      defaultUpstream: 'ghcr.io',
    });
    proxy.reset();
    const warm = await cli(['warm', 'ghcr.io/team/app:v1', '--platform', 'linux/arm64', '--config', config]);
    expect(warm.code, warm.stderr).toBe(0);
    const arm = multi.manifests.find((m) => m.platform?.architecture === 'arm64')!;
    const amd = multi.manifests.find((m) => m.platform?.architecture === 'amd64')!;
    expect(proxy.count({ method: 'GET', kind: 'manifest' })).toBe(2);
    expect(proxy.requests.some((r) => r.path.endsWith(arm.digest))).toBe(true);
    expect(proxy.requests.some((r) => r.path.endsWith(amd.digest))).toBe(false);
    // arm64's config and two layers (one shared with amd64); amd64's own layer never.
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(3);
  });

  it('rejects a bundle with one flipped byte, naming the digest, and leaves the store as it was', async () => {
    const bundle = join(work, 'flip.tar');
    expect((await cli(['export', 'alpine-synth:3.20', '-o', bundle, '--config', connectedConfig])).code).toBe(0);
    const bytes = await readFile(bundle);
    const layer = single.blobs.find((b) => b.size === 2 * MiB)!;
    const at = bytes.indexOf(`blobs/sha256/${layer.digest.slice(7)}`) + 512 + 1000;
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0x01, at);
    await writeFile(bundle, bytes);

    const store = join(work, 'flipped');
    const config = await writeConfig('flipped.json', {
      store: { path: store },
      offline: true,
      upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', library: true } },
    });
    const imported = await cli(['import', bundle, '--config', config]);
    expect(imported.code).not.toBe(0);
    expect(imported.stderr).toContain(layer.digest);
    const stored = await run('find', [join(store, 'blobs'), join(store, 'repositories'), '-type', 'f']).catch(() => ({ stdout: '' }));
    expect(stored.stdout.trim()).toBe('');
    expect(await tempFiles(store)).toEqual([]);

    // And a truncated one.
    await writeFile(bundle, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const truncated = await cli(['import', bundle, '--config', config]);
    expect(truncated.code).not.toBe(0);
    expect(truncated.stderr).toMatch(/not a complete tar|index\.json is missing/);
  });

  it('warm beside a running server on the same store: one fetch each, and the server then hits', async () => {
    const shared = join(work, 'shared-store');
    const upstreams = { 'docker.io': { url: proxy.url, library: true }, 'ghcr.io': { url: proxy.url } };
    const server = await startMirrorProcess({ upstreams }, await freePort(), { storeDir: shared });
    const config = await writeConfig('shared.json', { store: { path: shared }, upstreams });
    try {
      proxy.reset();
      const [warm] = await Promise.all([
        cli(['warm', 'alpine-synth:3.20', '--config', config]),
        fetchHashed(`${server.url}/v2/library/alpine-synth/blobs/${single.blobs[0]!.digest}`),
      ]);
      expect(warm.code, warm.stderr).toBe(0);
      for (const blob of single.blobs) {
        expect(proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(blob.digest))).toHaveLength(1);
      }
      proxy.reset();
      for (const blob of single.blobs) {
        const got = await fetchHashed(`${server.url}/v2/library/alpine-synth/blobs/${blob.digest}`);
        expect(got.sha256).toBe(blob.digest);
      }
      expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('prints one plain line per image event without a terminal, and draws a live display in one', async () => {
    const lines = await cli(['warm', 'alpine-synth:3.20', 'nosuchhost.example/x:1', '--config', connectedConfig]);
    expect(lines.code).toBe(1);
    expect(lines.stdout).toMatch(/^resolved alpine-synth:3\.20 sha256:[0-9a-f]{64} \(\d+ blobs, [\d.]+MiB\)$/m);
    expect(lines.stdout).toMatch(/^done alpine-synth:3\.20: .* already cached\) in /m);
    expect(lines.stdout).toMatch(/^failed nosuchhost\.example\/x:1: registry nosuchhost\.example is not one of the configured upstreams$/m);
    expect(lines.stdout).toContain('1 warmed, 1 failed');
    expect(lines.stdout).not.toContain('\x1b[');

    // script(1) gives the command a pseudo-terminal, as an operator's shell would.
    const command = `${process.execPath} dist/main.js warm alpine-synth:3.20 --config ${connectedConfig}`;
    const tty = await run('script', ['-qec', command, '/dev/null'], { timeout: 60_000 });
    expect(tty.stdout).toContain('\x1b[2K');
    expect(tty.stdout).toMatch(/✓ alpine-synth:3\.20 {2}\[#{20}\] \d+\/\d+ blobs/);
    expect(tty.stdout).toMatch(/IMAGE\s+PLATFORMS\s+BYTES/);
  });
});
