/** Worker-thread side of `bestRestartInWorkers`: the best of its share of k-means' restarts (pure `bestRestart`). */
import { parentPort, workerData } from 'node:worker_threads';
import { bestRestart, type KMeansOptions, type RestartSample } from './cluster.js';

export interface RestartJob {
  sample: RestartSample;
  dim: number;
  k: number;
  opts: KMeansOptions;
  /** the restart numbers this worker runs */
  which: number[];
}

if (!parentPort) throw new Error('k-means worker started outside a worker thread');
const job = workerData as RestartJob;
try {
  const best = bestRestart(job.sample, job.dim, job.k, job.opts, job.which);
  parentPort.postMessage({ ok: true, ...best });
} catch (err) {
  parentPort.postMessage({ ok: false, message: (err as Error).message });
}
