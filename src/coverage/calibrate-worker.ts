/** Worker-thread side of `calibrationScoresInWorkers`: the calibration scores of rows [from, to). */
import { parentPort, workerData } from 'node:worker_threads';
import { CoverageIndex } from './index.js';
import type { CalibrationJob } from './calibrate-thread.js';

if (!parentPort) throw new Error('calibration worker started outside a worker thread');
const job = workerData as CalibrationJob & { from: number; to: number };
try {
  const index = new CoverageIndex(job.centroids, job.k, job.embeddings, job.labels, job.dim, job.params);
  const scores = index.calibrationScores(job.embeddings, job.nearDuplicateCosine, job.from, job.to);
  parentPort.postMessage({ ok: true, scores }, [scores.buffer as ArrayBuffer]);
} catch (err) {
  parentPort.postMessage({ ok: false, message: (err as Error).message });
}
