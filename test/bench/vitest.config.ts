import { defineConfig } from 'vitest/config';

// `npm run bench` (and `bench:slow-readers`, BENCH_SUITE=slow-readers) only: one long run
// in one process, never part of `npm test` (the root config's projects do not include
// test/bench/). The bench prints its own table.
export default defineConfig({
  test: {
    include: [process.env['BENCH_SUITE'] === 'slow-readers' ? 'test/bench/slow-readers.ts' : 'test/bench/run.ts'],
    testTimeout: 15 * 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    reporters: ['default'],
  },
});
