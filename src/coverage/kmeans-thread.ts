/**
 * k-means' restarts (cluster.ts `bestRestart`) dealt out to worker threads, restart r to thread
 * r mod threads. Each restart is seeded by its number and runs on the same sample, so the winner
 * (least inertia, the lowest number on a tie) is the one the single-threaded loop picks: the fit
 * gets the same clusters, in about half the time of the restarts on 2 cores.
 */
import type { Worker } from 'node:worker_threads';
import { runJob } from '../config/workers.js';
import { restartNumbers, restartSample, type ClusterResult, type KMeansOptions } from './cluster.js';
import type { RestartJob } from './kmeans-worker.js';

export async function bestRestartInWorkers(x: Float32Array, n: number, dim: number, k: number, opts: KMeansOptions, threads: number): Promise<ClusterResult> {
  if (k < 1 || k > n) throw new Error(`cannot make ${k} clusters from ${n} points`);
  const sample = restartSample(x, n, dim, opts);
  const all = restartNumbers(opts);
  const parts = Array.from({ length: Math.max(1, Math.min(threads, all.length)) }, (_, t) => all.filter((r) => r % threads === t));
  const workers: Worker[] = [];
  try {
    const results = await Promise.all(
      parts.map((which) =>
        runJob<{ result: ClusterResult; restart: number }>(import.meta.url, 'coverage/kmeans-worker.js', { sample, dim, k, opts, which } satisfies RestartJob, workers, 'k-means'),
      ),
    );
    results.sort((a, b) => a.result.inertia - b.result.inertia || a.restart - b.restart);
    return results[0].result;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
