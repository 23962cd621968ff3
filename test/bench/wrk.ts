import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** What one wrk run measured; latencies are per request, bytes include headers. */
export interface WrkResult {
  readonly requests: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Connect, read, write and timeout errors. */
  readonly socketErrors: number;
  /** Responses that were not 2xx or 3xx. */
  readonly statusErrors: number;
}

export interface WrkOptions {
  readonly url: string;
  readonly connections: number;
  readonly threads: number;
  readonly seconds: number;
  readonly headers?: Readonly<Record<string, string>>;
}

/** wrk's `done()` hook prints the summary as one JSON line, so nothing is parsed from its prose. */
const REPORT_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"bytes":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"socketErrors":%d,"statusErrors":%d}\\n',
    summary.requests, summary.bytes, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect + e.read + e.write + e.timeout, e.status))
end
`;

export async function writeWrkScript(dir: string): Promise<string> {
  const file = join(dir, 'report.lua');
  await writeFile(file, REPORT_LUA);
  return file;
}

export async function runWrk(script: string, options: WrkOptions): Promise<WrkResult> {
  const headers = Object.entries(options.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  const args = [
    `-t${options.threads}`,
    `-c${options.connections}`,
    `-d${options.seconds}s`,
    // A 100 MiB body at 16 connections takes seconds; wrk's default timeout is 2 s.
    '--timeout',
    '60s',
    '-s',
    script,
    ...headers,
    options.url,
  ];
  const { stdout } = await run('wrk', args, { timeout: (options.seconds + 90) * 1000 });
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (!line) throw new Error(`wrk printed no summary: ${stdout}`);
  const raw = JSON.parse(line.slice('WRK_JSON '.length)) as Record<string, number>;
  return {
    requests: raw['requests'] ?? 0,
    bytes: raw['bytes'] ?? 0,
    seconds: (raw['durationUs'] ?? 0) / 1e6,
    p50Ms: (raw['p50Us'] ?? 0) / 1000,
    p99Ms: (raw['p99Us'] ?? 0) / 1000,
    socketErrors: raw['socketErrors'] ?? 0,
    statusErrors: raw['statusErrors'] ?? 0,
  };
}
