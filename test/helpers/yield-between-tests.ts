import { afterEach, beforeEach, expect } from 'vitest';

/**
 * Some unit tests simulate weeks of traffic (20–45 s each on a 2-core machine). Vitest's worker
 * waits at most 60 s for the main process to acknowledge each report it sends; a report whose
 * acknowledgement sits unread behind a long synchronous stretch times out ("Timeout calling
 * onTaskUpdate", an unhandled error that fails the run although every test passed). Long loops
 * therefore hand the event loop a turn as they go (test/helpers/breathe.ts, backtestAsync), and:
 * - one macrotask turn after each test lets the pending replies in before the next one starts;
 * - the longest stretch a test held the loop without a turn is measured, and one over 15 s is
 *   named on stderr, so that a new long synchronous loop is seen before a slower machine fails on
 *   it (a report only: how long a stretch takes depends on the machine; EVALGAP_TEST_HELD_WARN_MS
 *   sets the 15 s).
 */
const HELD_WARN_MS = Number(process.env.EVALGAP_TEST_HELD_WARN_MS) || 15_000;
// a tick every 100 ms: the longest gap between two ticks is the longest stretch without a turn
const TICK_MS = 100;
let lastTick = performance.now();
let longest = 0;
setInterval(() => {
  const now = performance.now();
  longest = Math.max(longest, now - lastTick - TICK_MS);
  lastTick = now;
}, TICK_MS).unref();

beforeEach(() => {
  longest = 0;
  lastTick = performance.now();
});

afterEach(async () => {
  // (the stretch that ends with the test, before the next tick, counts too)
  const heldMs = Math.max(longest, performance.now() - lastTick - TICK_MS);
  await new Promise<void>((resolve) => setTimeout(resolve, 5));
  if (heldMs > HELD_WARN_MS) {
    const name = expect.getState().currentTestName ?? '(unknown test)';
    console.warn(`[event loop] "${name}" held the worker's event loop for ${(heldMs / 1000).toFixed(1)} s without a turn (unless on purpose, a long loop there should await breathe(): test/helpers/breathe.ts)`);
  }
});
