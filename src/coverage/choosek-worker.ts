/** Worker-thread side of `chooseKInWorker`: the silhouettes of its part of the k grid (pure `silhouettesOnSample`). */
import { parentPort, workerData } from 'node:worker_threads';
import { silhouettesOnSample } from './cluster.js';

export interface ChooseKJob {
  sx: Float32Array;
  sn: number;
  dim: number;
  seed: number;
  /** the k values this worker scores */
  ks: number[];
}

if (!parentPort) throw new Error('chooseK worker started outside a worker thread');
const job = workerData as ChooseKJob;
try {
  const t = performance.now();
  const scores = silhouettesOnSample(job.sx, job.sn, job.dim, job.seed, job.ks);
  parentPort.postMessage({ ok: true, scores, ms: performance.now() - t });
} catch (err) {
  parentPort.postMessage({ ok: false, message: (err as Error).message });
}
