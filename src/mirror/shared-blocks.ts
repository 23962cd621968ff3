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

/** Spare block buffers kept for the next read, instead of fresh ones for the garbage collector. */
const FREE_BLOCKS = 8;

/** Reads at most `buffer.length` bytes at `position`; fewer only at the end of the data. */
export type PositionalRead = (buffer: Buffer, position: number) => Promise<number>;

/**
 * A block in memory. Every reader handed it holds it until `release`, which a reader
 * calls once its consumer is done with the bytes (the socket took them); a block that
 * is no longer kept and that nobody holds goes back to the free list, and its memory
 * into the next read. A holder that never releases keeps it from reuse: it is then
 * left to the garbage collector, never written into.
 */
export class Block {
  readonly bytes: Buffer;
  #holders = 0;
  #kept = true;
  readonly #unused: (block: Block) => void;

  constructor(bytes: Buffer, unused: (block: Block) => void) {
    this.bytes = bytes;
    this.#unused = unused;
  }

  hold(): this {
    this.#holders += 1;
    return this;
  }

  release(): void {
    this.#holders -= 1;
    this.#check();
  }

  /** Dropped from the kept blocks: reusable once its last holder releases it. */
  drop(): void {
    this.#kept = false;
    this.#check();
  }

  #check(): void {
    if (!this.#kept && this.#holders === 0) this.#unused(this);
  }
}

export class SharedBlocks {
  readonly #read: PositionalRead;
  /** Blocks read, least recently used first. */
  readonly #kept = new Map<number, Block>();
  /** Blocks being read: held by every caller that asked for them, reusable only after. */
  readonly #reading = new Map<number, { readonly block: Block; readonly done: Promise<void> }>();
  readonly #free: Buffer[] = [];
  /** Bumped by `clear`: a read begun before it must not be kept. */
  #generation = 0;

  constructor(read: PositionalRead) {
    this.#read = read;
  }

  /**
   * Block `index` held for the caller when it is in memory or being read; undefined when
   * only a read would give it. The caller holds it from this call on, and releases it.
   */
  find(index: number, length: number): Promise<Block> | undefined {
    const kept = this.#kept.get(index);
    if (kept && kept.bytes.length === length) {
      this.#kept.delete(index);
      this.#kept.set(index, kept);
      return Promise.resolve(kept.hold());
    }
    const reading = this.#reading.get(index);
    if (!reading || reading.block.bytes.length !== length) return undefined;
    reading.block.hold();
    return reading.done.then(() => reading.block);
  }

  /** Block `index`, `length` bytes long (BLOCK_BYTES, or less for the tail of a complete blob), held for the caller. */
  get(index: number, length: number): Promise<Block> {
    const found = this.find(index, length);
    if (found) return found;
    const generation = this.#generation;
    // Held by the read until it is kept: a block a `clear` dropped meanwhile is never reused under it.
    const block = new Block(this.#buffer(length), (unused) => this.#reuse(unused.bytes)).hold();
    const reading = { block, done: this.#fill(block, index) };
    this.#reading.set(index, reading);
    void reading.done.then(
      () => {
        if (this.#reading.get(index) === reading) this.#reading.delete(index);
        if (generation === this.#generation) this.#keep(index, block);
        else block.drop();
        block.release();
      },
      () => {
        if (this.#reading.get(index) === reading) this.#reading.delete(index);
      },
    );
    block.hold();
    return reading.done.then(() => block);
  }

  /** Forgets every block: the spool started over. */
  clear(): void {
    this.#generation += 1;
    for (const block of this.#kept.values()) block.drop();
    this.#kept.clear();
    this.#reading.clear();
  }

  #buffer(length: number): Buffer {
    return (length === BLOCK_BYTES ? this.#free.pop() : undefined) ?? Buffer.allocUnsafeSlow(length);
  }

  #reuse(bytes: Buffer): void {
    if (bytes.length === BLOCK_BYTES && this.#free.length < FREE_BLOCKS) this.#free.push(bytes);
  }

  async #fill(block: Block, index: number): Promise<void> {
    const { bytes } = block;
    const start = index * BLOCK_BYTES;
    let filled = 0;
    while (filled < bytes.length) {
      const read = await this.#read(bytes.subarray(filled), start + filled);
      if (read === 0) throw new Error(`spool ended at byte ${start + filled}, inside a block that was readable`);
      filled += read;
    }
  }

  #keep(index: number, block: Block): void {
    this.#kept.get(index)?.drop();
    this.#kept.delete(index);
    this.#kept.set(index, block);
    if (this.#kept.size <= KEPT_BLOCKS) return;
    const [oldest] = this.#kept;
    if (!oldest) return;
    this.#kept.delete(oldest[0]);
    oldest[1].drop();
  }
}
