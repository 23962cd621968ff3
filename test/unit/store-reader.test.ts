import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreReader } from '../../src/mirror/store-reader.js';

const KiB = 1024;

/**
 * What a cached blob's transfer holds: a consumer that hands chunks back (the socket's
 * write callback) gets no chunk read ahead while one is out, and no chunk over 256 KiB,
 * so a client that stops reading holds one bounded chunk.
 */
describe('store reader memory', () => {
  let dir: string;
  let path: string;
  let body: Buffer;
  let reads: number;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-reader-'));
    path = join(dir, 'blob');
    body = randomBytes(4 * 1024 * KiB);
    await writeFile(path, body);
    reads = 0;
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The file, with every read the reader issues counted. */
  async function countedHandle(): Promise<FileHandle> {
    const handle = await open(path, 'r');
    const read = handle.read.bind(handle) as (
      buffer: Buffer,
      offset: number,
      length: number,
      position: number,
    ) => ReturnType<FileHandle['read']>;
    return Object.assign(handle, {
      read: (buffer: Buffer, offset: number, length: number, position: number) => {
        reads += 1;
        return read(buffer, offset, length, position);
      },
    });
  }

  async function next(reader: StoreReader): Promise<Buffer> {
    for (;;) {
      const chunk = reader.read() as Buffer | null;
      if (chunk) return chunk;
      await once(reader, 'readable');
    }
  }

  it('reads nothing ahead while a chunk it lent is out, and reads on when it comes back', async () => {
    const reader = new StoreReader(await countedHandle(), 0, body.length - 1);
    try {
      const first = await next(reader);
      // Copied before it is handed back: a recycled chunk's memory is read into again.
      const copies = [Buffer.from(first)];
      reader.recycle(first);
      const second = await next(reader);
      copies.push(Buffer.from(second));
      const issued = reads;
      // The consumer asks again, but the socket has not taken the second chunk: no read.
      expect(reader.read()).toBeNull();
      expect(reads).toBe(issued);
      reader.recycle(second);
      expect(reads).toBe(issued + 1);
      copies.push(Buffer.from(await next(reader)));
      const delivered = Buffer.concat(copies);
      expect(delivered.equals(body.subarray(0, delivered.length))).toBe(true);
    } finally {
      reader.destroy();
      await once(reader, 'close');
    }
  });

  it('starts at 64 KiB, grows to at most 256 KiB while chunks come straight back, and delivers every byte', async () => {
    const reader = new StoreReader(await countedHandle(), 0, body.length - 1);
    const sizes: number[] = [];
    const copies: Buffer[] = [];
    for await (const chunk of reader as AsyncIterable<Buffer>) {
      sizes.push(chunk.length);
      copies.push(Buffer.from(chunk));
      reader.recycle(chunk);
    }
    expect(Buffer.concat(copies).equals(body)).toBe(true);
    expect(sizes[0]).toBe(64 * KiB);
    expect(Math.max(...sizes)).toBe(256 * KiB);
    expect(reads).toBe(sizes.length);
  });
});
