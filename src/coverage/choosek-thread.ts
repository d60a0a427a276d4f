/**
 * `chooseKOnSample` in worker threads. The fit embeds its chooseK sample first and then scores the
 * k grid in `workers` threads while the embedding pool embeds the remaining cases; the grid is
 * dealt out so each thread gets a similar share of the work (the cost of a k grows with k), so once
 * the embedding is done both cores finish the grid. The choice is the same as chooseKOnSample's:
 * each k is scored on its own, and the rule is applied to all the scores.
 */
import type { Worker } from 'node:worker_threads';
import { runJob } from '../config/workers.js';
import { kGrid, pickK, type KChoice } from './cluster.js';
import type { ChooseKJob } from './choosek-worker.js';

export interface ChooseKRun {
  /** the choice and the workers' summed compute time */
  result: Promise<{ choice: KChoice; ms: number }>;
  /** stop the workers (when the fit fails meanwhile); result then rejects */
  cancel(): void;
}

type Scores = { k: number; silhouette: number }[];

function runPart(job: ChooseKJob, workers: Worker[]): Promise<{ scores: Scores; ms: number }> {
  return runJob(import.meta.url, 'coverage/choosek-worker.js', job, workers, 'choosing k');
}

export function chooseKInWorker(job: Omit<ChooseKJob, 'ks'> & { maxK: number }, threads = 2): ChooseKRun {
  const grid = kGrid(job.sn, job.maxK);
  // deal the k values out from the largest (the costliest) to the thread with the least work so far
  const parts: number[][] = Array.from({ length: Math.max(1, Math.min(threads, grid.length)) }, () => []);
  const load = new Float64Array(parts.length);
  for (const k of [...grid].sort((a, b) => b - a)) {
    const t = load.indexOf(Math.min(...load));
    parts[t].push(k);
    load[t] += k + 4;
  }
  const workers: Worker[] = [];
  const { maxK: _maxK, ...base } = job;
  const result = Promise.all(parts.map((ks) => runPart({ ...base, ks }, workers))).then((rs) => ({
    choice: pickK(rs.flatMap((r) => r.scores), job.sn),
    ms: rs.reduce((a, r) => a + r.ms, 0),
  }));
  result.catch(() => {}); // the caller awaits it later; an early failure must not go unhandled meanwhile
  return { result, cancel: () => workers.forEach((w) => void w.terminate()) };
}
