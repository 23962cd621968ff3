import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, stat, statfs, utimes, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { createLayout, type StoreLayout } from './layout.js';
import { createStoreLocks, type StoreLocks } from './lock.js';
import { createTempArea, parseFillRecord, type FillRecord } from './temp-area.js';

export type { FillRecord } from './temp-area.js';

/** A file in tmp/ being written; it reaches blobs/ only through `commitTemp`. */
export interface TempFile {
  readonly path: string;
  readonly handle: FileHandle;
}

export interface OpenBlob {
  readonly sizeBytes: number;
  /** Owned by the caller: close it, or hand it to a stream that does. */
  readonly handle: FileHandle;
}

export interface StoredManifest {
  readonly mediaType: string;
  readonly body: Buffer;
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

/** Content-addressed storage: every path under blobs/ holds verified bytes. */
export interface BlobStore {
  readonly layout: StoreLayout;
  readonly locks: StoreLocks;
  /** Creates the tree and removes temp files of processes that are gone (never content). */
  init(): Promise<void>;
  /** Removes this process's temp directory and releases its locks. */
  close(): Promise<void>;
  /** Sweeps temp files of dead processes again (the periodic maintenance calls it). */
  sweepTemp(): Promise<number>;
  statBlob(digest: Digest): Promise<number | undefined>;
  /** Bytes an unprivileged process may still write on the store's file system. */
  freeBytes(): Promise<number>;
  /** Size and inode: a follower checks that the committed blob is the spool it read. */
  identifyBlob(digest: Digest): Promise<{ sizeBytes: number; inode: number } | undefined>;
  /** Records use for other processes and restarts (mtime is the recency on disk). */
  touchBlob(digest: Digest, atMs: number): Promise<void>;
  openBlob(digest: Digest): Promise<OpenBlob | undefined>;
  createTempFile(): Promise<TempFile>;
  /** fsync, rename into place (an existing target means success), fsync the directory. */
  commitTemp(temp: TempFile, digest: Digest): Promise<void>;
  discardTemp(temp: TempFile): Promise<void>;
  /** Hashes `body`, and stores it only when it is `digest`. */
  putVerified(digest: Digest, body: Buffer): Promise<void>;
  /**
   * Imports, all or nothing: `stageStream` consumes a stream into a closed, fsync'd temp
   * file and keeps it only when size and digest match; `commitStaged` renames it into
   * place; `discardStaged` drops it.
   */
  stageStream(digest: Digest, body: AsyncIterable<Buffer>, sizeBytes: number): Promise<string>;
  commitStaged(path: string, digest: Digest): Promise<void>;
  discardStaged(path: string): Promise<void>;
  /** The raw bytes of a small stored blob (a manifest, whatever its sidecar says). */
  readBlob(digest: Digest): Promise<Buffer | undefined>;
  readManifest(digest: Digest): Promise<StoredManifest | undefined>;
  findManifestType(digest: Digest): Promise<string | undefined>;
  putManifest(digest: Digest, mediaType: string, body: Buffer): Promise<void>;
  /** Removes content (evicted, or found damaged so the next request refetches it). */
  removeBlob(digest: Digest): Promise<void>;
  /** Small metadata files: temp, fsync, rename; a reader never sees half a file. */
  writeAtomic(path: string, text: string): Promise<void>;
  writeFillRecord(digest: Digest, record: FillRecord): Promise<void>;
  findFillRecord(digest: Digest): Promise<FillRecord | undefined>;
  removeFillRecord(digest: Digest): Promise<void>;
}

export function sha256Digest(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

export function createBlobStore(root: string, locks: StoreLocks = createStoreLocks(root)): BlobStore {
  const layout = createLayout(root);
  const temp = createTempArea(layout, locks);
  const tempPath = (suffix: string): string => join(temp.dir, `${Date.now()}-${randomBytes(8).toString('hex')}${suffix}`);

  async function createTempFile(): Promise<TempFile> {
    const path = tempPath('');
    const handle = await open(path, 'wx+');
    return { path, handle };
  }

  async function commitTemp(temp: TempFile, digest: Digest): Promise<void> {
    await temp.handle.sync();
    await temp.handle.close();
    const target = layout.blobPath(digest);
    await mkdir(dirname(target), { recursive: true });
    await rename(temp.path, target);
    await syncDir(dirname(target));
  }

  async function discardTemp(temp: TempFile): Promise<void> {
    await temp.handle.close().catch(() => undefined);
    await rm(temp.path, { force: true });
  }

  async function writeAtomic(path: string, text: string): Promise<void> {
    const staged = tempPath('.meta');
    try {
      const handle = await open(staged, 'wx');
      try {
        await handle.writeFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await mkdir(dirname(path), { recursive: true });
      await rename(staged, path);
    } catch (err) {
      await rm(staged, { force: true });
      throw err;
    }
  }

  return {
    layout,
    locks,
    async init() {
      await mkdir(layout.blobsDir, { recursive: true });
      await temp.open();
      await temp.sweep();
    },
    close: () => temp.close(),
    sweepTemp: () => temp.sweep(),
    async statBlob(digest) {
      const info = await stat(layout.blobPath(digest)).catch(ifMissing(undefined));
      return info?.size;
    },
    async freeBytes() {
      const fs = await statfs(root);
      return fs.bavail * fs.bsize;
    },
    async identifyBlob(digest) {
      const info = await stat(layout.blobPath(digest)).catch(ifMissing(undefined));
      return info && { sizeBytes: info.size, inode: info.ino };
    },
    async touchBlob(digest, atMs) {
      const at = new Date(atMs);
      await utimes(layout.blobPath(digest), at, at).catch(ifMissing(undefined));
    },
    async openBlob(digest) {
      const handle = await open(layout.blobPath(digest), 'r').catch(ifMissing(undefined));
      if (!handle) return undefined;
      const info = await handle.stat();
      return { sizeBytes: info.size, handle };
    },
    createTempFile,
    commitTemp,
    discardTemp,
    async putVerified(digest, body) {
      const actual = sha256Digest(body);
      if (actual !== digest) throw new DigestMismatchError(digest, actual);
      const temp = await createTempFile();
      try {
        await temp.handle.writeFile(body);
        await commitTemp(temp, digest);
      } catch (err) {
        await discardTemp(temp);
        throw err;
      }
    },
    async stageStream(digest, body, sizeBytes) {
      const temp = await createTempFile();
      try {
        const hash = createHash('sha256');
        let written = 0;
        for await (const chunk of body) {
          hash.update(chunk);
          await temp.handle.write(chunk);
          written += chunk.length;
        }
        const actual = `sha256:${hash.digest('hex')}`;
        if (written !== sizeBytes || actual !== digest) throw new DigestMismatchError(digest, actual);
        await temp.handle.sync();
        await temp.handle.close();
        return temp.path;
      } catch (err) {
        await discardTemp(temp);
        throw err;
      }
    },
    async commitStaged(path, digest) {
      const target = layout.blobPath(digest);
      await mkdir(dirname(target), { recursive: true });
      await rename(path, target);
      await syncDir(dirname(target));
    },
    async discardStaged(path) {
      await rm(path, { force: true });
    },
    readBlob: (digest) => readFile(layout.blobPath(digest)).catch(ifMissing(undefined)),
    async readManifest(digest) {
      const mediaType = await findType(layout, digest);
      if (mediaType === undefined) return undefined;
      const body = await readFile(layout.blobPath(digest)).catch(ifMissing(undefined));
      return body && { mediaType, body };
    },
    findManifestType: (digest) => findType(layout, digest),
    async putManifest(digest, mediaType, body) {
      if ((await statSize(layout.blobPath(digest))) !== body.length) await this.putVerified(digest, body);
      await writeAtomic(layout.manifestMetaPath(digest), JSON.stringify({ mediaType }));
    },
    async removeBlob(digest) {
      // The sidecar first: a manifest without its media type is refetched, never served.
      await rm(layout.manifestMetaPath(digest), { force: true });
      await rm(layout.blobPath(digest), { force: true });
    },
    writeAtomic,
    writeFillRecord: (digest, record) => writeAtomic(layout.fillMetaPath(digest), JSON.stringify(record)),
    async findFillRecord(digest) {
      const text = await readFile(layout.fillMetaPath(digest), 'utf8').catch(ifMissing(undefined));
      return text === undefined ? undefined : parseFillRecord(text);
    },
    async removeFillRecord(digest) {
      await rm(layout.fillMetaPath(digest), { force: true });
    },
  };
}

async function findType(layout: StoreLayout, digest: Digest): Promise<string | undefined> {
  const text = await readFile(layout.manifestMetaPath(digest), 'utf8').catch(ifMissing(undefined));
  if (text === undefined) return undefined;
  try {
    const meta = JSON.parse(text) as { mediaType?: unknown };
    return typeof meta.mediaType === 'string' ? meta.mediaType : undefined;
  } catch {
    return undefined;
  }
}

async function statSize(path: string): Promise<number | undefined> {
  return (await stat(path).catch(ifMissing(undefined)))?.size;
}

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** For `.catch`: a missing file is an answer (`fallback`), anything else is an error. */
export function ifMissing<T>(fallback: T): (err: unknown) => T {
  return (err) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fallback;
    throw err;
  };
}

export async function listDir(path: string): Promise<string[]> {
  return readdir(path).catch(ifMissing([]));
}

