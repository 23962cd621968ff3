/**
 * How a blob download cut mid-body goes on, so that the clients tailing it see a pause
 * and not a broken transfer (containers/image, and so skopeo, podman and CRI-O, does
 * not resume a cut blob; containerd does not try the next host after a truncated 200,
 * containerd#9552). The fill holds every byte it received and their running sha256;
 * this asks the upstream for the rest and says how the fill continues:
 *
 *   cut at offset ──(wait: backoff, doubled up to 8×)──▶ GET with Range: bytes=<offset>-
 *                                                         and If-Range: <strong ETag>
 *     206 from <offset> ─────────────────────────────────▶ resumed: append, same hash
 *     200 (Range ignored, or If-Range did not match) ────▶ refetched: drop <offset> bytes, append
 *     416, or 206 from elsewhere ──▶ GET without Range ──▶ restarted: spool and hash from 0,
 *                                                         unless a reader holds bytes: refetched
 *     no usable answer (error, 403 of an expired URL…) ──▶ failed: next attempt
 *   out of attempts, or past `within` since the download started ──▶ the cut fails the fill
 *
 * Every request starts again at the registry (RFC 9110 §14.2, §13.1.5): an expired
 * signed storage URL is never reused, the redirect is followed afresh and each hop
 * answers its own challenge. The final size and digest check is what guarantees the
 * bytes, so a refetch drops the bytes it already holds without comparing them.
 */
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ResumePolicy } from '../config/types.js';
import { closeBody } from '../upstream/body.js';

export type ResumeOutcome = 'resumed' | 'refetched' | 'restarted' | 'failed';

/** An upstream answer to a GET of the blob: 200, 206 or (with a Range) 416. */
export interface ResumeAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Readable;
}

export interface ResumeEvent {
  /** Bytes the fill held when it asked. */
  readonly offset: number;
  readonly attempt: number;
  readonly outcome: ResumeOutcome;
  /** Why the body was cut, or why the attempt failed. */
  readonly reason: string;
}

/** How the fill continues: from `body`, first dropping `skipBytes`; spool and hash reset first when `restart`. */
export interface Continuation {
  readonly body: Readable;
  readonly skipBytes: number;
  readonly restart: boolean;
}

export interface ResumeOptions {
  readonly policy: ResumePolicy;
  readonly startedAtMs: number;
  readonly now: () => number;
  /** The first answer's ETag: sent as If-Range when strong, so a changed body comes back whole. */
  readonly etag: string | undefined;
  /** GETs the blob again, through the registry, with these extra headers. */
  readonly request: (headers: Readonly<Record<string, string>>) => Promise<ResumeAnswer>;
  readonly onResume?: (event: ResumeEvent) => void;
}

export interface Resumer {
  /**
   * Waits, asks again, and resolves with how to continue from `offset`; rejects with
   * the last failure once the attempts or the time are spent. `canRestart`: no reader
   * has taken a byte, so the spool may start over.
   */
  next(failure: Error, offset: number, canRestart: boolean): Promise<Continuation>;
}

const MAX_BACKOFF_DOUBLINGS = 3;

export function createResumer(options: ResumeOptions): Resumer {
  const { policy, now } = options;
  const deadline = options.startedAtMs + policy.withinMs;
  let attempts = 0;

  function report(offset: number, outcome: ResumeOutcome, reason: string): void {
    options.onResume?.({ offset, attempt: attempts, outcome, reason });
  }

  /** One attempt: a continuation, or undefined when the answer was of no use. */
  async function attempt(offset: number, canRestart: boolean): Promise<Continuation | undefined> {
    const answer = await options.request(offset > 0 ? rangeHeaders(offset, options.etag) : {});
    if (offset === 0 && answer.status === 200) return continueWith('resumed', answer, 0, false, offset);
    if (answer.status === 206 && rangeStart(answer.headers['content-range']) === offset) {
      return continueWith('resumed', answer, 0, false, offset);
    }
    if (answer.status === 200) return continueWith('refetched', answer, offset, false, offset);
    // 416, or a range we did not ask for: the whole body, without Range.
    closeBody(answer.body);
    const whole = await options.request({});
    if (whole.status !== 200) {
      closeBody(whole.body);
      report(offset, 'failed', `upstream answered ${whole.status} to a GET without Range`);
      return undefined;
    }
    return canRestart ? continueWith('restarted', whole, 0, true, offset) : continueWith('refetched', whole, offset, false, offset);
  }

  function continueWith(outcome: ResumeOutcome, answer: ResumeAnswer, skipBytes: number, restart: boolean, offset: number): Continuation {
    report(offset, outcome, `upstream answered ${answer.status}`);
    return { body: answer.body, skipBytes, restart };
  }

  return {
    async next(failure, offset, canRestart) {
      let last = failure;
      for (;;) {
        const waitMs = policy.backoffMs * 2 ** Math.min(attempts, MAX_BACKOFF_DOUBLINGS);
        if (attempts >= policy.maxResumes || now() + waitMs > deadline) throw last;
        attempts++;
        await sleep(waitMs);
        try {
          const continuation = await attempt(offset, canRestart);
          if (continuation) return continuation;
        } catch (err) {
          last = err instanceof Error ? err : new Error(String(err));
          report(offset, 'failed', last.message);
        }
      }
    },
  };
}

/** RFC 9110 §14.2 and §13.1.5: If-Range only with a strong validator. */
function rangeHeaders(offset: number, etag: string | undefined): Record<string, string> {
  const headers: Record<string, string> = { range: `bytes=${offset}-` };
  if (etag !== undefined && etag.startsWith('"')) headers['if-range'] = etag;
  return headers;
}

/** The first byte of `Content-Range: bytes <first>-<last>/<complete>` (RFC 9110 §14.4); undefined otherwise. */
export function rangeStart(value: string | undefined): number | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
  return m ? Number(m[1]) : undefined;
}
