/**
 * An Embedder over a pool of worker threads, each running one single-threaded onnxruntime session
 * (see worker.ts). `opts.threads` workers (0 = one per CPU core); a call's texts are dealt out
 * among them in length order, so each gets a similar share of tokens, and the results are put back
 * in the caller's order. Single-threaded sessions in parallel measured faster than one session with
 * several intra-op threads on this 2-core machine, and far faster when other processes (Kafka,
 * ClickHouse) take CPU: a multi-threaded session waits at every operator for its slowest thread.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { workerScript } from '../config/workers.js';
import { ModelNotInstalledError, type EmbedBatch, type Embedder, type EmbedderOptions, type Precision } from './embedder.js';

export interface ThreadedEmbedder extends Embedder {
  /** number of worker threads (single-threaded sessions) */
  readonly workers: number;
  close(): Promise<void>;
}

type Info = { modelName: string; modelChecksum: string; precision: Precision; dim: number; maxTokens: number };

interface PoolWorker {
  worker: Worker;
  pending: Map<number, { resolve: (b: EmbedBatch) => void; reject: (e: Error) => void }>;
  /** called when the last pending call has settled */
  onIdle?: () => void;
}

/** Workers for `threads` (EVALGAP_EMBED_THREADS): as set, or with 0 one per CPU core. */
export function poolSize(threads: number): number {
  return threads > 0 ? threads : Math.max(1, os.availableParallelism());
}

async function startWorker(opts: EmbedderOptions): Promise<{ w: PoolWorker; info: Info }> {
  // a small young generation: a worker allocates little that lives (its arrays go to the caller),
  // and V8's default semi-spaces cost ~14 MB of resident memory per worker for nothing (pool of 2:
  // 195 → 168 MB, same throughput)
  const worker = new Worker(workerScript(import.meta.url, 'embed/worker.js'), {
    workerData: { ...opts, threads: 1 },
    resourceLimits: { maxYoungGenerationSizeMb: 4 },
  });
  const info = await new Promise<Info>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', (m) => {
      if (m.type === 'ready') resolve(m);
      else reject(m.name === 'ModelNotInstalledError' ? new ModelNotInstalledError(m.message) : new Error(m.message));
    });
  }).catch(async (e) => {
    await worker.terminate();
    throw e;
  });
  return { w: { worker, pending: new Map() }, info };
}

export async function loadThreadedEmbedder(opts: EmbedderOptions): Promise<ThreadedEmbedder> {
  const n = poolSize(opts.threads);
  // one after the other: onnxruntime's process-wide environment is created by the first
  const started: PromiseSettledResult<{ w: PoolWorker; info: Info }>[] = [];
  for (let i = 0; i < n; i++) {
    started.push(await startWorker(opts).then((value) => ({ status: 'fulfilled' as const, value }), (reason) => ({ status: 'rejected' as const, reason })));
    if (started[i].status === 'rejected') break;
  }
  const bad = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (bad) {
    await Promise.all(started.map((s) => (s.status === 'fulfilled' ? s.value.w.worker.terminate() : undefined)));
    throw bad.reason;
  }
  const ok = started.map((s) => (s as PromiseFulfilledResult<{ w: PoolWorker; info: Info }>).value);
  const pool = ok.map((s) => s.w);
  const info = ok[0].info;
  let nextId = 0;
  let failed: Error | null = null;
  const failAll = (e: Error) => {
    failed ??= e;
    for (const w of pool) {
      for (const p of w.pending.values()) p.reject(e);
      w.pending.clear();
      w.onIdle?.();
    }
  };
  let closed = false;
  for (const w of pool) {
    w.worker.on('message', (m) => {
      const p = w.pending.get(m.id);
      if (!p) return;
      w.pending.delete(m.id);
      if (w.pending.size === 0) {
        w.worker.unref();
        w.onIdle?.();
      }
      if (m.type === 'result') p.resolve({ vectors: m.vectors, truncated: m.truncated });
      else p.reject(new Error(`embedding failed: ${m.message}`));
    });
    w.worker.on('error', (e) => failAll(e));
    w.worker.on('exit', (code) => failAll(new Error(`embed worker exited (${code})`)));
    w.worker.unref();
  }
  // an idle pool does not keep the process alive, a call in flight does (a process that exits
  // while a session is running aborts in onnxruntime's teardown)
  const call = (w: PoolWorker, texts: string[]) =>
    new Promise<EmbedBatch>((resolve, reject) => {
      const id = nextId++;
      if (w.pending.size === 0) w.worker.ref();
      w.pending.set(id, { resolve, reject });
      w.worker.postMessage({ id, texts });
    });
  return {
    ...info,
    workers: n,
    async embed(texts: readonly string[]): Promise<EmbedBatch> {
      if (failed) throw failed;
      if (closed) throw new Error('the embedder is closed');
      const dim = info.dim;
      // deal the texts out in length order (round robin), so each worker gets a similar share
      const order = Array.from({ length: texts.length }, (_, i) => i).sort((a, b) => texts[a].length - texts[b].length);
      const shares = pool.map((_, k) => order.filter((_, j) => j % n === k)).filter((s) => s.length > 0);
      const parts = await Promise.all(shares.map((s, k) => call(pool[k], s.map((i) => texts[i]))));
      const vectors = new Float32Array(texts.length * dim);
      const truncated = new Uint8Array(texts.length);
      shares.forEach((s, k) => {
        s.forEach((i, j) => {
          vectors.set(parts[k].vectors.subarray(j * dim, (j + 1) * dim), i * dim);
          truncated[i] = parts[k].truncated[j];
        });
      });
      return { vectors, truncated };
    },
    /**
     * Waits for the calls in flight, then ends the workers. A worker terminated while it embeds
     * aborts the whole process: onnxruntime's binding throws a C++ exception when its next call
     * finds the thread being torn down ("terminate called after throwing an instance of
     * 'Napi::Error'"), and the process then hung in the embedded engine's abort handler.
     */
    async close() {
      closed = true;
      await Promise.all(pool.map((w) => (w.pending.size ? new Promise<void>((r) => (w.onIdle = r)) : undefined)));
      for (const w of pool) w.worker.removeAllListeners('exit');
      await Promise.all(pool.map((w) => w.worker.terminate()));
    },
  };
}
