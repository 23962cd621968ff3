import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BLOCK_BYTES, SHARED_WINDOW_BYTES, SharedBlocks, type Block } from '../../src/mirror/shared-blocks.js';

const KEPT = SHARED_WINDOW_BYTES / BLOCK_BYTES;

/** Blocks over `data`, counting the reads that reach it. */
function over(data: Buffer) {
  const reads = { count: 0 };
  const blocks = new SharedBlocks(async (buffer, position) => {
    reads.count += 1;
    return data.copy(buffer, 0, position, position + buffer.length);
  });
  return { blocks, reads };
}

const expected = (data: Buffer, index: number): Buffer => data.subarray(index * BLOCK_BYTES, (index + 1) * BLOCK_BYTES);

describe('shared blocks', () => {
  it('reads a block once for every reader that asks while it is read or kept', async () => {
    const data = randomBytes(2 * BLOCK_BYTES);
    const { blocks, reads } = over(data);
    const asked = await Promise.all([blocks.get(1, BLOCK_BYTES), blocks.get(1, BLOCK_BYTES), blocks.find(1, BLOCK_BYTES)]);
    const again = await blocks.find(1, BLOCK_BYTES);
    expect(reads.count).toBe(1);
    for (const block of [...asked, again]) expect(block?.bytes.equals(expected(data, 1))).toBe(true);
    expect(blocks.find(0, BLOCK_BYTES)).toBeUndefined();
  });

  it('never reads into a block a reader still holds; reuses its memory once released', async () => {
    const data = randomBytes((KEPT + 12) * BLOCK_BYTES);
    const { blocks } = over(data);
    const held = await blocks.get(0, BLOCK_BYTES);
    const memory = held.bytes.buffer;
    const others: Block[] = [];
    // Block 0 leaves the kept blocks; each other block is let go at once, so its memory is free for the next read.
    for (let index = 1; index < KEPT + 6; index++) {
      const block = await blocks.get(index, BLOCK_BYTES);
      expect(block.bytes.equals(expected(data, index))).toBe(true);
      others.push(block);
      block.release();
    }
    expect(held.bytes.equals(expected(data, 0))).toBe(true);
    expect(others.some((block) => block.bytes.buffer === memory)).toBe(false);
    held.release();
    const next = await blocks.get(KEPT + 6, BLOCK_BYTES);
    expect(next.bytes.buffer).toBe(memory);
    expect(next.bytes.equals(expected(data, KEPT + 6))).toBe(true);
  });

  it('forgets every block on clear, and keeps nothing a read begun before it brought', async () => {
    const data = randomBytes(2 * BLOCK_BYTES);
    const { blocks, reads } = over(data);
    (await blocks.get(0, BLOCK_BYTES)).release();
    const before = blocks.get(1, BLOCK_BYTES);
    blocks.clear();
    (await before).release();
    expect(blocks.find(0, BLOCK_BYTES)).toBeUndefined();
    expect(blocks.find(1, BLOCK_BYTES)).toBeUndefined();
    (await blocks.get(1, BLOCK_BYTES)).release();
    expect(reads.count).toBe(3);
  });
});
