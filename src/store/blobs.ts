/**
 * Content-addressed blobs: every path under blobs/ holds verified bytes. Content arrives
 * only by rename from a temp file whose sha256 and size were checked (an existing target
 * means success: same digest, same bytes), and the directory is fsync'd after.
 */
import { mkdir, open, readFile, rename, rm, stat, statfs, utimes, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createDigester, digestOf, type Digest } from '../oci/digest.js';
import { ifMissing } from './fs-errors.js';
import type { StoreLayout } from './layout.js';
import type { TempArea, TempFile } from './temp-area.js';

export type { TempFile } from './temp-area.js';

export interface OpenBlob {
  readonly sizeBytes: number;
  /** Owned by the caller: close it, or hand it to a stream that does. */
  readonly handle: FileHandle;
}

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: Digest,
    readonly actual: string,
  ) {
    super(`content digest ${actual} does not match ${expected}`);
    this.name = 'DigestMismatchError';
  }
}

export interface Blobs {
  stat(digest: Digest): Promise<number | undefined>;
  /** Size and inode: a follower checks that the committed blob is the spool it read. */
  identify(digest: Digest): Promise<{ sizeBytes: number; inode: number } | undefined>;
  /** Records use for other processes and restarts (mtime is the recency on disk). */
  touch(digest: Digest, atMs: number): Promise<void>;
  open(digest: Digest): Promise<OpenBlob | undefined>;
  /** The raw bytes of a small stored blob (a manifest, whatever its sidecar says). */
  read(digest: Digest): Promise<Buffer | undefined>;
  createTemp(): Promise<TempFile>;
  /** fsync, rename into place (an existing target means success), fsync the directory. */
  commitTemp(temp: TempFile, digest: Digest): Promise<void>;
  discardTemp(temp: TempFile): Promise<void>;
  /** Hashes `body`, and stores it only when it is `digest`. */
  putVerified(digest: Digest, body: Buffer): Promise<void>;
  /**
   * Imports, all or nothing: `stage` consumes a stream into a closed, fsync'd temp file
   * and keeps it only when size and digest match; `commitStaged` renames it into place;
   * `discardStaged` drops it.
   */
  stage(digest: Digest, body: AsyncIterable<Buffer>, sizeBytes: number): Promise<string>;
  commitStaged(path: string, digest: Digest): Promise<void>;
  discardStaged(path: string): Promise<void>;
  /** Removes content (evicted, or found damaged so the next request refetches it). */
  remove(digest: Digest): Promise<void>;
  /** Bytes an unprivileged process may still write on the store's file system. */
  freeBytes(): Promise<number>;
}

export function createBlobs(layout: StoreLayout, temp: TempArea): Blobs {
  async function moveIntoPlace(path: string, digest: Digest): Promise<void> {
    const target = layout.blobPath(digest);
    await mkdir(dirname(target), { recursive: true });
    await rename(path, target);
    await syncDir(dirname(target));
  }

  async function commitTemp(file: TempFile, digest: Digest): Promise<void> {
    await file.handle.sync();
    await file.handle.close();
    await moveIntoPlace(file.path, digest);
  }

  async function discardTemp(file: TempFile): Promise<void> {
    // The file goes next either way: a failing close (the handle already broken) changes nothing.
    await file.handle.close().catch(() => undefined);
    await rm(file.path, { force: true });
  }

  /** Writes `body` to a temp file and commits it, or discards the temp file and rethrows. */
  async function commitVia(write: (file: TempFile) => Promise<void>, digest: Digest): Promise<void> {
    const file = await temp.createFile();
    try {
      await write(file);
      await commitTemp(file, digest);
    } catch (err) {
      await discardTemp(file);
      throw err;
    }
  }

  return {
    async stat(digest) {
      return (await stat(layout.blobPath(digest)).catch(ifMissing(undefined)))?.size;
    },
    async identify(digest) {
      const info = await stat(layout.blobPath(digest)).catch(ifMissing(undefined));
      return info && { sizeBytes: info.size, inode: info.ino };
    },
    async touch(digest, atMs) {
      const at = new Date(atMs);
      await utimes(layout.blobPath(digest), at, at).catch(ifMissing(undefined));
    },
    async open(digest) {
      const handle = await open(layout.blobPath(digest), 'r').catch(ifMissing(undefined));
      if (!handle) return undefined;
      const info = await handle.stat();
      return { sizeBytes: info.size, handle };
    },
    read: (digest) => readFile(layout.blobPath(digest)).catch(ifMissing(undefined)),
    createTemp: () => temp.createFile(),
    commitTemp,
    discardTemp,
    async putVerified(digest, body) {
      const actual = digestOf(body);
      if (actual !== digest) throw new DigestMismatchError(digest, actual);
      await commitVia((file) => file.handle.writeFile(body), digest);
    },
    async stage(digest, body, sizeBytes) {
      const file = await temp.createFile();
      try {
        const hash = createDigester();
        let written = 0;
        for await (const chunk of body) {
          hash.update(chunk);
          await file.handle.write(chunk);
          written += chunk.length;
        }
        const actual = hash.digest();
        if (written !== sizeBytes || actual !== digest) throw new DigestMismatchError(digest, actual);
        await file.handle.sync();
        await file.handle.close();
        return file.path;
      } catch (err) {
        await discardTemp(file);
        throw err;
      }
    },
    commitStaged: moveIntoPlace,
    async discardStaged(path) {
      await rm(path, { force: true });
    },
    async remove(digest) {
      // The manifest sidecar first: a manifest without its media type is refetched, never served.
      await rm(layout.manifestMetaPath(digest), { force: true });
      await rm(layout.blobPath(digest), { force: true });
    },
    async freeBytes() {
      const fs = await statfs(layout.root);
      return fs.bavail * fs.bsize;
    },
  };
}

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
