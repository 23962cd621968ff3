/**
 * Where an export writes: stdout (`-`), or a regular file that appears only when the
 * bundle is complete. The file is written to `<output>.partial`, created afresh with
 * O_EXCL|O_NOFOLLOW (never through a link someone left there), then renamed over the
 * output (a rename replaces a link, never writes through it). Refused outright: an output
 * that exists and is not a regular file (a device such as /dev/stdout, a directory, a
 * link), and any path inside the store, whose files only the store may write.
 */
import { constants } from 'node:fs';
import { lstat, open, realpath, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { hasCode, ifMissing } from '../store/fs-errors.js';

export interface BundleOutput {
  readonly stream: Writable;
  /** Waits until every byte is written, then puts the file in place. */
  commit(): Promise<void>;
  /** Drops what was written (nothing to do for stdout). */
  discard(): Promise<void>;
}

const CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export async function openBundleOutput(output: string, storePath: string, stdout: Writable): Promise<BundleOutput> {
  if (output === '-') return { stream: stdout, commit: () => Promise.resolve(), discard: () => Promise.resolve() };
  const target = await checkTarget(output, storePath);
  const partial = `${target}.partial`;
  const handle = await createPartial(partial);
  const stream = handle.createWriteStream();
  return {
    stream,
    async commit() {
      // The tar writer ends the stream; the rename waits until the file has every byte.
      await finished(stream);
      await rename(partial, target);
    },
    async discard() {
      stream.destroy();
      await rm(partial, { force: true });
    },
  };
}

/** The real path to write, after refusing devices, links, directories and the store. */
async function checkTarget(output: string, storePath: string): Promise<string> {
  const existing = await lstat(output).catch(ifMissing(undefined));
  if (existing && !existing.isFile()) {
    throw new Error(`--output ${output} exists and is not a regular file; give --output - to write the bundle to stdout`);
  }
  const dir = await realpath(dirname(resolve(output))).catch(ifMissing(undefined));
  if (dir === undefined) throw new Error(`--output ${output}: directory ${dirname(output)} does not exist`);
  const target = join(dir, basename(output));
  const store = await realpath(storePath).catch(ifMissing(undefined));
  if (store !== undefined && (target === store || target.startsWith(store + sep))) {
    throw new Error(`--output ${output} is inside the store (store.path ${storePath}); write the bundle elsewhere`);
  }
  return target;
}

/** A new `.partial`; one a previous run left (a file, or a link planted there) is unlinked first, never followed. */
async function createPartial(path: string): Promise<FileHandle> {
  try {
    return await open(path, CREATE_NEW, 0o644);
  } catch (err) {
    if (!hasCode(err, 'EEXIST')) throw err;
  }
  const left = await lstat(path);
  if (!left.isFile() && !left.isSymbolicLink()) throw new Error(`${path} exists and is not a regular file; remove it first`);
  await unlink(path);
  return open(path, CREATE_NEW, 0o644);
}
