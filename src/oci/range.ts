import { RegistryError } from './errors.js';

/** A single byte range as asked: `bytes=N-`, `bytes=N-M` or the suffix `bytes=-S`. */
export type RangeSpec =
  { readonly kind: 'from'; readonly start: number; readonly end?: number } | { readonly kind: 'suffix'; readonly length: number };

/** A range resolved against a size: inclusive bounds, as in Content-Range. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

const SINGLE = /^bytes=(\d{0,15})-(\d{0,15})$/;

/**
 * Parses a Range header. Registries serve single ranges (containerd and Docker resume
 * with `bytes=N-`); a multi-range or malformed header is refused rather than ignored,
 * so a client never mistakes a whole body for the window it asked for.
 */
export function parseRange(header: string | undefined): RangeSpec | undefined {
  if (header === undefined) return undefined;
  const m = SINGLE.exec(header.trim());
  if (!m) throw new RegistryError('RANGE_INVALID', `unsupported Range ${JSON.stringify(header.slice(0, 100))}`);
  const [, first = '', last = ''] = m;
  if (first === '' && last === '') throw new RegistryError('RANGE_INVALID', 'empty Range');
  if (first === '') return { kind: 'suffix', length: Number(last) };
  const start = Number(first);
  if (last === '') return { kind: 'from', start };
  const end = Number(last);
  if (end < start) throw new RegistryError('RANGE_INVALID', `Range end before start: ${header}`);
  return { kind: 'from', start, end };
}

/** Inclusive bounds within `sizeBytes`, or 416 with `Content-Range: bytes *\/size`. */
export function resolveRange(spec: RangeSpec, sizeBytes: number): ByteRange {
  if (spec.kind === 'suffix') {
    if (spec.length === 0 || sizeBytes === 0) throw unsatisfiable(sizeBytes);
    return { start: Math.max(0, sizeBytes - spec.length), end: sizeBytes - 1 };
  }
  if (spec.start >= sizeBytes) throw unsatisfiable(sizeBytes);
  return { start: spec.start, end: Math.min(spec.end ?? sizeBytes - 1, sizeBytes - 1) };
}

function unsatisfiable(sizeBytes: number): RegistryError {
  return new RegistryError('RANGE_INVALID', 'requested range not satisfiable', {
    statusCode: 416,
    headers: { 'content-range': `bytes */${sizeBytes}` },
  });
}
