import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { isUpstreamFailure } from '../../src/upstream/client.js';
import { guardSpeed } from '../../src/upstream/speed-guard.js';

/** A source and a hand-driven clock: time passes only when the test says so. */
function harness(minBytesPerSecond: number, windowMs: number) {
  const clock = { t: 0 };
  const source = new PassThrough();
  const guarded = guardSpeed(source, { minBytesPerSecond, windowMs, now: () => clock.t });
  return { clock, source, guarded };
}

async function nextChunk(stream: Readable): Promise<Buffer> {
  const chunk = stream.read() as Buffer | null;
  if (chunk) return chunk;
  await once(stream, 'readable');
  return stream.read() as Buffer;
}

describe('guardSpeed', () => {
  it('passes a body that keeps above the floor through unchanged', async () => {
    const { clock, source, guarded } = harness(1000, 1000);
    const received: Buffer[] = [];
    const done = (async () => {
      for await (const chunk of guarded) received.push(chunk as Buffer);
    })();
    for (let i = 0; i < 10; i++) {
      clock.t += 500;
      source.write(Buffer.alloc(600, i));
      await new Promise((resolve) => setImmediate(resolve));
    }
    source.end();
    await done;
    expect(Buffer.concat(received)).toEqual(Buffer.concat(Array.from({ length: 10 }, (_, i) => Buffer.alloc(600, i))));
  });

  it('aborts a drip below the floor once a window of waiting has passed, and destroys the source', async () => {
    const { clock, source, guarded } = harness(1000, 1000);
    const failed = once(guarded, 'error').catch((err: unknown) => err);
    guarded.resume();
    for (let i = 0; i < 6; i++) {
      clock.t += 300;
      source.write(Buffer.alloc(10));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const [err] = (await failed) as [Error];
    expect(isUpstreamFailure(err)).toBe(true);
    expect(err.message).toMatch(/too slow: \d+ B\/s, below 1000 B\/s/);
    expect(source.destroyed).toBe(true);
  });

  it('does not count time the consumer spends not reading (backpressure is ours, not the upstream)', async () => {
    const { clock, source, guarded } = harness(10_000, 1000);
    // More than the guard buffers: it stops asking the source, so nothing is waited on.
    source.write(Buffer.alloc(64 << 10));
    expect((await nextChunk(guarded)).length).toBe(64 << 10);
    source.write(Buffer.alloc(64 << 10));
    await new Promise((resolve) => setImmediate(resolve));
    clock.t += 60_000;
    source.write(Buffer.alloc(64 << 10));
    clock.t += 10;
    for (let i = 0; i < 2; i++) expect((await nextChunk(guarded)).length).toBe(64 << 10);
    expect(guarded.destroyed).toBe(false);
    source.end();
    guarded.resume();
    await once(guarded, 'end');
  });

  it('maps a failing source to an UpstreamError, and an error before any reader is kept for it', async () => {
    const { source, guarded } = harness(1, 1000);
    source.destroy(Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
    await new Promise((resolve) => setImmediate(resolve));
    const iterate = async () => {
      for await (const chunk of guarded) void chunk;
    };
    await expect(iterate()).rejects.toMatchObject({ code: 'UNAVAILABLE', message: 'upstream body failed: ECONNRESET' });
  });

  it('fails, never ends cleanly, when its source is destroyed without an error', async () => {
    const { source, guarded } = harness(1, 1000);
    const failed = once(guarded, 'error').catch((err: unknown) => err);
    source.destroy();
    const [err] = (await failed) as [Error];
    expect(isUpstreamFailure(err)).toBe(true);
    expect(guarded.readableEnded).toBe(false);
  });
});
