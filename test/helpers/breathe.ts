/**
 * Long synchronous simulations inside a test (days of windows, hundreds of simulated worlds) hold
 * the worker's event loop. Vitest's worker waits at most 60 s for the main process to acknowledge
 * each report it sends (a fixed timeout in vitest 3); when a report goes out just before such a
 * stretch, the acknowledgement sits unread behind it, the timeout fires first, and the run fails
 * with "Timeout calling onTaskUpdate" although every test passed. The slower or busier the machine,
 * the likelier. A loop that calls `await breathe()` on each step hands the loop a turn whenever
 * `everyMs` of work has passed since the last one (a macrotask: the poll phase reads the replies).
 * Nothing the test computes depends on when it yields.
 */
export function breather(everyMs = 250): () => Promise<void> | undefined {
  let last = performance.now();
  return () => {
    if (performance.now() - last < everyMs) return undefined;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        last = performance.now();
        resolve();
      }),
    );
  };
}
