import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { createUpstreamTable } from '../oci/upstream-table.js';
import type { Config } from '../config/types.js';
import { formatBytes, formatDuration } from '../config/units.js';
import { planExport, writeBundle, type ExportSelection } from '../bundle/export.js';
import { importBundle } from '../bundle/import.js';
import { openBundleOutput } from '../bundle/output.js';
import { parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { createTransferProgress, table, type Output, type ProgressMode } from './progress.js';
import { openStore } from './store-access.js';
import { readRefs } from './warm.js';

export interface ExportRequest {
  readonly refs: readonly string[];
  readonly file?: string;
  readonly all: boolean;
  readonly repository?: string;
  /** A path, or `-` for stdout. */
  readonly output: string;
}

/** Writes the bundle; returns how many selected images could not be exported. */
export async function runExport(
  config: Config,
  request: ExportRequest,
  mode: ProgressMode,
  out: Output,
  stdout: Writable,
): Promise<number> {
  const access = await openStore(config);
  try {
    const plan = await planExport(access, await selection(config, request));
    const say = (text: string): void => {
      if (mode !== 'json') out.write(`${text}\n`);
    };
    for (const f of plan.failed) say(`skipped ${f.name}: ${f.reason}`);
    if (plan.images.length === 0) throw new Error('no image to export');
    say(`exporting ${plan.images.length} images, ${plan.blobs.size} blobs, ${formatBytes(plan.totalBytes)} to ${request.output}`);
    const progress = createTransferProgress('export', plan.totalBytes, mode, out);
    const output = await openBundleOutput(request.output, config.store.path, stdout);
    try {
      await writeBundle(access, plan, output.stream, (n) => progress.add(n));
      // Renamed only when complete: a file by the bundle's name is never half a bundle.
      await output.commit();
    } catch (err) {
      await output.discard();
      throw err;
    }
    const durationMs = progress.finish();
    const summary = {
      images: plan.images.map((i) => i.name),
      skipped: plan.failed,
      blobs: plan.blobs.size,
      bytes: plan.totalBytes,
      durationMs,
    };
    if (mode === 'json') out.write(`${JSON.stringify({ type: 'export', ...summary })}\n`);
    else {
      out.write(
        table(
          ['IMAGE', 'DIGEST'],
          plan.images.map((i) => [i.name, i.digest]),
        ),
      );
      say(`exported ${plan.images.length} images, ${formatBytes(plan.totalBytes)} in ${formatDuration(durationMs)}`);
    }
    return plan.failed.length;
  } finally {
    await access.close();
  }
}

async function selection(config: Config, request: ExportRequest): Promise<ExportSelection> {
  if (request.all || request.repository !== undefined) {
    return { kind: 'all', ...(request.repository === undefined ? {} : { pattern: request.repository }) };
  }
  const table = createUpstreamTable(config);
  const images: { text: string; ref: ImageRef }[] = [];
  for (const text of await readRefs(request)) images.push({ text, ref: parseImageRef(text, table) });
  if (images.length === 0) throw new Error('nothing to export: give image references, --file, --repository or --all');
  return { kind: 'refs', images };
}

/** Loads a bundle; returns how many of its images could not be filed. */
export async function runImport(config: Config, file: string, mode: ProgressMode, out: Output, stdin: Readable): Promise<number> {
  const fromStdin = file === '-';
  const totalBytes = fromStdin ? 0 : (await stat(file)).size;
  const access = await openStore(config);
  try {
    const progress = createTransferProgress('import', totalBytes, mode, out);
    const input = fromStdin ? stdin : createReadStream(file, { highWaterMark: 1024 * 1024 });
    const report = await importBundle({ config, ...access }, input, (n) => progress.add(n));
    const durationMs = progress.finish();
    await access.index.saveSnapshot();
    if (mode === 'json') {
      out.write(`${JSON.stringify({ type: 'import', ...report, durationMs })}\n`);
    } else {
      out.write(
        table(
          ['IMAGE', 'DIGEST'],
          report.images.map((i) => [i.name, i.digest]),
        ),
      );
      for (const s of report.skipped) out.write(`skipped ${s.name}: ${s.reason}\n`);
      out.write(
        `imported ${report.images.length} images: ${report.added} blobs added (${formatBytes(report.bytes)}), ` +
          `${report.present} already stored${report.unreferenced > 0 ? `, ${report.unreferenced} referenced by no image and not kept` : ''}, ` +
          `in ${formatDuration(durationMs)}\n`,
      );
    }
    return report.skipped.length;
  } finally {
    await access.close();
  }
}
