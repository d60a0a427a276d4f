/** An Embedder that runs the model in a worker thread (see worker.ts for why). */
import { Worker } from 'node:worker_threads';
import { workerScript } from '../config/workers.js';
import { ModelNotInstalledError, type EmbedBatch, type Embedder, type EmbedderOptions } from './embedder.js';

export interface ThreadedEmbedder extends Embedder {
  close(): Promise<void>;
}

export async function loadThreadedEmbedder(opts: EmbedderOptions): Promise<ThreadedEmbedder> {
  const worker = new Worker(workerScript(import.meta.url, 'embed/worker.js'), { workerData: opts });
  const pending = new Map<number, { resolve: (b: EmbedBatch) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let failed: Error | null = null;
  const info = await new Promise<{ modelName: string; modelChecksum: string; dim: number; maxTokens: number }>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', (m) => {
      if (m.type === 'ready') resolve(m);
      else reject(m.name === 'ModelNotInstalledError' ? new ModelNotInstalledError(m.message) : new Error(m.message));
    });
  }).catch(async (e) => {
    await worker.terminate();
    throw e;
  });
  const failAll = (e: Error) => {
    failed = e;
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  worker.on('message', (m) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.type === 'result') p.resolve({ vectors: m.vectors, truncated: m.truncated });
    else p.reject(new Error(`embedding failed: ${m.message}`));
  });
  worker.on('error', (e) => failAll(e));
  worker.on('exit', (code) => failAll(new Error(`embed worker exited (${code})`)));
  worker.unref();
  return {
    ...info,
    embed(texts: readonly string[]): Promise<EmbedBatch> {
      if (failed) return Promise.reject(failed);
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, texts: [...texts] });
      });
    },
    async close() {
      worker.removeAllListeners('exit');
      await worker.terminate();
    },
  };
}
