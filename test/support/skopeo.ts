import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * `skopeo copy`, run in isolation: accept-all policy, no registries.conf,
 * plain HTTP to loopback, `dir:` destination so Docker media types are kept.
 */
export async function skopeoCopy(
  src: string,
  dest: string,
  options: { all?: boolean; /** HTTPS, trusting the `ca.crt` in this directory. */ certDir?: string } = {},
): Promise<{ stdout: string; stderr: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-skopeo-conf-'));
  const policy = join(dir, 'policy.json');
  const registries = join(dir, 'registries.conf');
  const auth = join(dir, 'auth.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(registries, '');
  await writeFile(auth, '{}');
  const tls = options.certDir ? ['--src-cert-dir', options.certDir, '--src-tls-verify=true'] : ['--src-tls-verify=false'];
  const args = [
    '--policy',
    policy,
    'copy',
    ...(options.all ? ['--all'] : []),
    '--preserve-digests',
    ...tls,
    `docker://${src}`,
    `dir:${dest}`,
  ];
  try {
    return await run('skopeo', args, {
      env: { ...process.env, CONTAINERS_REGISTRIES_CONF: registries, REGISTRY_AUTH_FILE: auth },
      timeout: 120_000,
    });
  } catch (err) {
    const { stderr } = err as { stderr?: string };
    throw new Error(`skopeo copy ${src} failed: ${stderr ?? String(err)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface DirImage {
  /** Digest of `manifest.json`, the top-level manifest. */
  readonly topDigest: string;
  readonly manifests: readonly string[];
  readonly blobs: readonly { digest: string; sha256: string; size: number }[];
}

/** Reads skopeo's `dir:` layout: manifest.json, `<hex>.manifest.json` per instance, blobs by hex name. */
export async function readDirImage(dest: string): Promise<DirImage> {
  const files = await readdir(dest);
  const topDigest = sha256(await readFile(join(dest, 'manifest.json')));
  const manifests = files.filter((f) => f.endsWith('.manifest.json')).map((f) => `sha256:${f.slice(0, 64)}`);
  const blobs = [];
  for (const file of files.filter((f) => /^[a-f0-9]{64}$/.test(f))) {
    const { hash, size } = await hashFile(join(dest, file));
    blobs.push({ digest: `sha256:${file}`, sha256: hash, size });
  }
  return { topDigest, manifests, blobs };
}

function sha256(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

async function hashFile(path: string): Promise<{ hash: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { hash: `sha256:${hash.digest('hex')}`, size };
}
