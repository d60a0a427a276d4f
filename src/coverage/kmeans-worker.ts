/** Worker-thread side of `bestRestartInWorkers`: the best of its share of k-means' restarts (pure `bestRestart`). */
import { answerJob } from '../config/workers.js';
import { bestRestart, type KMeansOptions, type RestartSample } from './cluster.js';

export interface RestartJob {
  sample: RestartSample;
  dim: number;
  k: number;
  opts: KMeansOptions;
  /** the restart numbers this worker runs */
  which: number[];
}

answerJob((job: RestartJob) => bestRestart(job.sample, job.dim, job.k, job.opts, job.which));
