/**
 * A rate-limited upstream (429) is left alone until it says the quota is back: a 429 is
 * never retried (each retry would spend the quota the mirror exists to save; harbor#19257,
 * zot#3129, distribution#4050). Until `Retry-After`, else `ratelimit-reset`, else the
 * window of `ratelimit-remaining: 0;w=21600`, else `throttleMs`, requests are refused
 * here without calling the upstream (the mirror serves what it has cached), except, when
 * the upstream did not say exactly when to come back, one probe per `throttleMs` that
 * finds out whether the quota came back early.
 *
 *   open --429--> throttled --until passed, or a probe answers other than 429--> open
 */
import { UpstreamError } from './failure.js';

export interface Throttle {
  /** Throws TOOMANYREQUESTS while throttled; returns true when this request is the probe. */
  enter(): boolean;
  /**
   * After an upstream 429: throttle for `hint.forMs`. Answers how long a client should
   * wait: until the next probe, or the whole time when the hint is exact.
   */
  limited(hint: ThrottleHint): number;
  /** After any other answer from the upstream. */
  answered(probe: boolean): void;
  /** After the request that `enter` let through, whatever happened: frees the probe slot. */
  release(probe: boolean): void;
  isThrottled(): boolean;
  /** Stops the timer that ends the throttle. */
  close(): void;
}

export interface ThrottleOptions {
  readonly name: string;
  /** Default throttle, and the interval between probes. */
  readonly throttleMs: number;
  readonly now: () => number;
  readonly onChange: (throttled: boolean) => void;
  readonly onRefused: () => void;
}

export function createThrottle(options: ThrottleOptions): Throttle {
  const { now, throttleMs } = options;
  let until: number | undefined;
  let nextProbeAt = 0;
  let probing = false;
  // Ends the throttle on time, so its gauge returns to 0 with no traffic; unref'd.
  let timer: NodeJS.Timeout | undefined;

  const isThrottled = (): boolean => {
    if (until !== undefined && now() >= until) end();
    return until !== undefined;
  };

  /**
   * Ends the throttle when it is due. A timer may fire a millisecond before `now()` reaches
   * `until` (timers and the wall clock are different clocks): it is set again for the rest,
   * or the throttle would stay on until some request looked.
   */
  function arm(delayMs: number): void {
    timer = setTimeout(() => {
      if (until === undefined) return;
      const left = until - now();
      if (left <= 0) end();
      else arm(left);
    }, delayMs);
    timer.unref();
  }

  function end(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    until = undefined;
    probing = false;
    options.onChange(false);
  }

  function enter(): boolean {
    if (!isThrottled() || until === undefined) return false;
    const t = now();
    if (!probing && t >= nextProbeAt) {
      probing = true;
      nextProbeAt = t + throttleMs;
      return true;
    }
    options.onRefused();
    const waitMs = Math.min(until, probing ? t + throttleMs : nextProbeAt) - t;
    throw new UpstreamError(
      'TOOMANYREQUESTS',
      `upstream ${options.name} is rate limited; not asked until its quota is back`,
      'rate-limited',
      {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) },
      },
    );
  }

  function limited(hint: ThrottleHint): number {
    const t = now();
    const was = until !== undefined;
    until = t + Math.max(hint.forMs, 1000);
    nextProbeAt = hint.exact ? until : t + Math.min(throttleMs, hint.forMs);
    probing = false;
    if (timer !== undefined) clearTimeout(timer);
    arm(until - t);
    if (!was) options.onChange(true);
    return nextProbeAt - t;
  }

  /** Only the probe's answer ends the throttle early: a request sent before the 429 proves nothing. */
  function answered(probe: boolean): void {
    if (!probe) return;
    probing = false;
    if (until !== undefined) end();
  }

  return {
    enter,
    limited,
    answered,
    release: (probe) => {
      if (probe) probing = false;
    },
    isThrottled,
    close: () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    },
  };
}

/** How long a 429 asks the mirror to stay away; `exact` when the upstream said when to come back. */
export interface ThrottleHint {
  readonly forMs: number;
  readonly exact: boolean;
}

/**
 * `Retry-After` (RFC 9110 §10.2.3) or `ratelimit-reset` (seconds,
 * draft-ietf-httpapi-ratelimit-headers) are exact: nothing is asked before then. The `w=`
 * window of `ratelimit-remaining`/`ratelimit-limit` (Docker Hub) is only the longest the
 * quota can take to come back, so probes go on meanwhile. Undefined when none is given.
 */
export function throttleHint(headers: Readonly<Record<string, string>>, nowMs: number): ThrottleHint | undefined {
  const retryAfter = parseRetryAfterMs(headers['retry-after'], nowMs);
  if (retryAfter !== undefined) return { forMs: retryAfter, exact: true };
  const reset = headers['ratelimit-reset']?.trim();
  if (reset !== undefined && /^\d+$/.test(reset)) return { forMs: Number(reset) * 1000, exact: true };
  const window = /;\s*w=(\d+)/.exec(headers['ratelimit-remaining'] ?? headers['ratelimit-limit'] ?? '')?.[1];
  return window === undefined ? undefined : { forMs: Number(window) * 1000, exact: false };
}

export function parseRetryAfterMs(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}
