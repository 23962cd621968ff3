import { connect, type Socket } from 'node:net';

/**
 * Slow clients on raw sockets: each sends one GET, reads the response head, and then
 * takes bytes off its socket only when told, so the server holds the rest of the body
 * (in its own buffers, or in the kernel's). Used by `bench:slow-readers` and by the
 * main bench's `slow-readers` scenario.
 *
 * Clients connect from 127.0.1.x, READERS_PER_ADDRESS per address, as many machines
 * would: the mirror allows `listen.maxRequestsPerClient` (64) requests in flight per
 * client address and answers the rest 429.
 */
export const READERS_PER_ADDRESS = 60;
const CONNECT_BATCH = 100;
/** A server that has not answered a GET's head within this long has failed the run. */
const HEAD_TIMEOUT_MS = 60_000;

interface Reader {
  readonly socket: Socket;
  /** Bytes taken off the socket so far, response head included. */
  readBytes: number;
  status: number | undefined;
}

export interface SlowReaders {
  /** Opens `count` more readers, in batches of 100; resolves once each has its response head (or failed). */
  open(count: number): Promise<void>;
  /**
   * For `seconds`, once a second, each reader takes up to `bytesPerSecond` off its
   * socket's buffer; the rest of the body waits there, in the kernel, and in the server.
   */
  readSlowly(seconds: number, bytesPerSecond: number): Promise<void>;
  /** Readers by the status of their response (0: none, the connection failed or closed first). */
  statuses(): Record<number, number>;
  /** Bytes taken off all sockets so far. */
  readBytes(): number;
  /** Destroys every socket opened, whatever state it is in. Safe to call twice. */
  destroy(): void;
}

/** Readers of `path` on 127.0.0.1:`port`; every socket is kept so that `destroy()` reaches all. */
export function createSlowReaders(port: number, path: string): SlowReaders {
  const readers: Reader[] = [];
  return {
    async open(count) {
      const end = readers.length + count;
      for (let i = readers.length; i < end; i += CONNECT_BATCH) {
        const batch = Array.from({ length: Math.min(CONNECT_BATCH, end - i) }, (_, j) => openReader(port, path, i + j, readers));
        await Promise.all(batch);
      }
    },
    async readSlowly(seconds, bytesPerSecond) {
      for (let second = 0; second < seconds; second++) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        for (const reader of readers) {
          const chunk = reader.socket.read(Math.min(bytesPerSecond, reader.socket.readableLength)) as Buffer | null;
          reader.readBytes += chunk?.length ?? 0;
        }
      }
    },
    statuses() {
      const counts: Record<number, number> = {};
      for (const { status = 0 } of readers) counts[status] = (counts[status] ?? 0) + 1;
      return counts;
    },
    readBytes: () => readers.reduce((sum, r) => sum + r.readBytes, 0),
    destroy() {
      for (const reader of readers) reader.socket.destroy();
    },
  };
}

/**
 * One reader from 127.0.1.x, pushed onto `readers` as soon as its socket exists. Resolves
 * once the status line is read; a reader that closes or times out first keeps status
 * undefined (counted as 0), so one failure does not stop the others' run.
 */
function openReader(port: number, path: string, index: number, readers: Reader[]): Promise<void> {
  const localAddress = `127.0.1.${1 + Math.floor(index / READERS_PER_ADDRESS)}`;
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  const reader: Reader = { socket, readBytes: 0, status: undefined };
  readers.push(reader);
  socket.on('error', () => undefined);
  return new Promise((resolve) => {
    const timer = setTimeout(() => settle(), HEAD_TIMEOUT_MS);
    const settle = (): void => {
      clearTimeout(timer);
      socket.removeListener('close', settle);
      resolve();
    };
    socket.once('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: mirror\r\n\r\n`));
    socket.once('close', settle);
    socket.once('readable', () => {
      const head = socket.read(Math.min(socket.readableLength, 64)) as Buffer | null;
      reader.readBytes += head?.length ?? 0;
      reader.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head?.toString('latin1') ?? '')?.[1] ?? 0);
      settle();
    });
  });
}
