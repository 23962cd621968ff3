/**
 * The "assumed offline" window (Artifactory's Assumed Offline Period, Verdaccio's
 * fail_timeout) of one upstream endpoint: after `failuresToOpen` consecutive
 * connection-level failures (refused, DNS, TLS, connect or headers timeout), requests
 * fail at once instead of each paying a timeout, and the mirror serves stale tags.
 * An HTTP answer of any status (a 500 for one blob, a 404, a 401) proves the endpoint
 * reachable: a failing object is that request's error, not the upstream's.
 *
 *   closed --failuresToOpen unreachable--> open --window over, one request--> probing
 *   probing --reachable--> closed;  probing --unreachable--> open (new window)
 *
 * While open, a background probe (`probe`, e.g. `GET /v2/`) runs on an unref'd timer
 * with back-off, so the breaker closes, and the down gauge returns to 0, with no client
 * traffic at all.
 */
import { UpstreamError } from './failure.js';

/** What one request showed of the upstream; `aborted` (the caller left) shows nothing. */
export type Reachability = 'reachable' | 'unreachable' | 'aborted';

export interface Breaker {
  /** Throws UNAVAILABLE while open; returns true when this request is the probe. */
  enter(): boolean;
  settle(reachability: Reachability, probe: boolean): void;
  isOpen(): boolean;
  /** Stops the background probe. */
  close(): void;
}

export interface BreakerOptions {
  readonly name: string;
  readonly downForMs: number;
  /** Consecutive unreachable outcomes that open the breaker (at least 1). */
  readonly failuresToOpen: number;
  readonly now: () => number;
  readonly onOpen: () => void;
  readonly onClose: () => void;
  /** Resolves with what one cheap request showed; runs while open, off any client's path. */
  readonly probe?: () => Promise<Reachability>;
}

/** Background probes back off from `downForMs`, doubling, up to this. */
const PROBE_CAP_MS = 5 * 60_000;

export function createBreaker(options: BreakerOptions): Breaker {
  const { downForMs, now } = options;
  let openUntil: number | undefined;
  let probing = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let probeDelayMs = downForMs;
  let closed = false;

  const isOpen = () => openUntil !== undefined && (probing || now() < openUntil);

  function enter(): boolean {
    if (openUntil === undefined) return false;
    if (isOpen()) {
      const waitS = Math.max(1, Math.ceil((openUntil - now()) / 1000));
      throw new UpstreamError('UNAVAILABLE', `upstream ${options.name} is down`, 'down', {
        headers: { 'retry-after': String(waitS) },
      });
    }
    probing = true;
    return true;
  }

  function settle(reachability: Reachability, probe: boolean): void {
    if (probe) probing = false;
    if (reachability === 'unreachable' && downForMs > 0) {
      failures++;
      if (openUntil === undefined && failures < Math.max(1, options.failuresToOpen)) return;
      const opening = openUntil === undefined;
      openUntil = now() + downForMs;
      if (opening) {
        options.onOpen();
        probeDelayMs = downForMs;
        schedule();
      }
    } else if (reachability === 'reachable') {
      failures = 0;
      if (openUntil === undefined) return;
      openUntil = undefined;
      stopTimer();
      options.onClose();
    }
  }

  function schedule(): void {
    const probe = options.probe;
    if (probe === undefined || closed || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      if (openUntil === undefined || probing) return schedule();
      probing = true;
      probe().then(
        (reachability) => settle(reachability, true),
        () => settle('unreachable', true),
      );
      probeDelayMs = Math.min(PROBE_CAP_MS, probeDelayMs * 2);
      schedule();
    }, probeDelayMs);
    timer.unref();
  }

  function stopTimer(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  }

  return {
    enter,
    settle,
    isOpen,
    close: () => {
      closed = true;
      stopTimer();
    },
  };
}
