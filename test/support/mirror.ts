import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/index.js';
import { createSilentLogger, type Logger } from '../../src/log.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { terminate, waitForOutput } from './process.js';

/** The parts of a config file a test chooses; listen, store and log are the harness's. */
export interface MirrorInput {
  readonly upstreams: Record<string, Record<string, unknown>>;
  readonly defaultUpstream?: string;
  readonly upstreamDefaults?: Record<string, unknown>;
  readonly offline?: boolean;
  readonly store?: Record<string, unknown>;
  readonly clientAuth?: Record<string, unknown>;
  /** Merged into the harness's listen section (host and port stay the harness's): `drainTimeout`, the limits. */
  readonly listen?: Record<string, unknown>;
  readonly front?: Record<string, unknown>;
}

export interface MirrorHandle {
  readonly url: string;
  readonly host: string;
  readonly storeDir: string;
  readonly runtime: Runtime;
  stop(): Promise<void>;
}

function fileConfig(input: MirrorInput, storeDir: string, port: number, level = 'silent'): Record<string, unknown> {
  return {
    listen: { ...input.listen, host: '127.0.0.1', port },
    store: { path: storeDir, ...input.store },
    log: { level },
    defaultUpstream: input.defaultUpstream ?? Object.keys(input.upstreams)[0],
    upstreams: input.upstreams,
    ...(input.upstreamDefaults ? { upstreamDefaults: input.upstreamDefaults } : {}),
    ...(input.offline !== undefined ? { offline: input.offline } : {}),
    ...(input.clientAuth ? { clientAuth: input.clientAuth } : {}),
    ...(input.front ? { front: input.front } : {}),
  };
}

/** A mirror in this process, on an ephemeral loopback port, with its own store. */
export async function startMirror(
  input: MirrorInput,
  options: { env?: Record<string, string>; storeDir?: string; log?: Logger } = {},
): Promise<MirrorHandle> {
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), 'oci-mirror-store-')));
  const config = parseConfig(fileConfig(input, storeDir, 0), options.env ?? {});
  const runtime = await createRuntime(config, { log: options.log ?? createSilentLogger(), processMetrics: false });
  const address = await runtime.app.listen({ host: '127.0.0.1', port: 0 });
  const host = address.replace(/^http:\/\//, '');
  return {
    url: address,
    host,
    storeDir,
    runtime,
    async stop() {
      await runtime.close();
      if (!options.storeDir) await rm(storeDir, { recursive: true, force: true });
    },
  };
}

export interface MirrorProcess {
  readonly url: string;
  readonly host: string;
  readonly pid: number;
  readonly storeDir: string;
  /** Peak resident set size so far (VmHWM), in bytes. */
  peakRssBytes(): Promise<number>;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves when the output so far contains `needle`; rejects after `timeoutMs` or if the process exits first. */
  waitForOutput(needle: string, timeoutMs?: number): Promise<void>;
  /** Settles with the exit code (null when killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** SIGKILL, as a crash or the OOM killer would: no clean-up runs. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export interface MirrorProcessOptions {
  /** Share a store directory (kept after stop); default a fresh one per process. */
  readonly storeDir?: string;
  /** More arguments for `serve`, e.g. `['--workers', '2']`. */
  readonly args?: readonly string[];
}

/** The built mirror (`dist/main.js`) as a child process, as users run it. */
export async function startMirrorProcess(input: MirrorInput, port: number, options: MirrorProcessOptions = {}): Promise<MirrorProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-proc-'));
  const storeDir = options.storeDir ?? join(dir, 'store');
  const configFile = join(dir, 'mirror.config.json');
  await writeFile(configFile, JSON.stringify(fileConfig(input, storeDir, port, 'info')));
  const child: ChildProcess = spawn(process.execPath, ['dist/main.js', 'serve', '--config', configFile, ...(options.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-262_144);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  await waitForOutput(child, 'mirror listening');
  return {
    url,
    host: `127.0.0.1:${port}`,
    pid: child.pid ?? 0,
    storeDir,
    async peakRssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
      return Number(kb ?? 0) * 1024;
    },
    output: () => output,
    exited,
    async waitForOutput(needle, timeoutMs = 10_000) {
      let onData: (() => void) | undefined;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          new Promise<void>((resolve) => {
            onData = () => {
              if (output.includes(needle)) resolve();
            };
            onData();
            child.stdout?.on('data', onData);
            child.stderr?.on('data', onData);
          }),
          exited.then(() => {
            if (!output.includes(needle)) throw new Error(`mirror exited before printing ${needle}`);
          }),
          new Promise<never>((_resolve, reject) => {
            timer = setTimeout(() => reject(new Error(`mirror did not print ${needle} within ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
        if (onData) {
          child.stdout?.off('data', onData);
          child.stderr?.off('data', onData);
        }
      }
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
    async stop() {
      await terminate(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
