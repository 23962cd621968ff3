import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readDirImage, skopeoCopy } from '../skopeo.js';
import { refOf, type PullClient } from './client.js';

const run = promisify(execFile);

/**
 * skopeo names the mirror as the registry (`127.0.0.1:5000/ghcr.io/team/app:1`) and
 * copies every platform (`--all`, digests preserved) into a `dir:`; every manifest and
 * blob it wrote is re-hashed against its file name.
 */
export async function startSkopeo(): Promise<PullClient> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-skopeo-client-'));
  const { stdout } = await run('skopeo', ['--version']);
  let pulls = 0;
  return {
    name: 'skopeo',
    version: /version (\S+)/.exec(stdout)?.[1] ?? stdout.trim(),
    platforms: 'all',
    async pull(request, target) {
      const endpoint = target.endpoint(request.registry);
      const dest = join(dir, `pull-${pulls++}`);
      const src = refOf(`${endpoint.host}/${endpoint.prefix}${request.repository}`, request.reference);
      await skopeoCopy(src, dest, { all: true, ...(endpoint.tls ? { certDir: endpoint.tls.certDir } : {}) });
      const image = await readDirImage(dest);
      for (const blob of image.blobs)
        if (blob.sha256 !== blob.digest) throw new Error(`skopeo wrote ${blob.digest} with sha256 ${blob.sha256}`);
      const manifestFiles =
        image.manifests.length > 0 ? image.manifests.map((d) => `${d.slice('sha256:'.length)}.manifest.json`) : ['manifest.json'];
      const configDigests: string[] = [];
      for (const name of manifestFiles) {
        const manifest = JSON.parse(await readFile(join(dest, name), 'utf8')) as {
          config?: { digest: string };
          layers?: { digest: string }[];
        };
        if (!manifest.config) throw new Error(`${name} has no config`);
        for (const { digest } of [manifest.config, ...(manifest.layers ?? [])]) {
          if (!image.blobs.some((b) => b.digest === digest)) throw new Error(`skopeo did not write ${digest} of ${name}`);
        }
        configDigests.push(manifest.config.digest);
      }
      return { topDigest: image.topDigest, configDigests };
    },
    async reset() {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
    },
    async stop() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
