import type { Config } from '../config/types.js';
import { pinnedDigests } from '../mirror/pins.js';
import { createStore, type Store } from '../store/store.js';
import { createCacheIndex, type CacheIndex } from '../store/cache-index.js';
import { createRecords, type Records } from '../store/records.js';
import { storeFailure } from './startup-errors.js';

/** The store as the CLI commands see it: the same index, pins and locks as `serve`. */
export interface StoreAccess {
  readonly store: Store;
  readonly records: Records;
  readonly index: CacheIndex;
  readonly loadedFrom: 'snapshot' | 'scan';
  close(): Promise<void>;
}

export async function openStore(config: Config): Promise<StoreAccess> {
  const store = createStore(config.store.path);
  await store.init().catch(async (err: unknown) => {
    throw await storeFailure(err, config.store.path);
  });
  const records = createRecords(store);
  const index = createCacheIndex({
    store,
    maxSizeBytes: config.store.maxSizeBytes,
    idleTtlMs: config.store.idleTtlMs,
    protectedDigests: () => pinnedDigests({ config, records, store }),
  });
  const loadedFrom = await index.load();
  return { store, records, index, loadedFrom, close: () => store.close() };
}
