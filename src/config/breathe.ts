/**
 * A long synchronous loop in a process that must keep answering messages (a test runner's worker,
 * a server) hands the event loop a turn as it goes: `await breathe()` on each step yields one
 * macrotask (setImmediate: I/O replies are read first) whenever `everyMs` of work has passed since
 * the last turn, and costs nothing otherwise. Nothing the loop computes depends on when it yields.
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
