/** Worker-thread side of `chooseKInWorker`: the silhouettes of its part of the k grid (pure `silhouettesOnSample`). */
import { answerJob } from '../config/workers.js';
import { silhouettesOnSample } from './cluster.js';

export interface ChooseKJob {
  sx: Float32Array;
  sn: number;
  dim: number;
  seed: number;
  /** the k values this worker scores */
  ks: number[];
}

answerJob((job: ChooseKJob) => {
  const t = performance.now();
  const scores = silhouettesOnSample(job.sx, job.sn, job.dim, job.seed, job.ks);
  return { scores, ms: performance.now() - t };
});
