/**
 * Keyed single-flight: concurrent callers with one key share one promise. The entry is
 * removed when the promise settles, so a failure is never cached.
 */
export interface SingleFlight<T> {
  run(key: string, work: () => Promise<T>): { readonly promise: Promise<T>; readonly joined: boolean };
  readonly size: number;
}

export function createSingleFlight<T>(): SingleFlight<T> {
  const inflight = new Map<string, Promise<T>>();
  return {
    run(key, work) {
      const existing = inflight.get(key);
      if (existing) return { promise: existing, joined: true };
      const promise = work().finally(() => inflight.delete(key));
      inflight.set(key, promise);
      return { promise, joined: false };
    },
    get size() {
      return inflight.size;
    },
  };
}
