/** Where a worker thread's script is: next to the caller when running the build, else in dist/. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PACKAGE_ROOT } from './index.js';

/**
 * `callerUrl` is the calling module's import.meta.url; `script` the worker's path under src/ or
 * dist/ with a .js ending (e.g. 'embed/worker.js'). Worker threads cannot load TypeScript, so when
 * the caller runs from sources (tests, vite-node) the compiled worker in dist/ is used.
 */
export function workerScript(callerUrl: string, script: string): string {
  const here = fileURLToPath(callerUrl);
  if (here.endsWith('.js')) return path.resolve(path.dirname(here), '..', script);
  const built = path.join(PACKAGE_ROOT, 'dist', script);
  if (!fs.existsSync(built)) throw new Error(`worker ${script} not built (${built}); run npm run build`);
  return built;
}
