import { defineConfig } from 'vitest/config';

// Three projects: unit tests are fast and touch no network; integration tests run a
// real Distribution registry on loopback; e2e tests drive real clients (skopeo, …).
export default defineConfig({
  test: {
    reporters: ['default', ['json', { outputFile: '.test-results/results.json' }]],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
