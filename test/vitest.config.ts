import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    // one file at a time, each in its own process: the embedded ClickHouse binds one data folder
    // per process, and the model and broker tests would otherwise fight over 2 cores
    pool: 'forks',
    poolOptions: { forks: { singleFork: false, maxForks: 1, minForks: 1 } },
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});
