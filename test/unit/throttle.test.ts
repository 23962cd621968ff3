import { afterEach, describe, expect, it, vi } from 'vitest';
import { createThrottle } from '../../src/upstream/throttle.js';

describe('upstream throttle', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('ends by itself when its timer fires a moment before the clock reaches the end', () => {
    vi.useFakeTimers();
    // The wall clock the throttle reads runs 5 ms behind the timers.
    let clock = 1_000_000;
    const changes: boolean[] = [];
    const throttle = createThrottle({
      name: 'hub',
      throttleMs: 60_000,
      now: () => clock,
      onChange: (throttled) => changes.push(throttled),
      onRefused: () => undefined,
    });
    throttle.limited({ forMs: 3_000, exact: true });
    clock += 2_995;
    vi.advanceTimersByTime(3_000);
    expect(changes).toEqual([true]);
    clock += 5;
    vi.advanceTimersByTime(5);
    // Nothing asked isThrottled(): the timer alone ended it.
    expect(changes).toEqual([true, false]);
    throttle.close();
  });
});
