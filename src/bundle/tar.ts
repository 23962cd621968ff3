/**
 * Tar in and out (tar-stream), streaming both ways: an export never stages the bundle,
 * an import never holds a blob in memory. Writes plain ustar entries (with PAX headers
 * only where ustar cannot say it); reads ustar, PAX and GNU, as skopeo and docker write.
 */
import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import { extract, pack } from 'tar-stream';

export interface TarWriter {
  addBuffer(name: string, body: Buffer): Promise<void>;
  addStream(name: string, sizeBytes: number, body: Readable, onBytes?: (n: number) => void): Promise<void>;
  /** Ends the archive and waits until `out` has taken every byte. */
  finish(): Promise<void>;
}

export function createTarWriter(out: Writable): TarWriter {
  const archive = pack();
  const done = pipeline(archive, out);
  // Awaited in finish(); until then an early failure must not count as unhandled.
  done.catch(() => undefined);
  const mtime = new Date(0);
  return {
    addBuffer(name, body) {
      return new Promise<void>((resolve, reject) => {
        archive.entry({ name, size: body.length, mtime, mode: 0o644 }, body, (err) => (err ? reject(err) : resolve()));
      });
    },
    async addStream(name, sizeBytes, body, onBytes) {
      const entry = archive.entry({ name, size: sizeBytes, mtime, mode: 0o644 });
      await pipeline(
        body,
        async function* count(chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            onBytes?.(chunk.length);
            yield chunk;
          }
        },
        entry,
      );
    },
    async finish() {
      archive.finalize();
      await done;
    },
  };
}

export interface TarEntry {
  /** The path, without a leading `./`. */
  readonly name: string;
  readonly sizeBytes: number;
  readonly isFile: boolean;
  readonly body: AsyncIterable<Buffer>;
}

/** Calls `onEntry` for each entry in order; the entry's body must be consumed (or it is drained). */
export async function readTar(input: Readable, onEntry: (entry: TarEntry) => Promise<void>): Promise<void> {
  const extractor = extract();
  const feeding = pipeline(input, extractor);
  // Awaited after the last entry; until then a failure surfaces through the extractor too.
  feeding.catch(() => undefined);
  for await (const entry of extractor) {
    const { header } = entry;
    await onEntry({
      name: header.name.replace(/^\.\//, ''),
      sizeBytes: header.size ?? 0,
      isFile: header.type === 'file' || header.type === 'contiguous-file' || header.type == null,
      body: entry as unknown as AsyncIterable<Buffer>,
    });
    entry.resume();
  }
  await feeding;
}
