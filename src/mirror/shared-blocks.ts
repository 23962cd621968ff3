/**
 * The blocks of a spool its readers share. Fifty clients of one cold blob often move
 * through it close together; each reading the spool into buffers of its own made every
 * byte cost a read per client. Here a block that other readers will soon want is read
 * once, by whichever reader needs it first: concurrent misses of a block wait for the
 * one read, and the last blocks read stay in memory for readers a little behind.
 * Clients far apart gain nothing from a block kept for the other, and read on their own
 * (source.ts decides which).
 *
 * Only final bytes are shared: a block is asked for once every byte of it is readable
 * (a whole block, or the blob's tail once it is complete), and the spool never changes
 * below what was readable, except when a fill starts over from its first byte, which
 * `clear` answers. A block handed out is never written into again, so readers may queue
 * it on their sockets as it is.
 */

/** Bytes per block: the unit readers wake for, read in, and share. */
export const BLOCK_BYTES = 256 * 1024;
/** Blocks kept after their read (8 MiB): what a reader this close behind another reads from memory. */
const KEPT_BLOCKS = 32;
export const SHARED_WINDOW_BYTES = KEPT_BLOCKS * BLOCK_BYTES;

/** Reads at most `buffer.length` bytes at `position`; fewer only at the end of the data. */
export type PositionalRead = (buffer: Buffer, position: number) => Promise<number>;

export class SharedBlocks {
  readonly #read: PositionalRead;
  /** Blocks read, least recently used first. */
  readonly #kept = new Map<number, Buffer>();
  readonly #reading = new Map<number, Promise<Buffer>>();
  /** Bumped by `clear`: a read begun before it must not be kept. */
  #generation = 0;

  constructor(read: PositionalRead) {
    this.#read = read;
  }

  /** Block `index` when it is in memory or being read; undefined when only a read would give it. */
  find(index: number, length: number): Promise<Buffer> | undefined {
    const kept = this.#kept.get(index);
    if (kept && kept.length === length) {
      this.#kept.delete(index);
      this.#kept.set(index, kept);
      return Promise.resolve(kept);
    }
    return this.#reading.get(index);
  }

  /** Block `index`, `length` bytes long (BLOCK_BYTES, or less for the tail of a complete blob). */
  get(index: number, length: number): Promise<Buffer> {
    const found = this.find(index, length);
    if (found) return found;
    const generation = this.#generation;
    const read = this.#readBlock(index, length).finally(() => {
      if (this.#reading.get(index) === read) this.#reading.delete(index);
    });
    this.#reading.set(index, read);
    void read.then(
      (block) => generation === this.#generation && this.#keep(index, block),
      () => undefined,
    );
    return read;
  }

  /** Forgets every block: the spool started over. */
  clear(): void {
    this.#generation += 1;
    this.#kept.clear();
    this.#reading.clear();
  }

  async #readBlock(index: number, length: number): Promise<Buffer> {
    const block = Buffer.allocUnsafeSlow(length);
    const start = index * BLOCK_BYTES;
    let filled = 0;
    while (filled < length) {
      const read = await this.#read(block.subarray(filled), start + filled);
      if (read === 0) throw new Error(`spool ended at byte ${start + filled}, inside a block that was readable`);
      filled += read;
    }
    return block;
  }

  #keep(index: number, block: Buffer): void {
    this.#kept.delete(index);
    this.#kept.set(index, block);
    if (this.#kept.size <= KEPT_BLOCKS) return;
    const oldest = this.#kept.keys().next();
    if (!oldest.done) this.#kept.delete(oldest.value);
  }
}
