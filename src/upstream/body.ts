/**
 * Upstream bodies and the headers that frame them: read a small body whole, under a cap
 * (manifests, token responses), so an upstream cannot fill memory; drop a body nobody
 * will read, so its connection is freed and its late errors are not uncaught; trust a
 * Content-Length only when it is a plain decimal that a number holds exactly.
 */
import type { Readable } from 'node:stream';
import { UpstreamError } from './failure.js';
import type { Body } from './transport.js';

/** Error bodies are small; past this the connection is cheaper to drop than to drain. */
const DISCARD_LIMIT_BYTES = 64 * 1024;

/**
 * The whole body; past `maxBytes` it is destroyed and `tooLarge()` thrown, by default an
 * UNAVAILABLE UpstreamError answered as 502 (the upstream sent what no registry would).
 */
export async function readCapped(
  body: Readable,
  maxBytes: number,
  tooLarge: () => Error = () => responseTooLarge(maxBytes),
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) {
      closeBody(body);
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function responseTooLarge(maxBytes: number): UpstreamError {
  return new UpstreamError('UNAVAILABLE', `upstream response larger than ${maxBytes} bytes`, 'invalid', { statusCode: 502 });
}

/** Drops a body we do not need; its late 'error' (undici's abort) must not be uncaught. */
export function closeBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/**
 * Consumes a small undici body nobody will read, so its keep-alive connection can be
 * reused; one that is too large or fails while draining is destroyed instead, which is
 * all that was wanted of it (so the dump's error is dropped on purpose).
 */
export function discard(body: Body): void {
  if (body.destroyed) return;
  body.dump({ limit: DISCARD_LIMIT_BYTES }).catch(() => body.destroy());
}

/** Content-Length as a number: 1 to 15 decimal digits, else undefined. */
export function contentLength(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}
