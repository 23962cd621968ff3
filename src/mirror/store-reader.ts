import { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';

/** The first chunk of a transfer, and the size a chunk falls back to once the socket lags. */
const MIN_CHUNK_BYTES = 64 * 1024;
/**
 * The largest chunk: what one stalled client can make the process hold. Bigger chunks
 * save syscalls on fast transfers, but a client that stops reading keeps its last chunk
 * alive in the socket's write queue for as long as it stays connected.
 */
const MAX_CHUNK_BYTES = 256 * 1024;
/**
 * Chunks in a row the socket must take at once before the size doubles: the kernel's
 * socket buffers take the first few hundred KiB of even a stalled client at once, and
 * a slow client should stall on a small chunk.
 */
const GROW_AFTER = 4;
/**
 * Buffers kept for reuse; the rest are left to the garbage collector. One: a chunk is
 * handed back just before the next read takes a buffer, so a second spare would only
 * sit beside a stalled client's chunk.
 */
const MAX_SPARE = 1;

/**
 * A stored blob (or a window of it) as a stream of chunks read into reusable buffers.
 * A new buffer per chunk made V8 spend ~40 % of a warm transfer in full garbage
 * collections; a consumer that knows when a chunk has left the process (the socket's
 * write callback) hands it back with `recycle` and the next read reuses it. Until it
 * is handed back a chunk is never written into again, so a consumer that does not
 * recycle (pipeline) gets exactly what createReadStream gave it.
 *
 * Memory per transfer is bounded whatever the client's speed. Once the consumer has
 * handed a chunk back (so it is known to), nothing is read ahead: the next chunk is read
 * when the last one is back, i.e. once the socket took it, so a client that stops
 * reading holds one chunk. The chunk size starts small and grows only while the socket
 * takes each chunk whole at once (handed back before the event loop's next turn), like
 * TCP's slow start; a chunk the socket had to queue sets it back to the minimum. A slow
 * reader thus holds about 64 KiB, a stalled fast one at most 256 KiB (1 000 readers at
 * 1 KiB/s: test/bench/slow-readers.ts).
 */
export class StoreReader extends Readable {
  #handle: FileHandle;
  #position: number;
  readonly #end: number;
  readonly #spare: Buffer[] = [];
  /** Chunks out with the consumer, each to the buffer it is a view of. */
  readonly #lent = new WeakMap<Buffer, Buffer>();
  #bytesRead = 0;
  #chunkBytes = MIN_CHUNK_BYTES;
  /** The last chunk was pushed in this turn of the event loop. */
  #sameTurn = false;
  /** Chunks in a row the socket took at once. */
  #takenInARow = 0;
  /** Chunks lent and not yet handed back. */
  #outstanding = 0;
  /** The consumer hands chunks back: a read waits for the last one. */
  #recycling = false;
  /** A read was asked for while a chunk was out; it starts when the chunk is back. */
  #deferred = false;

  /** Reads bytes `start` to `end` inclusive; the handle is the reader's and is closed with it. */
  constructor(handle: FileHandle, start: number, end: number) {
    super({ highWaterMark: 0 });
    this.#handle = handle;
    this.#position = start;
    this.#end = end + 1;
  }

  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Gives a chunk this reader pushed back for reuse, once nothing else holds it. */
  recycle(chunk: Buffer): void {
    const buffer = this.#lent.get(chunk);
    if (!buffer) return;
    this.#lent.delete(chunk);
    this.#outstanding -= 1;
    this.#recycling = true;
    this.#resize(this.#sameTurn);
    if (this.#spare.length < MAX_SPARE) this.#spare.push(buffer);
    if (this.#deferred && this.#outstanding === 0 && !this.destroyed) {
      this.#deferred = false;
      this.#readChunk();
    }
  }

  /** Doubles the chunk size after a run of chunks the socket took at once; back to the minimum after one it queued. */
  #resize(takenAtOnce: boolean): void {
    this.#takenInARow = takenAtOnce ? this.#takenInARow + 1 : 0;
    if (!takenAtOnce) this.#chunkBytes = MIN_CHUNK_BYTES;
    else if (this.#takenInARow % GROW_AFTER === 0) this.#chunkBytes = Math.min(MAX_CHUNK_BYTES, this.#chunkBytes * 2);
  }

  override _read(): void {
    if (this.#recycling && this.#outstanding > 0) this.#deferred = true;
    else this.#readChunk();
  }

  #readChunk(): void {
    const wanted = Math.min(this.#chunkBytes, this.#end - this.#position);
    if (wanted <= 0) {
      this.push(null);
      return;
    }
    // For a consumer that hands chunks back, full size at once: growing would leave each
    // smaller buffer to a garbage collector an idle process does not run (pages a small
    // chunk never touched are not resident). For one that does not, the chunk's size.
    const spare = this.#spare.pop();
    const size = this.#recycling ? MAX_CHUNK_BYTES : this.#chunkBytes;
    const buffer = spare && spare.length >= wanted ? spare : Buffer.allocUnsafeSlow(size);
    this.#handle.read(buffer, 0, wanted, this.#position).then(
      ({ bytesRead }) => {
        if (this.destroyed) return;
        if (bytesRead === 0) {
          this.destroy(new Error(`stored blob ended at byte ${this.#position}, before ${this.#end}`));
          return;
        }
        this.#position += bytesRead;
        this.#bytesRead += bytesRead;
        const chunk = buffer.subarray(0, bytesRead);
        this.#lent.set(chunk, buffer);
        this.#outstanding += 1;
        this.#sameTurn = true;
        setImmediate(() => (this.#sameTurn = false));
        this.push(chunk);
      },
      (err: Error) => this.destroy(err),
    );
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#handle.close().then(
      () => callback(err),
      () => callback(err),
    );
  }
}
