import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startCountingProxy, type CountingProxy } from '../support/proxy.js';
import { buildImage, pushImage, pushIndex, type Pushed } from '../support/images.js';
import { startMirror, type MirrorHandle } from '../support/mirror.js';
import { readDirImage, skopeoCopy } from '../support/skopeo.js';

/** skopeo (containers/image) pulls through the mirror and gets exactly the upstream digests. */
describe('skopeo through the mirror', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: MirrorHandle;
  let single: Pushed;
  let multi: Pushed;
  let out: string;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'oci-mirror-skopeo-'));
    registry = await startRegistry();
    single = await pushImage(
      registry.url,
      'library/alpine-synth',
      '3.20',
      buildImage({
        mediaTypes: 'docker',
        layers: [
          { seed: 'sk-1', size: 1 << 20 },
          { seed: 'sk-2', size: 3 << 20 },
        ],
      }),
    );
    multi = await pushIndex(registry.url, 'team/sub/app-synth', 'v2', {
      mediaTypes: 'oci',
      images: [
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'sk-shared', size: 512 << 10 },
            { seed: 'sk-amd', size: 1 << 20 },
          ],
          platform: { os: 'linux', architecture: 'amd64' },
        }),
        buildImage({
          mediaTypes: 'oci',
          layers: [
            { seed: 'sk-shared', size: 512 << 10 },
            { seed: 'sk-arm', size: 1 << 20 },
          ],
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        }),
      ],
    });
    proxy = await startCountingProxy(registry.url);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: proxy.url, library: true } } });
  });

  afterAll(async () => {
    await mirror?.stop();
    await proxy?.stop();
    await registry?.dispose();
    if (out) await rm(out, { recursive: true, force: true });
  });

  const expectSameContent = async (dest: string, pushed: Pushed): Promise<void> => {
    const image = await readDirImage(dest);
    expect(image.topDigest).toBe(pushed.topDigest);
    for (const blob of image.blobs) expect(blob.sha256).toBe(blob.digest);
    const pushedBlobs = new Set(pushed.blobs.map((b) => b.digest));
    for (const blob of image.blobs) expect(pushedBlobs.has(blob.digest)).toBe(true);
  };

  it('copies a single-platform image by tag, then by digest', async () => {
    const byTag = join(out, 'by-tag');
    await skopeoCopy(`${mirror.host}/library/alpine-synth:3.20`, byTag);
    await expectSameContent(byTag, single);
    const byDigest = join(out, 'by-digest');
    await skopeoCopy(`${mirror.host}/alpine-synth@${single.topDigest}`, byDigest);
    await expectSameContent(byDigest, single);
  });

  it('copies every platform of a multi-arch index with --all, then again warm with no upstream blob GET', async () => {
    const cold = join(out, 'multi-cold');
    await skopeoCopy(`${mirror.host}/team/sub/app-synth:v2`, cold, { all: true });
    await expectSameContent(cold, multi);
    expect((await readDirImage(cold)).blobs.length).toBe(multi.blobs.length);
    proxy.reset();
    const warm = join(out, 'multi-warm');
    await skopeoCopy(`${mirror.host}/team/sub/app-synth:v2`, warm, { all: true });
    await expectSameContent(warm, multi);
    expect(proxy.count({ method: 'GET', kind: 'blob' })).toBe(0);
  });
});
