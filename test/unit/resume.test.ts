import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createResumer, rangeStart, type ResumeAnswer, type ResumeEvent } from '../../src/mirror/resume.js';

const policy = { maxResumes: 3, backoffMs: 0, withinMs: 60_000 };

function answer(status: number, headers: Record<string, string> = {}): ResumeAnswer {
  return { status, headers, body: Readable.from([Buffer.from('x')]) };
}

/** A resumer whose upstream answers from `script`, one entry per request; records what was asked. */
function harness(script: (ResumeAnswer | Error)[], options: { etag?: string; now?: () => number; maxResumes?: number } = {}) {
  const asked: Readonly<Record<string, string>>[] = [];
  const events: ResumeEvent[] = [];
  const resumer = createResumer({
    policy: { ...policy, maxResumes: options.maxResumes ?? policy.maxResumes },
    startedAtMs: 0,
    now: options.now ?? (() => 0),
    etag: options.etag,
    request: async (headers) => {
      asked.push(headers);
      const next = script.shift();
      if (!next) throw new Error('no more answers');
      if (next instanceof Error) throw next;
      return next;
    },
    onResume: (event) => events.push(event),
  });
  return { resumer, asked, events };
}

describe('resuming a cut blob body', () => {
  it('continues on a 206 from the offset, asking with Range and a strong ETag as If-Range', async () => {
    const { resumer, asked, events } = harness([answer(206, { 'content-range': 'bytes 100-199/200' })], { etag: '"sha256:abc"' });
    const next = await resumer.next(new Error('reset'), 100, true);
    expect(next).toMatchObject({ skipBytes: 0, restart: false });
    expect(asked).toEqual([{ range: 'bytes=100-', 'if-range': '"sha256:abc"' }]);
    expect(events).toMatchObject([{ offset: 100, attempt: 1, outcome: 'resumed' }]);
  });

  it('never sends a weak ETag as If-Range (RFC 9110 §13.1.5)', async () => {
    const { resumer, asked } = harness([answer(206, { 'content-range': 'bytes 5-9/10' })], { etag: 'W/"v1"' });
    await resumer.next(new Error('reset'), 5, true);
    expect(asked).toEqual([{ range: 'bytes=5-' }]);
  });

  it('drops the bytes it holds from a 200', async () => {
    const { resumer, events } = harness([answer(200)]);
    expect(await resumer.next(new Error('reset'), 100, false)).toMatchObject({ skipBytes: 100, restart: false });
    expect(events.map((e) => e.outcome)).toEqual(['refetched']);
  });

  it('asks again without Range on 416 or a range from elsewhere; restarts only when it may', async () => {
    for (const refusal of [answer(416), answer(206, { 'content-range': 'bytes 0-199/200' })]) {
      const may = harness([refusal, answer(200)]);
      expect(await may.resumer.next(new Error('reset'), 100, true)).toMatchObject({ skipBytes: 0, restart: true });
      expect(may.asked).toEqual([{ range: 'bytes=100-' }, {}]);
      const mayNot = harness([refusal, answer(200)]);
      expect(await mayNot.resumer.next(new Error('reset'), 100, false)).toMatchObject({ skipBytes: 100, restart: false });
      expect(mayNot.events.map((e) => e.outcome)).toEqual(['refetched']);
    }
  });

  it('asks without Range when nothing was received', async () => {
    const { resumer, asked } = harness([answer(200)]);
    expect(await resumer.next(new Error('reset'), 0, true)).toMatchObject({ skipBytes: 0, restart: false });
    expect(asked).toEqual([{}]);
  });

  it('counts failed attempts and gives up with the last failure after maxResumes', async () => {
    const { resumer, events } = harness([new Error('403 expired'), new Error('still down')], { maxResumes: 2 });
    await expect(resumer.next(new Error('reset'), 10, true)).rejects.toThrow('still down');
    expect(events.map((e) => e.outcome)).toEqual(['failed', 'failed']);
  });

  it('starts no resume past its deadline', async () => {
    const { resumer, asked } = harness([answer(200)], { now: () => 61_000 });
    await expect(resumer.next(new Error('reset'), 10, true)).rejects.toThrow('reset');
    expect(asked).toEqual([]);
  });

  it('reads the first byte of a Content-Range', () => {
    expect(rangeStart('bytes 42-99/100')).toBe(42);
    expect(rangeStart('bytes 42-99/*')).toBe(42);
    expect(rangeStart('bytes */100')).toBeUndefined();
    expect(rangeStart(undefined)).toBeUndefined();
  });
});
