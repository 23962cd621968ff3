/**
 * The store, composed: its layout and locks, this process's temp area, and the three kinds
 * of things it keeps — blobs (verified content), manifest metadata (media types) and fill
 * records (fills in progress, for other processes). Each part is small and has one file.
 * Opening claims the directory first (store-marker.ts): nothing is created or swept in a
 * directory that is not a store.
 */
import { mkdir } from 'node:fs/promises';
import { createBlobs, type Blobs } from './blobs.js';
import { createFillRecords, type FillRecords } from './fill-records.js';
import { createLayout, type StoreLayout } from './layout.js';
import { createStoreLocks, type Owner, type StoreLocks } from './lock.js';
import { createManifestMeta, type ManifestMeta } from './manifest-meta.js';
import { claimStore, currentCreator } from './store-marker.js';
import { createTempArea, type TempArea } from './temp-area.js';

export interface Store {
  readonly layout: StoreLayout;
  readonly locks: StoreLocks;
  readonly temp: TempArea;
  readonly blobs: Blobs;
  readonly manifests: ManifestMeta;
  readonly fills: FillRecords;
  /** This open store's identity, recorded in its fill records (alive while its process lock is held). */
  readonly owner: Owner;
  /**
   * Claims the directory (refusing one that is not a store), creates the tree and removes
   * temp files of processes that are gone (never content).
   */
  init(): Promise<void>;
  /** Removes this process's temp directory and releases its locks. */
  close(): Promise<void>;
  /** Sweeps temp files and fill records of dead processes again (periodic maintenance). */
  sweepTemp(): Promise<number>;
}

export function createStore(root: string, locks: StoreLocks = createStoreLocks(root)): Store {
  const layout = createLayout(root);
  const temp = createTempArea(layout, locks);
  const blobs = createBlobs(layout, temp);
  const fills = createFillRecords(layout, locks, temp);
  const sweepTemp = async (): Promise<number> => (await temp.sweep()) + (await fills.sweep());
  return {
    layout,
    locks,
    temp,
    blobs,
    manifests: createManifestMeta(layout, blobs, temp),
    fills,
    owner: temp.owner,
    async init() {
      await claimStore(layout, await currentCreator());
      await mkdir(layout.blobsDir, { recursive: true });
      await temp.open();
      await sweepTemp();
    },
    close: () => temp.close(),
    sweepTemp,
  };
}
