/**
 * Tar out (tar-stream), streaming: an export never stages the bundle. Writes plain ustar
 * entries (with PAX headers only where ustar cannot say it). Reading is tar-reader.ts.
 */
import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import { pack } from 'tar-stream';

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
