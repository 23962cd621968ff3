import { readFile } from 'node:fs/promises';
import { createUpstreamTable } from '../oci/upstream-table.js';
import type { Config } from '../config/types.js';
import { createSilentLogger } from '../log.js';
import { createDigester, digestOf } from '../oci/digest.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import { parseReference } from '../oci/reference.js';
import type { Route } from '../oci/path.js';
import type { Platform } from '../oci/platform.js';
import { loadedManifest } from '../oci/walk.js';
import { warmImages, type WarmSource } from '../mirror/warm.js';
import { createRuntime, type Runtime } from '../runtime.js';
import { createWarmProgress, type Output, type ProgressMode } from './progress.js';

export interface WarmRequest {
  readonly refs: readonly string[];
  readonly file?: string;
  readonly platforms?: readonly Platform[];
  readonly concurrency: number;
  readonly pin: boolean;
  /** Warm through a running mirror instead of the store directly. */
  readonly url?: string;
}

/** Image references from the arguments and the list file (one per line, `#` comments). */
export async function readRefs(request: Pick<WarmRequest, 'refs' | 'file'>): Promise<string[]> {
  const refs = [...request.refs];
  if (request.file !== undefined) {
    const text = await readFile(request.file, 'utf8');
    for (const line of text.split('\n')) {
      const ref = line.replace(/#.*/, '').trim();
      if (ref) refs.push(ref);
    }
  }
  return [...new Set(refs)];
}

/** Returns the number of images that failed (the exit status is non-zero when any did). */
export async function runWarm(config: Config, request: WarmRequest, mode: ProgressMode, out: Output): Promise<number> {
  const texts = await readRefs(request);
  if (texts.length === 0) throw new Error('nothing to warm: give image references or --file');
  if (config.offline && request.url === undefined) throw new Error('the configuration is offline: warming needs the upstreams');
  const table = createUpstreamTable(config);
  const images: { text: string; ref: ImageRef }[] = [];
  const invalid: { ref: string; reason: string }[] = [];
  for (const text of texts) {
    try {
      images.push({ text, ref: parseImageRef(text, table) });
    } catch (err) {
      invalid.push({ ref: text, reason: (err as Error).message });
    }
  }
  const runtime = request.url === undefined ? await createRuntime(config, { log: createSilentLogger(), processMetrics: false }) : undefined;
  try {
    const source = runtime ? storeSource(runtime) : httpSource(request.url as string);
    const progress = createWarmProgress(texts, mode, out);
    for (const bad of invalid) progress.onEvent({ type: 'failed', ...bad });
    const result = await warmImages(source, images, {
      platforms: request.platforms,
      concurrency: request.concurrency,
      onEvent: (event) => progress.onEvent(event),
    });
    if (request.pin && runtime) await runtime.records.addPins(result.done.map((s) => s.ref));
    const failed = [...invalid, ...result.failed];
    progress.finish({ done: result.done, failed });
    return failed.length;
  } finally {
    await runtime?.close();
  }
}

/** The store directly, through this process's own mirror: the same fills, locks and verification as `serve`. */
function storeSource(runtime: Runtime): WarmSource {
  return {
    async getManifest(route, reference) {
      const result = await runtime.mirror.getManifest(route, parseReference(reference), 'GET');
      if (!result.body) throw new Error(`no body for manifest ${reference}`);
      return { ...loadedManifest(result.digest, result.mediaType, result.body), cached: result.outcome !== 'miss' };
    },
    async fetchBlob(route, digest, onBytes) {
      const stored = await runtime.store.blobs.stat(digest);
      if (stored !== undefined) {
        runtime.index.touch(digest, stored);
        return { cached: true };
      }
      const result = await runtime.mirror.getBlob(route, digest, undefined);
      for await (const chunk of result.body as AsyncIterable<Buffer>) onBytes(chunk.length);
      return { cached: result.outcome === 'hit' };
    },
  };
}

/** A running mirror over HTTP (`--url`): it fills its own store; we verify what it sends. */
function httpSource(base: string): WarmSource {
  const url = (route: Route, path: string): string =>
    new URL(`/v2/${route.repository}/${path}?ns=${encodeURIComponent(route.upstream)}`, base).toString();
  return {
    async getManifest(route, reference) {
      const response = await fetch(url(route, `manifests/${reference}`), { headers: { accept: MANIFEST_ACCEPT.join(', ') } });
      if (!response.ok) throw new Error(`manifest ${reference}: ${response.status} ${await errorText(response)}`);
      const body = Buffer.from(await response.arrayBuffer());
      const digest = digestOf(body);
      if (reference.startsWith('sha256:') && reference !== digest) throw new Error(`manifest ${reference} arrived as ${digest}`);
      return { ...loadedManifest(digest, response.headers.get('content-type') ?? undefined, body), cached: false };
    },
    async fetchBlob(route, digest, onBytes) {
      const response = await fetch(url(route, `blobs/${digest}`));
      if (!response.ok || !response.body) throw new Error(`blob ${digest}: ${response.status} ${await errorText(response)}`);
      const digester = createDigester();
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        digester.update(chunk);
        onBytes(chunk.length);
      }
      const actual = digester.digest();
      if (actual !== digest) throw new Error(`blob ${digest} arrived as ${actual}`);
      return { cached: false };
    },
  };
}

/** The mirror's error envelope, for a message; best effort: a body that cannot be read says nothing. */
async function errorText(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  try {
    const first = (JSON.parse(text) as { errors?: { code?: string; message?: string }[] } | null)?.errors?.[0];
    return first ? `${first.code}: ${first.message}` : text.slice(0, 200);
  } catch (err) {
    if (err instanceof SyntaxError) return text.slice(0, 200);
    throw err;
  }
}
