import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, expect } from 'vitest';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { createStore, type Store } from '../../src/store/store.js';
import { tempFiles } from './store.js';

/** The digest of `body`, as the store takes it. */
export function blobDigest(body: Buffer): Digest {
  return parseDigest(`sha256:${createHash('sha256').update(body).digest('hex')}`);
}

export interface Collected {
  /** Every byte on 'end'; rejects on 'error' (always handled). */
  readonly done: Promise<Buffer>;
  /** Chunks the reader pushed, in order. */
  readonly chunks: Buffer[];
  received(): number;
}

/** Reads a fill's reader to its end in flowing mode. */
export function collect(reader: Readable): Collected {
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    reader.on('data', (chunk: Buffer) => chunks.push(chunk));
    reader.on('end', () => resolve(Buffer.concat(chunks)));
    reader.on('error', reject);
  });
  done.catch(() => undefined);
  return { done, chunks, received: () => chunks.reduce((sum, c) => sum + c.length, 0) };
}

/**
 * A new store in a temp directory for each test of the calling `describe`; after each,
 * no file may be left in its tmp/ (every fill cleaned up after itself), and it is removed.
 */
export function storeForEachTest(prefix: string): { readonly dir: string; readonly store: Store } {
  const current = { dir: '', store: undefined as unknown as Store };
  beforeEach(async () => {
    current.dir = await mkdtemp(join(tmpdir(), prefix));
    current.store = createStore(current.dir);
    await current.store.init();
  });
  afterEach(async () => {
    expect(await tempFiles(current.dir)).toEqual([]);
    await rm(current.dir, { recursive: true, force: true });
  });
  return current;
}
