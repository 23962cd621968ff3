import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DigestMismatchError } from '../../src/store/blobs.js';
import { createStore } from '../../src/store/store.js';
import { Fill, FillError } from '../../src/mirror/fill.js';
import { RemoteFill } from '../../src/mirror/remote-fill.js';
import { tempFiles } from '../support/store.js';
import { blobDigest, collect, storeForEachTest } from '../support/fill.js';

const noop = (): void => undefined;

/** Lets the fill's write/read promises run (file I/O completes on the thread pool). */
async function settle(times = 20): Promise<void> {
  for (let i = 0; i < times; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe('fill state machine', () => {
  const temp = storeForEachTest('oci-mirror-fill-');

  async function begin(body: Buffer, sizeBytes: number | undefined = body.length) {
    const upstream = new PassThrough();
    const fill = await Fill.begin({ digest: blobDigest(body), sizeBytes, store: temp.store }, upstream);
    return { upstream, fill };
  }

  it('commits verified bytes, and every reader — early, late, ranged — gets exactly its bytes', async () => {
    const body = randomBytes(3 << 20);
    const { upstream, fill } = await begin(body);
    const early = collect(fill.openReader(undefined, 'upstream', noop));
    upstream.write(body.subarray(0, 1 << 20));
    await settle();
    const late = collect(fill.openReader(undefined, 'cache', noop));
    const ranged = collect(fill.openReader({ start: 1000, end: body.length - 1 }, 'cache', noop));
    upstream.end(body.subarray(1 << 20));
    await fill.done;
    expect(fill.state).toBe('committed');
    expect((await early.done).equals(body)).toBe(true);
    expect((await late.done).equals(body)).toBe(true);
    expect((await ranged.done).equals(body.subarray(1000))).toBe(true);
    expect(await temp.store.blobs.stat(fill.digest)).toBe(body.length);
    fill.release();
  });

  it('holds back the last byte until the digest is verified', async () => {
    const body = randomBytes(200_000);
    const { upstream, fill } = await begin(body);
    const stream = fill.openReader(undefined, 'upstream', noop);
    const reader = collect(stream);
    const nearlyAll = new Promise<void>((resolve) => {
      stream.on('data', () => {
        if (reader.received() >= body.length - 1) resolve();
      });
    });
    upstream.write(body);
    await nearlyAll;
    await settle();
    expect(fill.writtenBytes).toBe(body.length);
    expect(fill.state).toBe('fetching');
    expect(reader.received()).toBe(body.length - 1);
    upstream.end();
    expect((await reader.done).length).toBe(body.length);
    fill.release();
  });

  it('destroys every reader and stores nothing when the bytes do not match the digest', async () => {
    const body = randomBytes(100_000);
    const wrong = Buffer.from(body);
    wrong.writeUInt8(wrong.readUInt8(5) ^ 1, 5);
    const upstream = new PassThrough();
    const fill = await Fill.begin({ digest: blobDigest(body), sizeBytes: body.length, store: temp.store }, upstream);
    const readers = [
      collect(fill.openReader(undefined, 'upstream', noop)),
      collect(fill.openReader({ start: 10, end: 99 }, 'cache', noop)),
    ];
    upstream.end(wrong);
    await expect(fill.done).rejects.toMatchObject({ reason: 'digest' });
    for (const reader of readers) await expect(reader.done).rejects.toThrow(/upstream transfer failed/);
    expect(await temp.store.blobs.stat(fill.digest)).toBeUndefined();
    fill.release();
  });

  it('fails with reason size when the body is shorter or longer than its Content-Length', async () => {
    const body = randomBytes(50_000);
    const short = await begin(body);
    const shortReader = collect(short.fill.openReader(undefined, 'upstream', noop));
    short.upstream.end(body.subarray(0, 40_000));
    await expect(short.fill.done).rejects.toBeInstanceOf(FillError);
    await expect(short.fill.done).rejects.toMatchObject({ reason: 'size' });
    await expect(shortReader.done).rejects.toThrow();
    short.fill.release();

    const long = await begin(body, body.length - 1);
    long.upstream.end(body);
    await expect(long.fill.done).rejects.toMatchObject({ reason: 'size' });
    long.fill.release();
  });

  it('fails with reason upstream when the upstream body errors mid-way', async () => {
    const body = randomBytes(50_000);
    const { upstream, fill } = await begin(body);
    const reader = collect(fill.openReader(undefined, 'upstream', noop));
    upstream.write(body.subarray(0, 10_000));
    upstream.destroy(new Error('connection reset'));
    await expect(fill.done).rejects.toMatchObject({ reason: 'upstream' });
    await expect(reader.done).rejects.toThrow();
    fill.release();
  });

  it('commits while a reader is paused, and the paused reader then drains to the end', async () => {
    const body = randomBytes(4 << 20);
    const { upstream, fill } = await begin(body);
    const paused = fill.openReader(undefined, 'upstream', noop);
    upstream.end(body);
    await fill.done;
    expect(fill.state).toBe('committed');
    const chunks: Buffer[] = [];
    for await (const chunk of paused) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
    fill.release();
  });

  it('keeps filling when one reader is destroyed, and the others finish', async () => {
    const body = randomBytes(1 << 20);
    const { upstream, fill } = await begin(body);
    const leaving = fill.openReader(undefined, 'upstream', noop);
    leaving.on('error', noop);
    const staying = collect(fill.openReader(undefined, 'cache', noop));
    upstream.write(body.subarray(0, 100_000));
    await settle();
    leaving.destroy();
    upstream.end(body.subarray(100_000));
    await fill.done;
    expect((await staying.done).equals(body)).toBe(true);
    expect(fill.readerCount).toBe(0);
    fill.release();
  });

  it('counts bytes delivered to each reader', async () => {
    const body = randomBytes(300_000);
    const { upstream, fill } = await begin(body);
    let counted = 0;
    const reader = collect(fill.openReader({ start: 100, end: 199 }, 'cache', (n) => (counted += n)));
    upstream.end(body);
    expect((await reader.done).equals(body.subarray(100, 200))).toBe(true);
    expect(counted).toBe(100);
    fill.release();
  });

  it('lets another process follow the spool: its reader ends with every byte once the blob is committed', async () => {
    const body = randomBytes(2 << 20);
    const { upstream, fill } = await begin(body);
    const spool = fill.spoolPath;
    expect(spool).toBeDefined();
    const alive = async (): Promise<boolean> => true;
    const options = { digest: fill.digest, sizeBytes: body.length, store: temp.store, stallMs: 60_000, writerAlive: alive };
    const remote = await RemoteFill.follow(options, spool as string);
    if (!remote) throw new Error('the spool could not be followed');
    expect(remote.remote).toBe(true);
    const reader = collect(remote.openReader(undefined, 'cache', noop));
    upstream.write(body.subarray(0, 1 << 20));
    await settle();
    expect(remote.complete).toBe(false);
    upstream.end(body.subarray(1 << 20));
    await fill.done;
    await expect(remote.done).resolves.toBe('committed');
    expect((await reader.done).equals(body)).toBe(true);
    expect(remote.writtenBytes).toBe(body.length);
    remote.release();
    fill.release();
  });

  it('fails a followed fill, and destroys its readers, when the writing process is gone before the end', async () => {
    const body = randomBytes(100_000);
    const spool = await temp.store.blobs.createTemp();
    await spool.handle.write(body.subarray(0, 50_000), 0, 50_000, 0);
    // The clock leaps a second per look, so the writer's liveness is asked at once.
    let clock = 0;
    const now = (): number => (clock += 1_000);
    const gone = async (): Promise<boolean> => false;
    const options = { digest: blobDigest(body), sizeBytes: body.length, store: temp.store, stallMs: 60_000, now, writerAlive: gone };
    const remote = await RemoteFill.follow(options, spool.path);
    if (!remote) throw new Error('the spool could not be followed');
    const reader = collect(remote.openReader(undefined, 'cache', noop));
    await expect(remote.done).rejects.toThrow(/stopped before it was complete/);
    await expect(reader.done).rejects.toThrow(/upstream transfer failed/);
    expect(reader.received()).toBeLessThan(50_000);
    expect(remote.startedAtMs).toBe(1_000);
    remote.release();
    await temp.store.blobs.discardTemp(spool);
  });

  it('takes its times from the clock it is given', async () => {
    const body = randomBytes(1000);
    const upstream = new PassThrough();
    const fill = await Fill.begin({ digest: blobDigest(body), sizeBytes: body.length, store: temp.store, now: () => 42_000 }, upstream);
    expect(fill.startedAtMs).toBe(42_000);
    upstream.end(body);
    await fill.done;
    fill.release();
  });
});

describe('blob store', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-store-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses content whose digest does not match and leaves no file behind', async () => {
    const store = createStore(dir);
    await store.init();
    const body = Buffer.from('hello');
    const other = blobDigest(Buffer.from('world'));
    await expect(store.blobs.putVerified(other, body)).rejects.toBeInstanceOf(DigestMismatchError);
    expect(await store.blobs.stat(other)).toBeUndefined();
    expect(await tempFiles(dir)).toEqual([]);
  });

  it('removes temp files of dead processes at start-up, keeps a live one and committed content', async () => {
    const store = createStore(dir);
    await store.init();
    const body = Buffer.from('kept');
    await store.blobs.putVerified(blobDigest(body), body);
    const live = await store.blobs.createTemp();
    await live.handle.write('in progress');
    // What kill -9 leaves: the temp dir of a process that no longer exists on this host.
    const dead = join(dir, 'tmp', `p${2 ** 22 + 17}-0badc0de@${hostname()}`);
    await mkdir(dead, { recursive: true });
    await writeFile(join(dead, 'partial'), 'partial');
    const again = createStore(dir);
    await again.init();
    expect(await tempFiles(dir)).toEqual([relative(join(dir, 'tmp'), live.path)]);
    expect(await again.blobs.stat(blobDigest(body))).toBe(body.length);
    await store.blobs.discardTemp(live);
    await Promise.all([store.close(), again.close()]);
    expect(await readdir(join(dir, 'tmp'))).toEqual(['fills']);
  });

  it('keeps manifests with their media type across instances', async () => {
    const store = createStore(dir);
    await store.init();
    const body = Buffer.from('{"schemaVersion":2}');
    await store.manifests.put(blobDigest(body), 'application/vnd.oci.image.manifest.v1+json', body);
    const again = createStore(dir);
    const read = await again.manifests.read(blobDigest(body));
    expect(read?.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(read?.body.equals(body)).toBe(true);
  });
});
