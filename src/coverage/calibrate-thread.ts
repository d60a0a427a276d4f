/**
 * The fit's calibration scores (CoverageIndex.calibrationScores: every eval case scored against
 * the others) computed in worker threads, a contiguous share of the cases each: the same numbers
 * as in one thread (each case's score depends only on the index), in a fraction of the time.
 */
import type { Worker } from 'node:worker_threads';
import { runJob } from '../config/workers.js';
import type { IndexParams } from './index.js';

export interface CalibrationJob {
  centroids: Float32Array;
  k: number;
  embeddings: Float32Array;
  labels: Int32Array;
  dim: number;
  params: IndexParams;
  nearDuplicateCosine: number;
}

export async function calibrationScoresInWorkers(job: CalibrationJob, threads: number): Promise<Float32Array> {
  const n = job.labels.length;
  const parts = Math.max(1, Math.min(threads, Math.ceil(n / 500)));
  const bounds = Array.from({ length: parts + 1 }, (_, i) => Math.round((i * n) / parts));
  const workers: Worker[] = [];
  try {
    const results = await Promise.all(
      bounds.slice(0, -1).map((from, i) =>
        runJob<{ scores: Float32Array }>(import.meta.url, 'coverage/calibrate-worker.js', { ...job, from, to: bounds[i + 1] }, workers, 'calibration').then((r) => r.scores),
      ),
    );
    const out = new Float32Array(n);
    results.forEach((r, i) => out.set(r, bounds[i]));
    return out;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
