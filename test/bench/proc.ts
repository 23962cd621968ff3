import { execFileSync } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';

/**
 * What the kernel says about the servers under test, from /proc: CPU time (utime +
 * stime, every thread, so Node's thread pool and Go's scheduler threads count) and
 * peak resident set size. A server is a process tree: nginx and `--workers 2` are a
 * primary and its children.
 */

const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Stat {
  readonly pid: number;
  readonly ppid: number;
  readonly ticks: number;
}

/** Fields of /proc/<pid>/stat after the command name, which may itself hold spaces and ')'. */
function parseStat(pid: number, text: string): Stat | undefined {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ppid = Number(fields[1]);
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(ppid) || !Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return { pid, ppid, ticks: utime + stime };
}

async function readStat(pid: number): Promise<Stat | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : parseStat(pid, text);
}

/** `root` and every process below it, as they are now. */
export async function processTree(root: number): Promise<number[]> {
  const entries = await readdir('/proc');
  const stats = await Promise.all(entries.filter((e) => /^\d+$/.test(e)).map((e) => readStat(Number(e))));
  const children = new Map<number, number[]>();
  for (const stat of stats) {
    if (!stat) continue;
    children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), stat.pid]);
  }
  const tree: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    tree.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** CPU seconds (user + system) the processes have used so far. */
export async function cpuSeconds(pids: readonly number[]): Promise<number> {
  const stats = await Promise.all(pids.map(readStat));
  return stats.reduce((sum, stat) => sum + (stat?.ticks ?? 0), 0) / TICKS_PER_SECOND;
}

/** Resets the peak RSS (VmHWM) of each process (proc(5): clear_refs, value 5). */
export async function resetPeakRss(pids: readonly number[]): Promise<void> {
  await Promise.all(pids.map((pid) => writeFile(`/proc/${pid}/clear_refs`, '5')));
}

/** A size field of /proc/<pid>/status (`VmRSS`, `VmHWM`) per process, in bytes; 0 for a process gone. */
async function statusBytes(pids: readonly number[], field: 'VmRSS' | 'VmHWM'): Promise<number[]> {
  const pattern = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm');
  const texts = await Promise.all(pids.map((pid) => readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')));
  return texts.map((text) => Number(pattern.exec(text)?.[1] ?? 0) * 1024);
}

const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);

/** The largest peak RSS (VmHWM) among the processes, in bytes. */
export async function peakRssBytes(pids: readonly number[]): Promise<number> {
  return Math.max(0, ...(await statusBytes(pids, 'VmHWM')));
}

/**
 * The peak RSS (VmHWM) of the processes added up, in bytes: what a tree (nginx and its
 * workers, a front and its mirror) held at most. Each process peaks on its own, so this
 * is an upper bound of the tree's peak.
 */
export async function peakRssTotalBytes(pids: readonly number[]): Promise<number> {
  return sum(await statusBytes(pids, 'VmHWM'));
}

/** The resident set size (VmRSS) of the processes now, added up, in bytes. */
export async function rssBytes(pids: readonly number[]): Promise<number> {
  return sum(await statusBytes(pids, 'VmRSS'));
}

/** Share of all CPUs busy (0–1) over `ms`, from /proc/stat: how loaded the machine is. */
export async function machineBusy(ms: number): Promise<number> {
  const read = async (): Promise<{ busy: number; total: number }> => {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] ?? '';
    const values = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = values.reduce((a, b) => a + b, 0);
    const idle = (values[3] ?? 0) + (values[4] ?? 0);
    return { busy: total - idle, total };
  };
  const before = await read();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = await read();
  const total = after.total - before.total;
  return total > 0 ? (after.busy - before.busy) / total : 0;
}
