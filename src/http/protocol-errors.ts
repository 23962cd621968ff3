import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { API_VERSION_HEADER } from './headers.js';

/**
 * Requests that never reach a route: HTTP Node cannot parse (a raw control byte, an
 * unknown method token, a header section over 16 KiB) and paths fastify cannot decode.
 * They get the same OCI error envelope as everything else, so a client always reads
 * `{ "errors": [...] }`, and their connection is closed.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A reset connection has no one to answer (Node's own `clientError` rule).
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const message = status === 431 ? 'request header fields too large' : status === 408 ? 'request timeout' : 'malformed HTTP request';
  const body = JSON.stringify(new RegistryError('UNSUPPORTED', message, { statusCode: status }).toJSON());
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** Fastify's own request errors, chiefly FST_ERR_BAD_URL (a `%` that is not an escape). */
export function answerFrameworkError(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const error =
    err.code === 'FST_ERR_BAD_URL'
      ? new RegistryError('NAME_INVALID', 'the request path is not validly percent-encoded')
      : new RegistryError('UNSUPPORTED', 'malformed request', { statusCode: 400 });
  void reply.code(error.statusCode).headers(API_VERSION_HEADER).type('application/json').send(JSON.stringify(error.toJSON()));
}

/** The answer to a path no route has: 405 for a method we never serve, else 404 (spec §"Error Codes"). */
export function unrouted(method: string): RegistryError {
  return method === 'GET' || method === 'HEAD'
    ? new RegistryError('NAME_UNKNOWN', 'not found', { statusCode: 404 })
    : new RegistryError('UNSUPPORTED', `method ${method} is not supported: this is a pull-through mirror`, { statusCode: 405 });
}
