/**
 * The fit's calibration scores computed in worker threads, a contiguous share of the cases each:
 * every eval case scored against the others with its near-duplicates left out
 * (CoverageIndex.calibrationScores) and with its whole phrasing family left out
 * (CoverageIndex.groupOutScores). The same numbers as in one thread (each case's scores depend
 * only on the index and the families), in a fraction of the time.
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
  /** each case's phrasing family (calibrate.ts phrasingFamilies) */
  family: Int32Array;
}

export interface CalibrationScores {
  /** scored against the others, near-duplicates left out */
  seen: Float32Array;
  /** scored with the case's phrasing family left out */
  fresh: Float32Array;
}

export async function calibrationScoresInWorkers(job: CalibrationJob, threads: number): Promise<CalibrationScores> {
  const n = job.labels.length;
  const parts = Math.max(1, Math.min(threads, Math.ceil(n / 500)));
  const bounds = Array.from({ length: parts + 1 }, (_, i) => Math.round((i * n) / parts));
  const workers: Worker[] = [];
  try {
    const results = await Promise.all(
      bounds.slice(0, -1).map((from, i) =>
        runJob<CalibrationScores>(import.meta.url, 'coverage/calibrate-worker.js', { ...job, from, to: bounds[i + 1] }, workers, 'calibration'),
      ),
    );
    const seen = new Float32Array(n);
    const fresh = new Float32Array(n);
    results.forEach((r, i) => {
      seen.set(r.seen, bounds[i]);
      fresh.set(r.fresh, bounds[i]);
    });
    return { seen, fresh };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
