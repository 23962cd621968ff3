/**
 * Failed logins per client address, in fixed one-minute windows. Past the limit the
 * address is answered 429 before its credentials cost a hash comparison, until its
 * window ends: guessing passwords costs the guesser time, not the mirror's threads.
 */
import { LRUCache } from 'lru-cache';

export interface AuthThrottle {
  /** Seconds until `address` may try again; 0 while it may. */
  retryAfter(address: string): number;
  /** One failed login from `address`. */
  failed(address: string): void;
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
  const current = (address: string): Window | undefined => {
    const window = windows.get(address);
    return window !== undefined && window.endsAt > now() ? window : undefined;
  };
  return {
    retryAfter(address) {
      const window = current(address);
      return window !== undefined && window.failures >= limit ? Math.max(1, Math.ceil((window.endsAt - now()) / 1000)) : 0;
    },
    failed(address) {
      const window = current(address);
      if (window === undefined) windows.set(address, { failures: 1, endsAt: now() + windowMs });
      else window.failures += 1;
    },
  };
}
