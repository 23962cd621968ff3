/**
 * The "assumed offline" window (Artifactory's Assumed Offline Period, Verdaccio's
 * fail_timeout): after an upstream is unreachable, requests fail at once for
 * `downForMs` instead of each paying a timeout, and the mirror serves stale tags.
 *
 *   closed --unreachable--> open --window over, one request--> probing
 *   probing --reachable--> closed;  probing --unreachable--> open (new window)
 *
 * While probing, other requests still fail fast. Any answer from the upstream (a 404
 * or a 401 too) proves it reachable.
 */
import { UpstreamError } from './failure.js';

/** What one request showed of the upstream; `aborted` (the caller left) shows nothing. */
export type Reachability = 'reachable' | 'unreachable' | 'aborted';

export interface Breaker {
  /** Throws UNAVAILABLE while open; returns true when this request is the probe. */
  enter(): boolean;
  settle(reachability: Reachability, probe: boolean): void;
  isOpen(): boolean;
}

export interface BreakerOptions {
  readonly name: string;
  readonly downForMs: number;
  readonly now: () => number;
  readonly onOpen: () => void;
  readonly onClose: () => void;
}

export function createBreaker(options: BreakerOptions): Breaker {
  const { downForMs, now } = options;
  let openUntil: number | undefined;
  let probing = false;

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
      if (openUntil === undefined) options.onOpen();
      openUntil = now() + downForMs;
    } else if (reachability === 'reachable' && openUntil !== undefined) {
      openUntil = undefined;
      options.onClose();
    }
  }

  return { enter, settle, isOpen };
}
