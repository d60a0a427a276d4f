import { defineConfig } from 'vitest/config';

// The fault suite: started by scripts/faults.sh, which provides a broker of its own.
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/faults/**/*.fault.ts'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 180_000,
  },
});
