/**
 * A repeating edge: `next()` resolves at the following `fire()`. How fills tell their
 * readers "something changed, look again" without events or polling.
 */
export interface Signal {
  next(): Promise<void>;
  fire(): void;
}

export function createSignal(): Signal {
  let resolve!: () => void;
  let promise = pending();
  function pending(): Promise<void> {
    return new Promise<void>((r) => {
      resolve = r;
    });
  }
  return {
    next: () => promise,
    fire() {
      const wake = resolve;
      promise = pending();
      wake();
    },
  };
}
