import { pushBlob, pushImage, type Pushed } from '../support/images.js';
import type { PullPaths } from './clients.js';

const MiB = 1024 * 1024;
export const BLOB_BYTES = 100 * MiB;
/** Three layers, 120 MiB in all. */
const PULL_LAYER_BYTES = [48 * MiB, 40 * MiB, 32 * MiB] as const;

/** What the upstream holds: seeded random content, so every run has the same digests. */
export interface Seeded {
  /** One 100 MiB blob served warm by every system. */
  readonly warmBlob: { readonly repository: string; readonly digest: string };
  /** A small image (two layers) for the manifest and tag scenarios. */
  readonly app: PullPaths;
  /** Per round, a 100 MiB blob no system has yet. */
  readonly coldBlobs: readonly { readonly repository: string; readonly digest: string }[];
  /** Per round, another such blob for ours-front, whose mirror shares ours' store (so ours' cold blob is a hit for it). */
  readonly frontColdBlobs: readonly { readonly repository: string; readonly digest: string }[];
  /** Per round, a 3-layer 120 MiB image no system has yet (`repository:tag`). */
  readonly pullImages: readonly string[];
}

function asPaths(name: string, tag: string, pushed: Pushed): PullPaths {
  return { name, tag, manifestDigest: pushed.topDigest, blobs: [...pushed.blobs].reverse().map((b) => b.digest) };
}

/** Pushes everything the bench reads; `rounds` fresh cold blobs and images. */
export async function seedUpstream(upstreamUrl: string, rounds: number): Promise<Seeded> {
  const warmDigest = await pushBlob(upstreamUrl, 'bench/warm', { seed: 'bench-warm', size: BLOB_BYTES });
  const app = await pushImage(upstreamUrl, 'bench/app', 'v1', {
    mediaTypes: 'oci',
    layers: [
      { seed: 'bench-app-1', size: 64 * 1024 },
      { seed: 'bench-app-2', size: 16 * 1024 },
    ],
  });
  const coldBlobs = [];
  const frontColdBlobs = [];
  const pullImages = [];
  for (let round = 0; round < rounds; round++) {
    const seed = `bench-cold-${round}`;
    coldBlobs.push({ repository: 'bench/cold', digest: await pushBlob(upstreamUrl, 'bench/cold', { seed, size: BLOB_BYTES }) });
    const frontSeed = `bench-cold-front-${round}`;
    frontColdBlobs.push({
      repository: 'bench/cold',
      digest: await pushBlob(upstreamUrl, 'bench/cold', { seed: frontSeed, size: BLOB_BYTES }),
    });
    const layers = PULL_LAYER_BYTES.map((size, i) => ({ seed: `bench-pull-${round}-${i}`, size }));
    await pushImage(upstreamUrl, `bench/pull-${round}`, 'v1', { mediaTypes: 'docker', layers });
    pullImages.push(`bench/pull-${round}:v1`);
  }
  return {
    warmBlob: { repository: 'bench/warm', digest: warmDigest },
    app: asPaths('bench/app', 'v1', app),
    coldBlobs,
    frontColdBlobs,
    pullImages,
  };
}
