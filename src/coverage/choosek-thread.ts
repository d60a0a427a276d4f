/**
 * `chooseKOnSample` in a worker thread. The fit embeds its chooseK sample first and then picks k on
 * the second core while the first embeds the remaining cases (inference does not speed up with a
 * second core on these machines; the JavaScript of chooseK does).
 */
import { Worker } from 'node:worker_threads';
import { workerScript } from '../config/workers.js';
import type { KChoice } from './cluster.js';
import type { ChooseKJob } from './choosek-worker.js';

export interface ChooseKRun {
  /** the choice and the worker's own compute time */
  result: Promise<{ choice: KChoice; ms: number }>;
  /** stop the worker (when the fit fails meanwhile); result then rejects */
  cancel(): void;
}

export function chooseKInWorker(job: ChooseKJob): ChooseKRun {
  const worker = new Worker(workerScript(import.meta.url, 'coverage/choosek-worker.js'), { workerData: job });
  const result = new Promise<{ choice: KChoice; ms: number }>((resolve, reject) => {
    let settled = false;
    worker.once('message', (m: { ok: true; choice: KChoice; ms: number } | { ok: false; message: string }) => {
      settled = true;
      if (m.ok) resolve({ choice: m.choice, ms: m.ms });
      else reject(new Error(`choosing k failed: ${m.message}`));
    });
    worker.once('error', (e) => {
      settled = true;
      reject(e);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`chooseK worker exited (${code}) without a result`));
    });
  });
  result.catch(() => {}); // the caller awaits it later; an early failure must not go unhandled meanwhile
  return { result, cancel: () => void worker.terminate() };
}
