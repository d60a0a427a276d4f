/**
 * Long synchronous simulations inside a test (days of windows, hundreds of simulated worlds) hold
 * the worker's event loop. Vitest's worker waits at most 60 s for the main process to acknowledge
 * each report it sends (a fixed timeout in vitest 3); when a report goes out just before such a
 * stretch, the acknowledgement sits unread behind it, the timeout fires first, and the run fails
 * with "Timeout calling onTaskUpdate" although every test passed. The slower or busier the machine,
 * the likelier. Such a loop calls `await breathe()` on each step (src/config/breathe.ts).
 */
export { breather } from '../../src/config/breathe.js';
