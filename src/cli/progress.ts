/**
 * Progress for long commands (warm, export, import), in the form the reader needs:
 * a live display redrawn in place on a terminal, one plain line per event in logs and
 * CI, JSON lines for machines.
 */
import { formatBytes, formatDuration } from '../config/units.js';
import type { WarmEvent, WarmSummary } from '../mirror/warm.js';

export type ProgressMode = 'tty' | 'lines' | 'json';

export interface Output {
  write(text: string): void;
}

export function progressMode(json: boolean, isTTY: boolean | undefined): ProgressMode {
  if (json) return 'json';
  return isTTY ? 'tty' : 'lines';
}

const REDRAW_MS = 100;
const BAR_WIDTH = 20;

interface ImageState {
  blobs: number;
  blobsDone: number;
  bytes: number;
  bytesDone: number;
  state: 'resolving' | 'pulling' | 'done' | 'failed';
  note: string;
}

/** The warm display: feed it events, then `finish()` with the results. */
export function createWarmProgress(refs: readonly string[], mode: ProgressMode, out: Output, now: () => number = Date.now) {
  const startedMs = now();
  const images = new Map<string, ImageState>(
    refs.map((r) => [r, { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0, state: 'resolving', note: '' }]),
  );
  let drawnLines = 0;
  let timer: NodeJS.Timeout | undefined;

  function draw(): void {
    const lines = [...images].map(([ref, s]) => imageLine(ref, s, now() - startedMs));
    const up = drawnLines > 0 ? `\x1b[${drawnLines}A` : '';
    out.write(`${up}${lines.map((l) => `\x1b[2K${l}\n`).join('')}`);
    drawnLines = lines.length;
  }

  if (mode === 'tty') {
    draw();
    timer = setInterval(draw, REDRAW_MS);
    timer.unref();
  }

  return {
    onEvent(event: WarmEvent): void {
      const s = images.get(event.ref);
      if (!s) return;
      switch (event.type) {
        case 'resolved':
          Object.assign(s, { blobs: event.blobs, bytes: event.bytes, state: 'pulling' });
          if (mode === 'lines') {
            const platforms = event.platforms.length > 0 ? `${event.platforms.join(',')}, ` : '';
            out.write(`resolved ${event.ref} ${event.digest} (${platforms}${event.blobs} blobs, ${formatBytes(event.bytes)})\n`);
          }
          break;
        case 'progress':
          s.bytesDone += event.bytes;
          return;
        case 'blob':
          s.blobsDone += 1;
          if (event.cached) s.bytesDone += event.sizeBytes;
          break;
        case 'done':
          Object.assign(s, { state: 'done', bytesDone: s.bytes });
          if (mode === 'lines') out.write(`done ${event.ref}: ${summaryText(event.summary)}\n`);
          break;
        case 'failed':
          Object.assign(s, { state: 'failed', note: event.reason });
          if (mode === 'lines') out.write(`failed ${event.ref}: ${event.reason}\n`);
          break;
      }
      if (mode === 'json') out.write(`${JSON.stringify(event)}\n`);
    },
    finish(result: { done: readonly WarmSummary[]; failed: readonly { ref: string; reason: string }[] }): void {
      if (timer) clearInterval(timer);
      if (mode === 'tty') draw();
      const totals = { images: result.done.length, failed: result.failed.length, durationMs: now() - startedMs };
      if (mode === 'json') {
        out.write(`${JSON.stringify({ type: 'summary', ...totals, images: result.done, failures: result.failed })}\n`);
        return;
      }
      out.write(`\n${summaryTable(result.done)}`);
      for (const f of result.failed) out.write(`FAILED  ${f.ref}: ${f.reason}\n`);
      out.write(`${totals.images} warmed, ${totals.failed} failed in ${formatDuration(totals.durationMs)}\n`);
    },
  };
}

function imageLine(ref: string, s: ImageState, elapsedMs: number): string {
  if (s.state === 'failed') return `✗ ${ref}  ${s.note}`;
  if (s.state === 'resolving') return `  ${ref}  resolving…`;
  const fraction = s.bytes > 0 ? Math.min(1, s.bytesDone / s.bytes) : 1;
  const rate = elapsedMs > 0 ? (s.bytesDone / elapsedMs) * 1000 : 0;
  const eta =
    s.state === 'done' ? 'done' : rate > 0 ? `ETA ${formatDuration(Math.round(((s.bytes - s.bytesDone) / rate) * 1000))}` : 'ETA –';
  return (
    `${s.state === 'done' ? '✓' : ' '} ${ref}  ${bar(fraction)} ${s.blobsDone}/${s.blobs} blobs  ` +
    `${formatBytes(s.bytesDone)}/${formatBytes(s.bytes)}  ${formatBytes(Math.round(rate))}/s  ${eta}`
  );
}

export function bar(fraction: number): string {
  const filled = Math.round(fraction * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
}

function summaryText(s: WarmSummary): string {
  return `${formatBytes(s.bytes)} (${formatBytes(s.fetchedBytes)} fetched, ${formatBytes(s.cachedBytes)} already cached) in ${formatDuration(s.durationMs)}`;
}

/** A plain table, columns padded to their widest cell. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].map((l) => `${l}\n`).join('');
}

function summaryTable(done: readonly WarmSummary[]): string {
  if (done.length === 0) return '';
  return table(
    ['IMAGE', 'PLATFORMS', 'BYTES', 'CACHED', 'FETCHED', 'TIME'],
    done.map((s) => [
      s.ref,
      s.platforms.join(',') || '-',
      formatBytes(s.bytes),
      formatBytes(s.cachedBytes),
      formatBytes(s.fetchedBytes),
      formatDuration(s.durationMs),
    ]),
  );
}

/** A byte count towards a known total (export, import): a bar on a terminal, lines every 10 % otherwise. */
export function createTransferProgress(label: string, totalBytes: number, mode: ProgressMode, out: Output, now: () => number = Date.now) {
  const startedMs = now();
  let doneBytes = 0;
  let lastTenth = 0;
  let timer: NodeJS.Timeout | undefined;
  const line = (): string => {
    const elapsedMs = Math.max(1, now() - startedMs);
    const rate = (doneBytes / elapsedMs) * 1000;
    const fraction = totalBytes > 0 ? Math.min(1, doneBytes / totalBytes) : 1;
    const eta = rate > 0 ? formatDuration(Math.round(((totalBytes - doneBytes) / rate) * 1000)) : '–';
    return `${label} ${bar(fraction)} ${formatBytes(doneBytes)}/${formatBytes(totalBytes)}  ${formatBytes(Math.round(rate))}/s  ETA ${eta}`;
  };
  if (mode === 'tty') {
    timer = setInterval(() => out.write(`\r\x1b[2K${line()}`), REDRAW_MS);
    timer.unref();
  }
  return {
    add(bytes: number): void {
      doneBytes += bytes;
      if (mode !== 'lines' || totalBytes === 0) return;
      const tenth = Math.floor((doneBytes / totalBytes) * 10);
      if (tenth > lastTenth) {
        lastTenth = tenth;
        out.write(`${line()}\n`);
      }
    },
    finish(): number {
      if (timer) clearInterval(timer);
      if (mode === 'tty') out.write(`\r\x1b[2K${line()}\n`);
      return now() - startedMs;
    },
  };
}
