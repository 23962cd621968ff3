/**
 * Failed logins per client address, in fixed one-minute windows. Past the limit the
 * address is answered 429 before its credentials cost a hash comparison, until its
 * window ends: guessing passwords costs the guesser time, not the mirror's threads.
 */
import { LRUCache } from 'lru-cache';

export interface AuthThrottle {
  /** Seconds until `address` may try again; 0 while it may. */
  retryAfter(address: string): number;
  /**
   * A check of credentials from `address` begins; call the result with its verdict. A
   * check in progress counts against the limit, so a burst sent at once is cut at the
   * limit too, not only the guesses that follow its failures.
   */
  begin(address: string): (failed: boolean) => void;
}

export const FAILURE_WINDOW_MS = 60_000;
/** Addresses tracked at once; the least recently failing are forgotten first. */
const MAX_ADDRESSES = 10_000;

interface Window {
  failures: number;
  readonly endsAt: number;
}

export function createAuthThrottle(limit: number, now: () => number, windowMs = FAILURE_WINDOW_MS): AuthThrottle {
  const windows = new LRUCache<string, Window>({ max: MAX_ADDRESSES });
  const checking = new Map<string, number>();
  const current = (address: string): Window | undefined => {
    const window = windows.get(address);
    return window !== undefined && window.endsAt > now() ? window : undefined;
  };
  const failed = (address: string): void => {
    const window = current(address);
    if (window === undefined) windows.set(address, { failures: 1, endsAt: now() + windowMs });
    else window.failures += 1;
  };
  return {
    retryAfter(address) {
      const window = current(address);
      if ((window?.failures ?? 0) + (checking.get(address) ?? 0) < limit) return 0;
      return window === undefined ? 1 : Math.max(1, Math.ceil((window.endsAt - now()) / 1000));
    },
    begin(address) {
      checking.set(address, (checking.get(address) ?? 0) + 1);
      return (verdictFailed) => {
        const left = (checking.get(address) ?? 1) - 1;
        if (left > 0) checking.set(address, left);
        else checking.delete(address);
        if (verdictFailed) failed(address);
      };
    },
  };
}
