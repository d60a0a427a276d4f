import { defineConfig } from 'vitest/config';

/**
 * Tests wait for conditions; these timeouts only bound a broken run. They are written for a 2-core
 * machine and scaled like every cap in the tests (test/helpers/fixtures.ts TIME_FACTOR), so that a
 * machine several times slower passes: EVALGAP_TEST_TIME_FACTOR, default 4.
 */
const factor = Math.max(1, Number(process.env.EVALGAP_TEST_TIME_FACTOR) || 4);

export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    // one file at a time, each in its own process: the embedded ClickHouse binds one data folder
    // per process, and the model and broker tests would otherwise fight over 2 cores
    pool: 'forks',
    poolOptions: { forks: { singleFork: false, maxForks: 1, minForks: 1 } },
    fileParallelism: false,
    // one event-loop turn between tests (long synchronous simulations; see the file)
    setupFiles: ['test/helpers/yield-between-tests.ts'],
    // every temporary folder under one of this run's, removed at the end (test/helpers/tmp-root.ts)
    globalSetup: ['test/helpers/tmp-root.ts'],
    testTimeout: 120_000 * factor,
    hookTimeout: 180_000 * factor,
  },
});
