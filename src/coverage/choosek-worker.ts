/** Worker-thread side of `chooseKInWorker`: runs the pure `chooseKOnSample` and posts the choice. */
import { parentPort, workerData } from 'node:worker_threads';
import { chooseKOnSample } from './cluster.js';

export interface ChooseKJob {
  sx: Float32Array;
  sn: number;
  dim: number;
  seed: number;
  maxK: number;
}

if (!parentPort) throw new Error('chooseK worker started outside a worker thread');
const job = workerData as ChooseKJob;
try {
  const t = performance.now();
  const choice = chooseKOnSample(job.sx, job.sn, job.dim, job.seed, job.maxK);
  parentPort.postMessage({ ok: true, choice, ms: performance.now() - t });
} catch (err) {
  parentPort.postMessage({ ok: false, message: (err as Error).message });
}
