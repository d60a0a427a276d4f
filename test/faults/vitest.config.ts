import { defineConfig } from 'vitest/config';

// The fault suite: started by scripts/faults.sh, which provides a broker of its own. Timeouts only
// bound a broken run, scaled like the other tests' caps (EVALGAP_TEST_TIME_FACTOR, default 4).
const factor = Math.max(1, Number(process.env.EVALGAP_TEST_TIME_FACTOR) || 4);
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/faults/**/*.fault.ts'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    fileParallelism: false,
    // every temporary folder under one of this run's, removed at the end (test/helpers/tmp-root.ts)
    globalSetup: ['test/helpers/tmp-root.ts'],
    testTimeout: 600_000 * factor,
    hookTimeout: 180_000 * factor,
  },
});
