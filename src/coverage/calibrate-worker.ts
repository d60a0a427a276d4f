/** Worker-thread side of `calibrationScoresInWorkers`: the calibration scores of rows [from, to). */
import { answerJob } from '../config/workers.js';
import { CoverageIndex } from './index.js';
import type { CalibrationJob } from './calibrate-thread.js';

answerJob(
  (job: CalibrationJob & { from: number; to: number }) => {
    const index = new CoverageIndex(job.centroids, job.k, job.embeddings, job.labels, job.dim, job.params);
    return { scores: index.calibrationScores(job.embeddings, job.nearDuplicateCosine, job.from, job.to) };
  },
  (r) => [r.scores.buffer as ArrayBuffer],
);
