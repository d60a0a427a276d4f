import { afterEach } from 'vitest';

/**
 * Some unit tests simulate weeks of traffic synchronously (20–35 s each on a 2-core machine).
 * Between tests vitest continues on microtasks only, so several such tests in a row hold the
 * worker's event loop for over a minute, and its reports to the main process time out ("Timeout
 * calling onTaskUpdate", an unhandled error that fails the run although every test passed).
 * One macrotask turn after each test lets the pending replies in.
 */
afterEach(() => new Promise<void>((resolve) => setTimeout(resolve, 5)));
