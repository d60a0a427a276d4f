/** Where a worker thread's script is: next to the caller when running the build, else in dist/. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parentPort, Worker, workerData } from 'node:worker_threads';
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

/** What a job worker (`answerJob`) posts back: its result's fields, or why it failed. */
export type JobReply<R> = ({ ok: true } & R) | { ok: false; message: string };

/**
 * Run one job in a new worker thread (`script` as for workerScript) and resolve with its result.
 * The worker is pushed to `started` so that the caller can stop it; `what` names the job in errors
 * ("<what> failed: …", "<what> worker exited (code) without a result"). `transfer`: buffers of
 * workerData to move rather than copy (unusable by the caller afterwards).
 */
export function runJob<R>(callerUrl: string, script: string, workerData: unknown, started: Worker[], what: string, transfer: ArrayBuffer[] = []): Promise<R> {
  const worker = new Worker(workerScript(callerUrl, script), { workerData, transferList: transfer });
  started.push(worker);
  return new Promise<R>((resolve, reject) => {
    let settled = false;
    worker.once('message', (m: JobReply<R>) => {
      settled = true;
      if (m.ok) resolve(m);
      else reject(new Error(`${what} failed: ${m.message}`));
    });
    worker.once('error', (e) => {
      settled = true;
      reject(e);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`${what} worker exited (${code}) without a result`));
    });
  });
}

/**
 * The worker side of runJob: computes `fn(workerData)` and posts it (ok), or the error's message.
 * `transfer`: the result's buffers to move rather than copy.
 */
export function answerJob<J, R extends object>(fn: (job: J) => R, transfer: (r: R) => ArrayBuffer[] = () => []): void {
  if (!parentPort) throw new Error('a job worker was started outside a worker thread');
  try {
    const r = fn(workerData as J);
    parentPort.postMessage({ ok: true, ...r }, transfer(r));
  } catch (err) {
    parentPort.postMessage({ ok: false, message: (err as Error).message });
  }
}
