import type { UpstreamConfig } from '../../src/config/types.js';

/**
 * An upstream's policy for unit tests of the upstream client: short timeouts, no retries,
 * no resumes, no fallback URLs. A test spreads it and names what it is about (url,
 * credentials, redirects).
 */
export const TEST_UPSTREAM_POLICY = {
  aliases: [],
  library: false,
  urls: [],
  freshForMs: 60_000,
  maxStaleMs: 0,
  timeouts: { connectMs: 500, headersMs: 500, bodyMs: 500 },
  retries: 0,
  downForMs: 0,
  maxConnections: 4,
  minBytesPerSecond: 1,
  resume: { maxResumes: 0, backoffMs: 0, withinMs: 1 },
  throttleMs: 60_000,
} as const satisfies Omit<UpstreamConfig, 'name' | 'url'>;
