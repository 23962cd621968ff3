import { createHash } from 'node:crypto';
import { request } from 'undici';

export interface Fetched {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly sha256: string;
  readonly bytes: number;
  readonly body: Buffer | undefined;
}

/**
 * One request to the mirror; the body is hashed as it streams (never buffered unless
 * `keepBody`), so 50 clients on a 100 MiB blob stay cheap.
 */
export async function fetchHashed(
  url: string,
  options: { method?: 'GET' | 'HEAD'; headers?: Record<string, string | string[]>; keepBody?: boolean } = {},
): Promise<Fetched> {
  const response = await request(url, { method: options.method ?? 'GET', headers: options.headers ?? {} });
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
    if (options.keepBody) chunks.push(chunk);
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(response.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return {
    status: response.statusCode,
    headers,
    sha256: `sha256:${hash.digest('hex')}`,
    bytes,
    body: options.keepBody ? Buffer.concat(chunks) : undefined,
  };
}

/** The Accept list Docker and containers/image send, one header line per type. */
export const CLIENT_MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
  'application/json',
];

/** How a request ended for the client: a whole response, or a transfer broken after (or before) its headers. */
export type Outcome =
  | { readonly kind: 'complete'; readonly status: number; readonly headers: Record<string, string>; readonly body: Buffer }
  | { readonly kind: 'broken'; readonly status: number | undefined; readonly bytes: number; readonly error: unknown };

/** GETs `url` and reads the whole body, telling a clean end from a broken one. */
export async function fetchOutcome(url: string, headers: Record<string, string> = {}): Promise<Outcome> {
  let status: number | undefined;
  let bytes = 0;
  try {
    const response = await request(url, { headers });
    status = response.statusCode;
    const chunks: Buffer[] = [];
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      chunks.push(chunk);
    }
    const flat: Record<string, string> = {};
    for (const [name, value] of Object.entries(response.headers)) {
      if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    return { kind: 'complete', status, headers: flat, body: Buffer.concat(chunks) };
  } catch (error) {
    return { kind: 'broken', status, bytes, error };
  }
}
