/**
 * Reads a tar strictly, streaming: POSIX ustar with PAX extended headers, and GNU long
 * names, as GNU tar, skopeo and docker write them. Each header's checksum is checked.
 * The archive must end with its end-of-archive marker, two zero blocks (POSIX.1 `pax`,
 * "ustar Interchange Format"): a tar cut short, inside an entry or exactly between two,
 * is an error, and so is a stream of zeros with a header missing. Nothing after the
 * marker is read, so the padding `dd` leaves on a device is ignored, as GNU tar does.
 */
import type { Readable } from 'node:stream';

export interface TarEntry {
  /** The path, without a leading `./`. */
  readonly name: string;
  /** From the header, before a byte of the body is read. */
  readonly sizeBytes: number;
  readonly isFile: boolean;
  /** Exactly `sizeBytes` bytes; what the caller leaves unread is skipped. */
  readonly body: AsyncIterable<Buffer>;
}

const BLOCK = 512;
/** PAX and GNU long-name records are small; past this a header is not one. */
const MAX_META_BYTES = 1024 * 1024;
const FILE_TYPES: ReadonlySet<string> = new Set(['0', '\0', '7']);

export class TarFormatError extends Error {
  override readonly name = 'TarFormatError';
}

/** Calls `onEntry` for each entry, in order, until the end-of-archive marker; then stops reading `input`. */
export async function readTar(input: Readable, onEntry: (entry: TarEntry) => Promise<void>): Promise<void> {
  const source = createSource(input);
  try {
    let pending: { path?: string; size?: number } = {};
    for (;;) {
      const block = await source.read(BLOCK, 'the tar ends without its end-of-archive marker (cut short?)');
      if (isZero(block)) {
        const next = await source.read(BLOCK, 'the tar ends inside its end-of-archive marker (cut short?)');
        if (!isZero(next)) throw new TarFormatError(`a lone zero block at byte ${source.offset - 2 * BLOCK}, where a header belongs`);
        return;
      }
      const header = parseHeader(block, source.offset - BLOCK);
      const sizeBytes = pending.size ?? header.sizeBytes;
      if (header.type === 'x' || header.type === 'g' || header.type === 'L' || header.type === 'K') {
        const meta = await source.readPadded(header.sizeBytes);
        if (header.type === 'x') pending = { ...pending, ...parsePax(meta) };
        if (header.type === 'L') pending = { ...pending, path: cString(meta, 0, meta.length) };
        continue;
      }
      const name = (pending.path ?? header.name).replace(/^(\.\/)+/, '');
      pending = {};
      const body = source.body(sizeBytes);
      await onEntry({ name, sizeBytes, isFile: FILE_TYPES.has(header.type), body: body.chunks });
      await body.skipRest();
    }
  } finally {
    input.destroy();
  }
}

interface Source {
  /** Bytes consumed so far. */
  readonly offset: number;
  /** Exactly `n` bytes, or a TarFormatError saying `ended` when the input ends first. */
  read(n: number, ended: string): Promise<Buffer>;
  /** A small entry's body and its padding (PAX, long names), at most MAX_META_BYTES. */
  readPadded(sizeBytes: number): Promise<Buffer>;
  body(sizeBytes: number): { chunks: AsyncIterable<Buffer>; skipRest(): Promise<void> };
}

function createSource(input: Readable): Source {
  const chunks = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let buffered: Buffer = Buffer.alloc(0);
  let offset = 0;
  const cut = (): TarFormatError => new TarFormatError(`the tar ends inside an entry at byte ${offset} (cut short?)`);

  async function more(): Promise<boolean> {
    const next = await chunks.next();
    if (next.done) return false;
    buffered = buffered.length === 0 ? next.value : Buffer.concat([buffered, next.value]);
    return true;
  }
  function consume(n: number): Buffer {
    const out = buffered.subarray(0, n);
    buffered = buffered.subarray(n);
    offset += n;
    return out;
  }
  async function read(n: number, ended: string): Promise<Buffer> {
    while (buffered.length < n) {
      if (!(await more())) throw buffered.length === 0 ? new TarFormatError(ended) : cut();
    }
    return consume(n);
  }
  /** Up to `max` bytes, as many as have arrived. */
  async function take(max: number): Promise<Buffer> {
    if (buffered.length === 0 && !(await more())) throw cut();
    return consume(Math.min(max, buffered.length));
  }
  const padding = (sizeBytes: number): number => (BLOCK - (sizeBytes % BLOCK)) % BLOCK;

  return {
    get offset() {
      return offset;
    },
    read,
    async readPadded(sizeBytes) {
      if (sizeBytes > MAX_META_BYTES) throw new TarFormatError(`an extended header of ${sizeBytes} bytes at byte ${offset}`);
      const ended = `the tar ends inside an entry at byte ${offset} (cut short?)`;
      return (await read(sizeBytes + padding(sizeBytes), ended)).subarray(0, sizeBytes);
    },
    body(sizeBytes) {
      let left = sizeBytes;
      return {
        chunks: {
          async *[Symbol.asyncIterator]() {
            while (left > 0) {
              const chunk = await take(left);
              left -= chunk.length;
              yield chunk;
            }
          },
        },
        async skipRest() {
          while (left > 0) left -= (await take(left)).length;
          if (padding(sizeBytes) > 0) await read(padding(sizeBytes), `the tar ends inside an entry at byte ${offset} (cut short?)`);
        },
      };
    },
  };
}

function parseHeader(block: Buffer, at: number): { name: string; sizeBytes: number; type: string } {
  const stored = octal(block, 148, 8);
  if (stored === undefined || stored !== checksum(block)) throw new TarFormatError(`not a tar header at byte ${at} (bad checksum)`);
  const magic = block.toString('latin1', 257, 263);
  // POSIX ustar splits long names into prefix/name; GNU's format keeps other fields there.
  const prefix = magic === 'ustar\0' ? cString(block, 345, 155) : '';
  const name = cString(block, 0, 100);
  const sizeBytes = size(block, at);
  return { name: prefix ? `${prefix}/${name}` : name, sizeBytes, type: String.fromCharCode(block[156] ?? 0) };
}

/** The header's checksum: the sum of its bytes, the checksum field counted as spaces. */
function checksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
  return sum;
}

/** Octal, or GNU base-256 (high bit set) for sizes of 8 GiB and more. */
function size(block: Buffer, at: number): number {
  const first = block[124] ?? 0;
  if (first & 0x80) {
    if (first === 0xff) throw new TarFormatError(`a negative entry size at byte ${at}`);
    let value = first & 0x7f;
    for (let i = 125; i < 136; i++) value = value * 256 + (block[i] ?? 0);
    if (!Number.isSafeInteger(value)) throw new TarFormatError(`an entry size too large at byte ${at}`);
    return value;
  }
  const value = octal(block, 124, 12);
  if (value === undefined) throw new TarFormatError(`an unreadable entry size at byte ${at}`);
  return value;
}

function octal(block: Buffer, start: number, length: number): number | undefined {
  const text = block
    .toString('latin1', start, start + length)
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : text === '' ? 0 : undefined;
}

function cString(buf: Buffer, start: number, length: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end === -1 || end > start + length ? start + length : end);
}

/** PAX records, `<length> <key>=<value>\n`: the path and size that override the next header's. */
function parsePax(meta: Buffer): { path?: string; size?: number } {
  const found: { path?: string; size?: number } = {};
  let pos = 0;
  while (pos < meta.length) {
    const space = meta.indexOf(0x20, pos);
    const length = Number(meta.toString('latin1', pos, space));
    if (space === -1 || !Number.isSafeInteger(length) || length <= space - pos || pos + length > meta.length) {
      throw new TarFormatError('a damaged PAX extended header');
    }
    const record = meta.toString('utf8', space + 1, pos + length - 1);
    const eq = record.indexOf('=');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    if (key === 'path') found.path = value;
    if (key === 'size') {
      if (!/^[0-9]+$/.test(value)) throw new TarFormatError('a damaged PAX size');
      found.size = Number(value);
    }
    pos += length;
  }
  return found;
}

function isZero(block: Buffer): boolean {
  for (const byte of block) if (byte !== 0) return false;
  return true;
}
