/**
 * vitest globalSetup: every temporary folder of a test run (the tests' data folders, embedded
 * ClickHouse files, fitted models, the CLI's children, whatever calls os.tmpdir()) goes under one
 * folder of this run, removed when the run ends, so that `npm test` leaves nothing behind in the
 * system's temporary directory. EVALGAP_KEEP_TEST_TMP=1 keeps it (its path is printed) to look at a
 * failure's files.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-run-'));
  // the forked test workers and every child process they start inherit it
  process.env.TMPDIR = root;
  return () => {
    if (process.env.EVALGAP_KEEP_TEST_TMP === '1') {
      console.log(`test files kept in ${root}`);
      return;
    }
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  };
}
