import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Fill } from '../../src/mirror/fill.js';
import { RemoteFill } from '../../src/mirror/remote-fill.js';
import { createResumer, type ResumeAnswer, type ResumeEvent } from '../../src/mirror/resume.js';
import { blobDigest, collect, storeForEachTest } from '../support/fill.js';

const noop = (): void => undefined;

async function settle(times = 20): Promise<void> {
  for (let i = 0; i < times; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Cuts `stream` after writing `bytes` of `body`: the error a reset would give. */
function cutAfter(stream: PassThrough, body: Buffer, bytes: number): void {
  stream.write(body.subarray(0, bytes));
  setImmediate(() => stream.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })));
}

describe('a fill resumed after a cut', () => {
  const temp = storeForEachTest('oci-mirror-fill-resume-');

  /** A fill whose upstream answers each resume from `answers`; records the events. */
  async function begin(body: Buffer, answers: ((headers: Readonly<Record<string, string>>) => ResumeAnswer)[]) {
    const first = new PassThrough();
    const events: ResumeEvent[] = [];
    const resumer = createResumer({
      policy: { maxResumes: 3, backoffMs: 0, withinMs: 60_000 },
      startedAtMs: Date.now(),
      now: Date.now,
      etag: undefined,
      request: async (headers) => {
        const next = answers.shift();
        if (!next) throw new Error('no more answers');
        return next(headers);
      },
      onResume: (event) => events.push(event),
    });
    const fill = await Fill.begin({ digest: blobDigest(body), sizeBytes: body.length, store: temp.store, resumer }, first);
    return { first, fill, events };
  }

  it('continues the same spool and hash from a 206, and its reader never notices', async () => {
    const body = randomBytes(300_000);
    const rest = new PassThrough();
    const { first, fill, events } = await begin(body, [
      (headers) => {
        expect(headers).toEqual({ range: 'bytes=100000-' });
        rest.end(body.subarray(100_000));
        return { status: 206, headers: { 'content-range': `bytes 100000-299999/300000` }, body: rest };
      },
    ]);
    const reader = collect(fill.openReader(undefined, 'upstream', noop));
    cutAfter(first, body, 100_000);
    await expect(fill.done).resolves.toBe('committed');
    expect((await reader.done).equals(body)).toBe(true);
    expect(events.map((e) => [e.offset, e.outcome])).toEqual([[100_000, 'resumed']]);
    fill.release();
  });

  it('serves nothing read before a start-over: a block read from the first attempt is forgotten', async () => {
    const body = randomBytes(600_000);
    const wrong = Buffer.from(body);
    wrong[10] = (wrong[10] ?? 0) ^ 0xff;
    const refused = (): ResumeAnswer => ({ status: 416, headers: {}, body: new PassThrough().end() });
    const { first, fill, events } = await begin(body, [refused, () => ({ status: 200, headers: {}, body: new PassThrough().end(body) })]);
    // A reader takes the first block of the wrong bytes, then leaves: the fill may start over.
    let took = 0;
    const leaving = fill.openReader(undefined, 'cache', (n) => (took += n));
    leaving.on('data', noop).on('error', noop);
    first.write(wrong.subarray(0, 300_000));
    while (took === 0) await settle();
    leaving.destroy();
    await settle();
    first.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    await expect(fill.done).resolves.toBe('committed');
    expect(events.map((e) => e.outcome)).toEqual(['restarted']);
    expect((await collect(fill.openReader(undefined, 'cache', noop)).done).equals(body)).toBe(true);
    fill.release();
  });

  it('starts over on 416 under a follower that took no byte; a follower that took bytes fails instead of reading a mix', async () => {
    const body = randomBytes(300_000);
    const whole = new PassThrough();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const refused = (): ResumeAnswer => ({ status: 416, headers: {}, body: new PassThrough().end() });
    const { first, fill, events } = await begin(body, [
      refused,
      () => {
        void gate.then(() => whole.end(body));
        return { status: 200, headers: {}, body: whole };
      },
    ]);
    const alive = async (): Promise<boolean> => true;
    const options = { digest: fill.digest, sizeBytes: body.length, store: temp.store, stallMs: 60_000, writerAlive: alive };
    const early = await RemoteFill.follow(options, fill.spoolPath as string);
    if (!early) throw new Error('the spool could not be followed');
    let earlyTook = 0;
    const earlyReader = collect(early.openReader(undefined, 'cache', (n) => (earlyTook += n)));
    first.write(body.subarray(0, 100_000));
    // Less than a block: the follower gets the bytes from a flush, a few ms later.
    while (earlyTook === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    // No reader of this process took a byte: the fill may start over.
    first.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    while (events.length === 0) await settle();
    expect(events.map((e) => e.outcome)).toEqual(['restarted']);
    await expect(early.done).rejects.toThrow(/started it over/);
    await expect(earlyReader.done).rejects.toThrow(/upstream transfer failed/);
    const late = await RemoteFill.follow(options, fill.spoolPath as string);
    if (!late) throw new Error('the spool could not be followed');
    const lateReader = collect(late.openReader(undefined, 'cache', noop));
    release();
    await expect(fill.done).resolves.toBe('committed');
    await expect(late.done).resolves.toBe('committed');
    expect((await lateReader.done).equals(body)).toBe(true);
    for (const source of [fill, early, late]) source.release();
  });
});
