/**
 * k-means' restarts (cluster.ts `bestRestart`) dealt out to worker threads, restart r to thread
 * r mod threads. Each restart is seeded by its number and runs on the same sample, so the winner
 * (least inertia, the lowest number on a tie) is the one the single-threaded loop picks: the fit
 * gets the same clusters, in about half the time of the restarts on 2 cores.
 */
import { Worker } from 'node:worker_threads';
import { workerScript } from '../config/workers.js';
import { restartNumbers, restartSample, type ClusterResult, type KMeansOptions } from './cluster.js';
import type { RestartJob } from './kmeans-worker.js';

type Reply = { ok: true; result: ClusterResult; restart: number } | { ok: false; message: string };

export async function bestRestartInWorkers(x: Float32Array, n: number, dim: number, k: number, opts: KMeansOptions, threads: number): Promise<ClusterResult> {
  if (k < 1 || k > n) throw new Error(`cannot make ${k} clusters from ${n} points`);
  const sample = restartSample(x, n, dim, opts);
  const all = restartNumbers(opts);
  const parts = Array.from({ length: Math.max(1, Math.min(threads, all.length)) }, (_, t) => all.filter((r) => r % threads === t));
  const workers: Worker[] = [];
  try {
    const results = await Promise.all(
      parts.map(
        (which) =>
          new Promise<{ result: ClusterResult; restart: number }>((resolve, reject) => {
            const job: RestartJob = { sample, dim, k, opts, which };
            const w = new Worker(workerScript(import.meta.url, 'coverage/kmeans-worker.js'), { workerData: job });
            workers.push(w);
            w.once('message', (m: Reply) => (m.ok ? resolve(m) : reject(new Error(`k-means failed: ${m.message}`))));
            w.once('error', reject);
            w.once('exit', (code) => reject(new Error(`k-means worker exited (${code}) without a result`)));
          }),
      ),
    );
    results.sort((a, b) => a.result.inertia - b.result.inertia || a.restart - b.restart);
    return results[0].result;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
