/**
 * Sentence embeddings from the local model (files under models/, never a hub): the model's
 * tokenizer.json through @huggingface/tokenizers (pure JS; the same ids as transformers.js gave,
 * checked on all Banking77 queries), inference by onnxruntime-node directly (so the session
 * options, threads among them, reach the runtime), mean pooling and L2 normalisation here.
 *
 * Two graphs of the same weights are installed (scripts/install-model.sh): `int8` computes its
 * linear layers in int8 (MatMulIntegerToFloat, one activation scale per token; the default), `fp32`
 * is the reference. Their files, so their checksums, differ: a coverage model fitted with one is
 * refused by the other.
 *
 * Texts are tokenised, sorted by token count and embedded in sub-batches, so that each sub-batch
 * pads to a similar length (sorting by characters instead cost 22% of the throughput at batch 8).
 * The int8 graph quantises each token row with its own scale, so a text's vector does not depend
 * on its batch mates. Output is one row-major Float32Array of unit-length vectors in the caller's
 * order.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';

export type Precision = 'int8' | 'fp32';
export const PRECISIONS: readonly Precision[] = ['int8', 'fp32'];

export interface EmbedBatch {
  /** n × dim, row-major, each row L2-normalised. */
  vectors: Float32Array;
  /** 1 where the text reached the model's token limit and was truncated for embedding. */
  truncated: Uint8Array;
}

export interface Embedder {
  readonly modelName: string;
  /** sha256 of the ONNX graph: stored in coverage models to refuse a mismatched embedder. */
  readonly modelChecksum: string;
  readonly precision: Precision;
  readonly dim: number;
  readonly maxTokens: number;
  embed(texts: readonly string[]): Promise<EmbedBatch>;
}

export interface EmbedderOptions {
  modelsDir: string;
  model: string;
  precision: Precision;
  batchSize: number;
  /**
   * EVALGAP_EMBED_THREADS. The pool (threaded.ts, what fit/run/demo use): worker threads, each with
   * a single-threaded session; 0 = one per core. loadEmbedder alone: the session's intra-op
   * threads; 0 = onnxruntime's default (one per physical core).
   */
  threads: number;
  maxTokens: number;
}

export class ModelNotInstalledError extends Error {
  override name = 'ModelNotInstalledError';
}

const checksumCache = new Map<string, string>();
function fileChecksum(file: string): string {
  let c = checksumCache.get(file);
  if (!c) {
    c = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    checksumCache.set(file, c);
  }
  return c;
}

export function modelFile(modelsDir: string, model: string, precision: Precision = 'int8'): string {
  return path.join(modelsDir, model, 'onnx', `model_${precision}.onnx`);
}

/**
 * The installed embedding model's identity (name, sha256 of its ONNX graph, precision) without
 * loading it: what a coverage model must have been fitted with (`evalgap deploy` checks it as
 * `evalgap run` does).
 */
export function installedEmbedding(opts: Pick<EmbedderOptions, 'modelsDir' | 'model' | 'precision' | 'maxTokens'>): { model: string; checksum: string; precision: Precision; maxTokens: number } {
  const onnx = modelFile(opts.modelsDir, opts.model, opts.precision);
  if (!fs.existsSync(onnx)) {
    throw new ModelNotInstalledError(`embedding model "${opts.model}" (${opts.precision}) is not installed in ${opts.modelsDir} (run: npm run setup)`);
  }
  return { model: opts.model, checksum: fileChecksum(onnx), precision: opts.precision, maxTokens: opts.maxTokens };
}

/** What a coverage model must have been fitted with to be used by this loaded embedder (LoadOptions.expectEmbedding). */
export function embeddingOf(e: Pick<Embedder, 'modelName' | 'modelChecksum' | 'precision' | 'maxTokens'>): { model: string; checksum: string; precision: Precision; maxTokens: number } {
  return { model: e.modelName, checksum: e.modelChecksum, precision: e.precision, maxTokens: e.maxTokens };
}

/* eslint-disable @typescript-eslint/no-explicit-any */
export async function loadEmbedder(opts: EmbedderOptions): Promise<Embedder> {
  const onnx = modelFile(opts.modelsDir, opts.model, opts.precision);
  if (!fs.existsSync(onnx) || !fs.existsSync(path.join(opts.modelsDir, opts.model, 'tokenizer.json'))) {
    throw new ModelNotInstalledError(
      `embedding model "${opts.model}" (${opts.precision}) is not installed in ${opts.modelsDir} (run: npm run setup)`,
    );
  }
  const dir = path.join(opts.modelsDir, opts.model);
  const json = (f: string) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
  const { Tokenizer } = await import('@huggingface/tokenizers');
  const tokenizer = new Tokenizer(json('tokenizer.json'), json('tokenizer_config.json'));
  const config = json('config.json');
  const ort = (await import('onnxruntime-node')).default;
  const session = await ort.InferenceSession.create(onnx, {
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
    // onnxruntime 1.30's fused SkipLayerNormalization kernel measured slower than the Add +
    // LayerNormalization it replaces at these sizes (~15 tokens x 384): 25% fewer queries/s
    // with it (models/README.md)
    extra: { optimization: { disable_specified_optimizers: 'SkipLayerNormFusion' } },
  });
  return new LocalEmbedder(ort, session, tokenizer, opts, config.hidden_size, fileChecksum(onnx));
}

class LocalEmbedder implements Embedder {
  readonly modelName: string;
  readonly maxTokens: number;
  readonly precision: Precision;
  private readonly inputs: string[];
  constructor(
    private readonly ort: any,
    private readonly session: any,
    private readonly tokenizer: { encode(text: string): { ids: number[] } },
    private readonly opts: EmbedderOptions,
    readonly dim: number,
    readonly modelChecksum: string,
  ) {
    this.modelName = opts.model;
    this.maxTokens = opts.maxTokens;
    this.precision = opts.precision;
    this.inputs = session.inputNames;
  }

  async embed(texts: readonly string[]): Promise<EmbedBatch> {
    const n = texts.length;
    const dim = this.dim;
    const vectors = new Float32Array(n * dim);
    const truncated = new Uint8Array(n);
    if (n === 0) return { vectors, truncated };
    // truncated at maxTokens (the first maxTokens ids, as before), then sorted by token count so
    // that each sub-batch pads (id 0) only to a similar length
    const tokens = texts.map((t) => this.tokenizer.encode(t).ids.slice(0, this.maxTokens));
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => tokens[a].length - tokens[b].length);
    const bs = this.opts.batchSize;
    for (let start = 0; start < n; start += bs) {
      const idx = order.slice(start, start + bs);
      const ids = idx.map((i) => tokens[i]);
      const seqLen = Math.max(...ids.map((x) => x.length));
      const inputIds = new BigInt64Array(idx.length * seqLen);
      const mask = new BigInt64Array(idx.length * seqLen);
      ids.forEach((x, r) => {
        for (let s = 0; s < x.length; s++) {
          inputIds[r * seqLen + s] = BigInt(x[s]);
          mask[r * seqLen + s] = 1n;
        }
      });
      const data: Record<string, BigInt64Array> = {
        input_ids: inputIds,
        attention_mask: mask,
        token_type_ids: new BigInt64Array(idx.length * seqLen),
      };
      const feeds: Record<string, unknown> = {};
      for (const name of this.inputs) {
        if (!data[name]) throw new Error(`embedding model input ${name} is not supported`);
        feeds[name] = new this.ort.Tensor('int64', data[name], [idx.length, seqLen]);
      }
      const out = await this.session.run(feeds);
      const hidden = out.last_hidden_state;
      const [b, seq, h] = hidden.dims as number[];
      const hd = hidden.data as Float32Array;
      for (let r = 0; r < b; r++) {
        const dst = idx[r] * dim;
        let count = 0;
        for (let s = 0; s < seq; s++) {
          if (mask[r * seq + s] === 0n) continue;
          count++;
          const src = (r * seq + s) * h;
          for (let d = 0; d < h; d++) vectors[dst + d] += hd[src + d];
        }
        if (count >= this.maxTokens) truncated[idx[r]] = 1;
        let norm = 0;
        for (let d = 0; d < h; d++) norm += vectors[dst + d] * vectors[dst + d];
        norm = Math.sqrt(norm) || 1;
        for (let d = 0; d < h; d++) vectors[dst + d] /= norm;
      }
    }
    return { vectors, truncated };
  }
}
