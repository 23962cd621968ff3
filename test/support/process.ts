import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';

/**
 * Resolves when a child process prints `needle` (its "listening" line); its output
 * keeps being drained so a chatty child never blocks. Kills it after `timeoutMs`.
 */
export async function waitForOutput(child: ChildProcess, needle: string, timeoutMs = 15_000): Promise<void> {
  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.includes(needle)) resolve();
      if (output.length > 65_536) output = output.slice(-8_192);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${child.spawnfile} exited with ${code}: ${output.slice(-2000)}`)));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM, then SIGKILL after a bound; resolves when the child has exited. */
export async function terminate(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
