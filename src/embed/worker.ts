/**
 * One worker of the threaded embedder's pool: a single-threaded onnxruntime session. Tokenising,
 * pooling and the session itself run here, so `evalgap run` keeps its event loop free for Kafka
 * heartbeats, /metrics and ClickHouse I/O (inference once held it up to 3.4 s).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadEmbedder, type EmbedderOptions } from './embedder.js';

type Request = { id: number; texts: string[] };

const WARMUP = Array.from({ length: 46 }, (_, i) => 'word '.repeat(i + 1).trim());

/**
 * Test hook, not a setting: the fault suite (test/faults) makes each call last this many ms per
 * text longer, the speed of a machine far slower than its session timeout allows for. Read only
 * when EVALGAP_TEST_HOOKS=1 is set as well; nothing else reads either variable.
 */
const TEST_DELAY_MS_PER_TEXT = process.env.EVALGAP_TEST_HOOKS === '1' ? Math.max(0, Number(process.env.EVALGAP_TEST_EMBED_DELAY_MS_PER_TEXT) || 0) : 0;

async function main() {
  if (!parentPort) throw new Error('embed worker started outside a worker thread');
  const port = parentPort;
  try {
    const e = await loadEmbedder(workerData as EmbedderOptions);
    // warm the session up on texts of 1 to 48 tokens (onnxruntime sets up each new input shape on
    // its first run): a fresh pool embedded its first 512 Banking77 queries ~20% slower than the next
    await e.embed(WARMUP);
    port.postMessage({ type: 'ready', modelName: e.modelName, modelChecksum: e.modelChecksum, precision: e.precision, dim: e.dim, maxTokens: e.maxTokens });
    port.on('message', async (req: Request) => {
      try {
        const r = await e.embed(req.texts);
        if (TEST_DELAY_MS_PER_TEXT) await new Promise((res) => setTimeout(res, TEST_DELAY_MS_PER_TEXT * req.texts.length));
        port.postMessage({ type: 'result', id: req.id, vectors: r.vectors, truncated: r.truncated }, [
          r.vectors.buffer as ArrayBuffer,
          r.truncated.buffer as ArrayBuffer,
        ]);
      } catch (err) {
        port.postMessage({ type: 'error', id: req.id, message: (err as Error).message });
      }
    });
  } catch (err) {
    port.postMessage({ type: 'fatal', message: (err as Error).message, name: (err as Error).name });
  }
}

void main();
