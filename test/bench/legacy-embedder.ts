/**
 * The embedding path evalgap used before int8 compute (bench baseline only): @xenova/transformers
 * 2.17.2's pipeline with its own onnxruntime-node 1.14 on onnx/model_quantized.onnx (weights stored
 * in int8, computed in fp32; the runtime picks its own thread count, session options are dropped).
 * Same length sorting, sub-batching and mean pooling as src/embed/embedder.ts.
 */
import path from 'node:path';
import type { EmbedBatch } from '../../src/embed/embedder.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
export async function loadLegacyEmbedder(modelsDir: string, model: string, batchSize: number, maxTokens: number) {
  const t: any = await import('@xenova/transformers');
  t.env.allowRemoteModels = false;
  t.env.allowLocalModels = true;
  t.env.localModelPath = modelsDir.endsWith(path.sep) ? modelsDir : modelsDir + path.sep;
  const pipe: any = await t.pipeline('feature-extraction', model, { quantized: true });
  pipe.tokenizer.model_max_length = Math.min(maxTokens, pipe.tokenizer.model_max_length ?? maxTokens);
  const dim: number = pipe.model.config.hidden_size;
  return {
    dim,
    async embed(texts: readonly string[]): Promise<EmbedBatch> {
      const n = texts.length;
      const vectors = new Float32Array(n * dim);
      const truncated = new Uint8Array(n);
      const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => texts[a].length - texts[b].length);
      for (let start = 0; start < n; start += batchSize) {
        const idx = order.slice(start, start + batchSize);
        const inputs = pipe.tokenizer(idx.map((i) => texts[i]), { padding: true, truncation: true });
        const hidden = (await pipe.model(inputs)).last_hidden_state;
        const [b, seq, h] = hidden.dims as number[];
        const hd = hidden.data as Float32Array;
        const mask = inputs.attention_mask.data as BigInt64Array;
        for (let r = 0; r < b; r++) {
          const dst = idx[r] * dim;
          for (let s = 0; s < seq; s++) {
            if (mask[r * seq + s] === 0n) continue;
            for (let d = 0; d < h; d++) vectors[dst + d] += hd[(r * seq + s) * h + d];
          }
          let norm = 0;
          for (let d = 0; d < h; d++) norm += vectors[dst + d] ** 2;
          norm = Math.sqrt(norm) || 1;
          for (let d = 0; d < h; d++) vectors[dst + d] /= norm;
        }
      }
      return { vectors, truncated };
    },
  };
}
