/** Worker-thread side of `calibrationScoresInWorkers`: both calibration scores of rows [from, to). */
import { answerJob } from '../config/workers.js';
import { CoverageIndex } from './index.js';
import type { CalibrationJob, CalibrationScores } from './calibrate-thread.js';

answerJob(
  (job: CalibrationJob & { from: number; to: number }): CalibrationScores => {
    const index = new CoverageIndex(job.centroids, job.k, job.embeddings, job.labels, job.dim, job.params);
    return {
      seen: index.calibrationScores(job.embeddings, job.nearDuplicateCosine, job.from, job.to),
      fresh: index.groupOutScores(job.embeddings, job.family, job.nearDuplicateCosine, job.from, job.to),
    };
  },
  (r) => [r.seen.buffer as ArrayBuffer, r.fresh.buffer as ArrayBuffer],
);
