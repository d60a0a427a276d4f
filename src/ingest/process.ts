/**
 * The transform in the middle of `evalgap run`: Kafka messages in, assigned rows and dead letters
 * out. Pure apart from the embedder call; knows nothing of Kafka clients or ClickHouse.
 */
import type { Embedder } from '../embed/embedder.js';
import type { CoverageAssigner } from '../coverage/model.js';
import { toWellFormed } from '../schema/limits.js';
import { redactText } from '../schema/redact.js';
import { decodeRequest, type DecodeOptions, type RequestLog } from '../schema/request.js';
import type { RequestRow } from '../store/store.js';
import { inCoveredSample, quantize, type EmbeddingRow } from '../store/embeddings.js';

/**
 * Text beyond this many UTF-16 units is not sent to the tokenizer: 256 tokens never need more
 * unless the text is mostly whitespace, and tokenizing a 1 MiB query took 4.9 s and 140 MB for
 * the same 256 tokens. Such rows are flagged truncated.
 */
export const EMBED_TEXT_CAP = 16_384;

/** Messages per embedding call of `evalgap run` at most (see ProcessDeps.chunkSize, CallSizer). */
export const EMBED_CHUNK = 1024;

/**
 * Texts per embedding call, chosen from the measured embedding speed so that one call lasts about
 * `targetMs` at most. A call cannot be interrupted (it runs in onnxruntime), and a consumer learns
 * of a rebalance only between calls: on a machine where 1,024 texts take longer than the group's
 * session or rebalance timeout, a fixed call size gets the member evicted. The first call is small
 * (its speed is unknown); the size then follows the measured time per text, growing at most
 * twofold per call and shrinking at once when a call runs slower than expected.
 */
export class CallSizer {
  private msPerText: number | null = null;
  private current: number;

  constructor(
    readonly targetMs: number,
    readonly max = EMBED_CHUNK,
    readonly min = 16,
    first = 32,
  ) {
    this.current = Math.max(min, Math.min(max, first));
  }

  /** texts for the next call */
  size(): number {
    return this.current;
  }

  /** one call of `texts` texts took `ms` */
  observe(texts: number, ms: number): void {
    if (texts <= 0 || !(ms >= 0)) return;
    const per = ms / texts;
    // slower than the estimate: believe it at once; faster: move part of the way
    this.msPerText = this.msPerText === null || per > this.msPerText ? per : 0.7 * this.msPerText + 0.3 * per;
    const fit = Math.floor(this.targetMs / Math.max(this.msPerText, 1e-6));
    this.current = Math.max(this.min, Math.min(this.max, 2 * this.current, fit));
  }

  /** the estimate, ms per text (null before the first call) */
  speed(): number | null {
    return this.msPerText;
  }
}

export interface SourceMessage {
  topic: string;
  partition: number;
  offset: string;
  value: Buffer | null;
  key?: Buffer | null;
  timestamp?: string;
}

export interface DeadLetter {
  source: SourceMessage;
  reason: string;
}

export interface ProcessDeps {
  embedder: Embedder;
  assigner: CoverageAssigner;
  redactText: boolean;
  /** the HMAC key of --redact-text (required when redactText is set) */
  redactKey?: string;
  /** size, depth and ts-window bounds of the message contract */
  decode?: DecodeOptions;
  /** called between embedding chunks (kafkajs heartbeat) */
  onChunk?: () => Promise<void>;
  /**
   * messages embedded and assigned per chunk (1,024: each worker of the pool sorts its 512 by token
   * count, so its sub-batches pad little; at 256 the same pool measured ~12% fewer queries/s)
   */
  chunkSize?: number;
  /** chooses each call's size from the measured speed instead (evalgap run); chunkSize is then ignored */
  sizer?: CallSizer;
}

export interface ProcessResult {
  rows: RequestRow[];
  /** kept embeddings (every uncovered row, a uniform sample of covered ones), in row order */
  embeddings: EmbeddingRow[];
  dead: DeadLetter[];
  embedMs: number;
  assignMs: number;
  truncated: number;
}

function toRow(m: SourceMessage, r: RequestLog, deps: ProcessDeps): Omit<RequestRow, 'cluster' | 'similarity' | 'coverage' | 'covered' | 'truncated'> {
  return {
    request_id: r.request_id,
    ts: new Date(r.ts).toISOString(),
    agent: r.agent,
    version: r.version,
    session_id: r.session_id,
    turn: r.turn,
    query: deps.redactText ? redactText(r.query, deps.redactKey ?? '') : r.query,
    query_redacted: deps.redactText ? 1 : 0,
    escalated: r.escalated ? 1 : 0,
    outcome: r.outcome,
    latency_ms: r.latency_ms,
    cost_usd: r.cost_usd,
    tools: r.tools,
    metadata: JSON.stringify(r.metadata),
    model_version: deps.assigner.version,
    kafka_topic: m.topic,
    kafka_partition: m.partition,
    kafka_offset: m.offset,
    repaired: r.repaired ? 1 : 0,
  };
}

export async function processMessages(messages: readonly SourceMessage[], deps: ProcessDeps): Promise<ProcessResult> {
  const dead: DeadLetter[] = [];
  const valid: { m: SourceMessage; r: RequestLog; base: ReturnType<typeof toRow> }[] = [];
  for (const m of messages) {
    const d = decodeRequest(m.value, deps.decode);
    if (!d.ok) {
      dead.push({ source: m, reason: d.reason });
      continue;
    }
    try {
      // anything a row cannot be built from is this message's fault alone
      valid.push({ m, r: d.value, base: toRow(m, d.value, deps) });
    } catch (e) {
      dead.push({ source: m, reason: `cannot build the row: ${(e as Error).name}` });
    }
  }
  const rows: RequestRow[] = [];
  const embeddings: EmbeddingRow[] = [];
  let embedMs = 0;
  let assignMs = 0;
  let truncated = 0;
  const chunk = deps.chunkSize ?? EMBED_CHUNK;
  const sizer = deps.sizer;
  // pipelined: the next chunk is already embedding (in the worker thread, for evalgap run)
  // while this one is assigned and turned into rows
  const embedChunk = (part: typeof valid) => {
    const t = performance.now();
    const texts = part.map((v) => (v.r.query.length > EMBED_TEXT_CAP ? toWellFormed(v.r.query.slice(0, EMBED_TEXT_CAP)) : v.r.query));
    return deps.embedder.embed(texts).then((emb) => {
      const ms = performance.now() - t;
      sizer?.observe(part.length, ms);
      return { emb, ms };
    });
  };
  let at = 0;
  const take = () => {
    const part = valid.slice(at, at + (sizer ? sizer.size() : chunk));
    at += part.length;
    return part;
  };
  let part = take();
  let next = part.length ? embedChunk(part) : null;
  try {
    while (next) {
      const { emb, ms } = await next;
      // the next call is sized from the speed of the one just finished
      const following = take();
      next = following.length ? embedChunk(following) : null;
      embedMs += ms;
      const t = performance.now();
      const a = deps.assigner.assign(emb.vectors, part.length);
      assignMs += performance.now() - t;
      part.forEach((v, j) => {
        const cut = emb.truncated[j] || v.r.query.length > EMBED_TEXT_CAP ? 1 : 0;
        truncated += cut;
        const row = {
          ...v.base,
          truncated: cut,
          cluster: a.cluster[j],
          similarity: a.similarity[j],
          runner_up: a.runnerUp?.[j] ?? -1,
          runner_up_similarity: a.runnerUpSimilarity?.[j] ?? -1,
          coverage: a.coverage[j],
          covered: a.covered[j] ? 1 : 0,
          coverage_band: a.band?.[j] ?? -1,
        } as RequestRow;
        rows.push(row);
        if (!row.covered || inCoveredSample(row.request_id)) {
          embeddings.push(embeddingRow(row, quantize(emb.vectors, j * deps.embedder.dim, deps.embedder.dim)));
        }
      });
      part = following;
      await deps.onChunk?.();
    }
  } catch (e) {
    // given up (the member lost its place in the group, or is stopping): the call already started
    // is waited for (one call, sized to the measured speed), so that when this returns nothing of
    // the batch is still running and the embedder may be closed
    await next?.catch(() => {});
    throw e;
  }
  return { rows, embeddings, dead, embedMs, assignMs, truncated };
}

function embeddingRow(row: RequestRow, v: { scale: number; q: number[] }): EmbeddingRow {
  return {
    request_id: row.request_id,
    ts: row.ts,
    agent: row.agent,
    model_version: row.model_version,
    covered: row.covered,
    kafka_topic: row.kafka_topic,
    kafka_partition: row.kafka_partition,
    kafka_offset: row.kafka_offset,
    scale: v.scale,
    embedding: v.q,
  };
}

/** The kept embeddings of one insert run (rows of one partition, contiguous in offset order). */
export function embeddingsFor(all: readonly EmbeddingRow[], run: readonly RequestRow[]): EmbeddingRow[] {
  if (run.length === 0) return [];
  const lo = BigInt(run[0].kafka_offset);
  const hi = BigInt(run[run.length - 1].kafka_offset);
  return all.filter((e) => {
    const o = BigInt(e.kafka_offset);
    return o >= lo && o <= hi && e.kafka_topic === run[0].kafka_topic && e.kafka_partition === run[0].kafka_partition;
  });
}
