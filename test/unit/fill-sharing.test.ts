import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { Fill } from '../../src/mirror/fill.js';
import { BLOCK_BYTES } from '../../src/mirror/shared-blocks.js';
import { blobDigest, collect, storeForEachTest } from '../support/fill.js';

const noop = (): void => undefined;
/** No flush in these tests unless one asks for it: every wake-up is then a whole block or the end. */
const NEVER_MS = 600_000;

/** Feeds `body` in small chunks, each once the fill took the last (as a socket would). */
async function trickle(upstream: PassThrough, body: Buffer, chunkBytes: number): Promise<void> {
  for (let offset = 0; offset < body.length; offset += chunkBytes) {
    if (!upstream.write(body.subarray(offset, offset + chunkBytes))) await new Promise((resolve) => upstream.once('drain', resolve));
  }
  upstream.end();
}

describe('readers of one fill share its blocks', () => {
  const temp = storeForEachTest('oci-mirror-fill-share-');

  async function begin(body: Buffer, flushMs = NEVER_MS) {
    const upstream = new PassThrough({ highWaterMark: 4096 });
    const fill = await Fill.begin({ digest: blobDigest(body), sizeBytes: body.length, store: temp.store, flushMs }, upstream);
    return { upstream, fill, reads: vi.spyOn(fill, 'readAt') };
  }

  it('wakes waiting readers at the first bytes, then once per block, and reads each block once for all of them', async () => {
    const body = randomBytes(4 * BLOCK_BYTES + 1000);
    const { upstream, fill, reads } = await begin(body);
    const readers = Array.from({ length: 10 }, () => collect(fill.openReader(undefined, 'upstream', noop)));
    // 4 KiB at a time: the old readers woke and read at every one of these 260 writes.
    await trickle(upstream, body, 4096);
    await expect(fill.done).resolves.toBe('committed');
    for (const reader of readers) {
      expect((await reader.done).equals(body)).toBe(true);
      // The first bytes at once, the rest of the first block, three whole blocks, then the tail once the digest was verified.
      const [first = 0, rest = 0, ...after] = reader.chunks.map((c) => c.length);
      expect(first).toBeLessThan(BLOCK_BYTES);
      expect(first + rest).toBe(BLOCK_BYTES);
      expect(after).toEqual([BLOCK_BYTES, BLOCK_BYTES, BLOCK_BYTES, 1000]);
    }
    // Each reader's first bytes on its own, then each block once for all ten.
    expect(reads).toHaveBeenCalledTimes(10 + 5);
    fill.release();
  });

  it('shares blocks between readers that join after the fill completed; one far behind reads on its own', async () => {
    const body = randomBytes(40 * BLOCK_BYTES);
    const { upstream, fill, reads } = await begin(body);
    upstream.end(body);
    await expect(fill.done).resolves.toBe('committed');
    const together = Array.from({ length: 8 }, () => collect(fill.openReader(undefined, 'cache', noop)));
    for (const reader of together) expect((await reader.done).equals(body)).toBe(true);
    expect(reads).toHaveBeenCalledTimes(40);
    // The last 32 blocks (8 MiB) stay in memory; the first 8 it reads alone, a buffer of its own at a time.
    const straggler = collect(fill.openReader({ start: 5, end: body.length - 1 }, 'cache', noop));
    expect((await straggler.done).equals(body.subarray(5))).toBe(true);
    expect(reads).toHaveBeenCalledTimes(48);
    fill.release();
  });

  it('reuses its own buffer once the consumer hands each chunk back', async () => {
    const body = randomBytes(12 * BLOCK_BYTES);
    const { upstream, fill } = await begin(body);
    upstream.end(body);
    await expect(fill.done).resolves.toBe('committed');
    const reader = fill.openReader(undefined, 'cache', noop);
    const memory = new Set<ArrayBufferLike>();
    const received: Buffer[] = [];
    for await (const chunk of reader as AsyncIterable<Buffer>) {
      memory.add(chunk.buffer);
      received.push(Buffer.from(chunk));
      reader.recycle(chunk);
    }
    expect(Buffer.concat(received).equals(body)).toBe(true);
    // Alone, it shares nothing: 12 reads, all into the one buffer it keeps.
    expect(memory.size).toBe(1);
    fill.release();
  });

  it('flushes fewer bytes than a block to a waiting reader when the upstream is slow', async () => {
    const body = randomBytes(BLOCK_BYTES);
    const { upstream, fill } = await begin(body, 5);
    const reader = collect(fill.openReader(undefined, 'upstream', noop));
    upstream.write(body.subarray(0, 1000));
    // No more bytes come until the reader has some: only a flush can hand them over.
    while (reader.received() === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(reader.received()).toBe(999);
    upstream.end(body.subarray(1000));
    expect((await reader.done).equals(body)).toBe(true);
    fill.release();
  });

  it('ends a ranged reader only with the fill, though its bytes came long before', async () => {
    const body = randomBytes(2 * BLOCK_BYTES);
    const { upstream, fill } = await begin(body);
    const ranged = collect(fill.openReader({ start: 0, end: 99 }, 'cache', noop));
    let ended = false;
    ranged.done.then(() => (ended = true), noop);
    upstream.write(body.subarray(0, BLOCK_BYTES + 10));
    while (ranged.received() < 100) await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(ended).toBe(false);
    upstream.end(body.subarray(BLOCK_BYTES + 10));
    expect((await ranged.done).equals(body.subarray(0, 100))).toBe(true);
    fill.release();
  });
});
