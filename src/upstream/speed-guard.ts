/**
 * A floor under the speed of an upstream body, as curl's `--speed-limit`/`--speed-time`.
 * undici's bodyTimeout bounds only the gap between two chunks, so an upstream that
 * drips a byte a second would hold a fill, and every client tailing it, for ever.
 *
 * Time counts only while we wait on the upstream (from asking for data to getting it):
 * a consumer that pauses (a slow client of a relayed fill, a busy disk) never trips it.
 * Each time `windowMs` of waiting has passed, at least `minBytesPerSecond` per second
 * of it must have arrived, else the body is destroyed with an UNAVAILABLE UpstreamError.
 * Any other failure of the body is mapped to an UpstreamError too.
 */
import { Readable } from 'node:stream';
import { closeBody } from './body.js';
import { networkError, UpstreamError } from './failure.js';

export interface SpeedFloor {
  readonly minBytesPerSecond: number;
  readonly windowMs: number;
  readonly now?: () => number;
}

export function guardSpeed(source: Readable, floor: SpeedFloor): Readable {
  return new SpeedGuard(source, floor);
}

class SpeedGuard extends Readable {
  readonly #source: Readable;
  readonly #floor: SpeedFloor;
  readonly #now: () => number;
  /** Since when we wait on the source; undefined while paused (nobody asked for data). */
  #waitingSince: number | undefined;
  #waitedMs = 0;
  #bytes = 0;

  constructor(source: Readable, floor: SpeedFloor) {
    super({ highWaterMark: source.readableHighWaterMark });
    this.#source = source;
    this.#floor = floor;
    this.#now = floor.now ?? Date.now;
    // As undici's own body: a failure before anyone reads (the mirror may still be
    // preparing a spool) is kept for the first reader, not thrown as uncaught.
    this.on('error', () => undefined);
    source.pause();
    source.on('data', (chunk: Buffer) => this.#onData(chunk));
    source.once('end', () => this.push(null));
    // Mapped here, so a body that fails reads as an upstream failure wherever it is consumed.
    source.once('error', (err) => this.destroy(err instanceof UpstreamError ? err : networkError(err, 'upstream body')));
    // A source closed without 'end' or 'error' (destroyed under us) must not end us cleanly.
    source.once('close', () => {
      if (!source.readableEnded && !this.destroyed) this.destroy(networkError(undefined, 'upstream body closed before its end;'));
    });
  }

  override _read(): void {
    if (this.#waitingSince === undefined) this.#waitingSince = this.#now();
    this.#source.resume();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    closeBody(this.#source);
    callback(err);
  }

  #onData(chunk: Buffer): void {
    const now = this.#now();
    this.#waitedMs += now - (this.#waitingSince ?? now);
    this.#bytes += chunk.length;
    if (this.#waitedMs >= this.#floor.windowMs) {
      const floorBytes = (this.#floor.minBytesPerSecond * this.#waitedMs) / 1000;
      if (this.#bytes < floorBytes) {
        const rate = Math.round((this.#bytes * 1000) / this.#waitedMs);
        this.destroy(
          new UpstreamError(
            'UNAVAILABLE',
            `upstream body too slow: ${rate} B/s, below ${this.#floor.minBytesPerSecond} B/s`,
            'unreachable',
          ),
        );
        return;
      }
      this.#waitedMs = 0;
      this.#bytes = 0;
    }
    if (this.push(chunk)) {
      this.#waitingSince = now;
    } else {
      this.#source.pause();
      this.#waitingSince = undefined;
    }
  }
}
