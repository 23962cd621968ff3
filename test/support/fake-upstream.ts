import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An in-test upstream for faults a real registry will not produce: wrong bytes, cut
 * bodies, bodies released on command. Each blob is served by a handler the test sets.
 */
export type BlobHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface FakeUpstream {
  readonly url: string;
  readonly hits: { method: string; path: string }[];
  setBlob(digest: string, handler: BlobHandler): void;
  /** Any other path (after /v2/) the test wants answered, e.g. `org/app/referrers/sha256:…`. */
  setPath(path: string, handler: BlobHandler): void;
  stop(): Promise<void>;
}

export async function startFakeUpstream(): Promise<FakeUpstream> {
  const blobs = new Map<string, BlobHandler>();
  const paths = new Map<string, BlobHandler>();
  const hits: { method: string; path: string }[] = [];
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?', 1)[0] ?? '';
    hits.push({ method: req.method ?? '', path });
    const m = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(path);
    const handler = m ? blobs.get(m[1] as string) : paths.get(path.replace(/^\/v2\//, ''));
    if (handler) return handler(req, res);
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}');
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    setBlob: (digest, handler) => blobs.set(digest, handler),
    setPath: (path, handler) => paths.set(path, handler),
    async stop() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export function digestOf(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

/** Serves `body` with its length, writing the first `release` bytes now and the rest when `finish()` is called. */
export function gatedBlob(body: Buffer, firstBytes: number): { handler: BlobHandler; finish(): void; started: Promise<void> } {
  let finish!: () => void;
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let started!: () => void;
  const startedPromise = new Promise<void>((resolve) => {
    started = resolve;
  });
  return {
    handler(req, res) {
      res.writeHead(200, { 'content-length': String(body.length), 'content-type': 'application/octet-stream' });
      if (req.method === 'HEAD') return void res.end();
      res.write(body.subarray(0, firstBytes));
      started();
      void gate.then(() => res.end(body.subarray(firstBytes)));
    },
    finish,
    started: startedPromise,
  };
}

/** Serves `body` whole, with its length (HEAD: headers only). */
export function servedBlob(body: Buffer, headers: Record<string, string> = {}): BlobHandler {
  return (req, res) => {
    res.writeHead(200, { 'content-length': String(body.length), 'content-type': 'application/octet-stream', ...headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/** Announces `body`'s length, sends its first `bytes`, then resets the connection (RST). */
export function resetAfter(body: Buffer, bytes: number): BlobHandler {
  return (_req, res) => {
    res.writeHead(200, { 'content-length': String(body.length) });
    res.write(body.subarray(0, bytes), () => res.socket?.resetAndDestroy());
  };
}

/** Announces `body`'s length, sends its first `bytes`, then closes the connection cleanly (FIN). */
export function closeAfter(body: Buffer, bytes: number): BlobHandler {
  return (_req, res) => {
    res.writeHead(200, { 'content-length': String(body.length) });
    res.write(body.subarray(0, bytes), () => res.socket?.end());
  };
}

/** Sends `bytes` every `everyMs` for ever (until the client goes): a live connection that never finishes. */
export function drip(body: Buffer, bytes: number, everyMs: number, headers: Record<string, string> = {}): BlobHandler {
  return (_req, res) => {
    res.writeHead(200, { 'content-length': String(body.length), ...headers });
    let sent = 0;
    const timer = setInterval(() => {
      if (sent + bytes >= body.length) return;
      res.write(body.subarray(sent, sent + bytes));
      sent += bytes;
    }, everyMs);
    res.once('close', () => clearInterval(timer));
  };
}

/** Reads the request and never answers (the connection stays open until the client gives up). */
export const silent: BlobHandler = () => undefined;

/** Answers `status` with an OCI error body and the given headers. */
export function failWith(status: number, headers: Record<string, string> = {}): BlobHandler {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end('{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}');
  };
}

/** Redirects to `location` (resolved by the client against the request URL). */
export function redirectTo(location: string, status = 302): BlobHandler {
  return (_req, res) => {
    res.writeHead(status, { location });
    res.end();
  };
}

export interface RangedBlobOptions {
  /** Body bytes sent by the n-th GET before the connection closes (FIN, short of Content-Length); GETs past the list are whole. */
  readonly cuts?: readonly number[];
  /** Answer a Range with 416 (as for a blob it no longer knows the size of). */
  readonly refuseRanges?: boolean;
  readonly etag?: string;
}

/**
 * Serves `body` as a registry's blob store does (ETag, Accept-Ranges; `Range: bytes=N-`
 * answered 206 with Content-Range unless If-Range names another ETag), and cuts the
 * first GETs mid-body as `cuts` says. `gets` records each GET's Range and If-Range.
 */
export function rangedBlob(body: Buffer, options: RangedBlobOptions = {}): BlobHandler & { gets: { range?: string; ifRange?: string }[] } {
  const etag = options.etag ?? `"${digestOf(body)}"`;
  const gets: { range?: string; ifRange?: string }[] = [];
  const handler: BlobHandler = (req, res) => {
    const base = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    if (req.method === 'HEAD') return void res.writeHead(200, { ...base, 'content-length': String(body.length) }).end();
    const { range } = req.headers;
    const ifRange = req.headers['if-range'] as string | undefined;
    gets.push({ ...(range ? { range } : {}), ...(ifRange ? { ifRange } : {}) });
    const start = Number(/^bytes=(\d+)-$/.exec(range ?? '')?.[1] ?? 0);
    const ranged = range !== undefined && (ifRange === undefined || ifRange === etag);
    if (ranged && (options.refuseRanges || start >= body.length)) {
      return void res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
    }
    const from = ranged ? start : 0;
    res.writeHead(ranged ? 206 : 200, {
      ...base,
      'content-length': String(body.length - from),
      ...(ranged ? { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` } : {}),
    });
    const cut = options.cuts?.[gets.length - 1];
    if (cut === undefined) return void res.end(body.subarray(from));
    // The close follows the bytes after a moment, so that they are read before the error discards them.
    res.write(body.subarray(from, from + cut), () => setTimeout(() => res.socket?.end(), 50));
  };
  return Object.assign(handler, { gets });
}
