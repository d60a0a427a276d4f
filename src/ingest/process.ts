/**
 * The transform in the middle of `evalgap run`: Kafka messages in, assigned rows and dead letters
 * out. Pure apart from the embedder call; knows nothing of Kafka clients or ClickHouse.
 */
import { createHash } from 'node:crypto';
import type { Embedder } from '../embed/embedder.js';
import type { CoverageAssigner } from '../coverage/model.js';
import { decodeRequest, type RequestLog } from '../schema/request.js';
import type { RequestRow } from '../store/store.js';
import { inCoveredSample, quantize, type EmbeddingRow } from '../store/embeddings.js';

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
  /** called between embedding chunks (kafkajs heartbeat) */
  onChunk?: () => Promise<void>;
  /** messages embedded and assigned per chunk */
  chunkSize?: number;
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
    session_id: r.session_id,
    turn: r.turn,
    query: deps.redactText ? createHash('sha256').update(r.query).digest('hex') : r.query,
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
  };
}

export async function processMessages(messages: readonly SourceMessage[], deps: ProcessDeps): Promise<ProcessResult> {
  const dead: DeadLetter[] = [];
  const valid: { m: SourceMessage; r: RequestLog }[] = [];
  for (const m of messages) {
    const d = decodeRequest(m.value);
    if (d.ok) valid.push({ m, r: d.value });
    else dead.push({ source: m, reason: d.reason });
  }
  const rows: RequestRow[] = [];
  const embeddings: EmbeddingRow[] = [];
  let embedMs = 0;
  let assignMs = 0;
  let truncated = 0;
  const chunk = deps.chunkSize ?? 256;
  const chunks: (typeof valid)[] = [];
  for (let i = 0; i < valid.length; i += chunk) chunks.push(valid.slice(i, i + chunk));
  // pipelined: the next chunk is already embedding (in the worker thread, for evalgap run)
  // while this one is assigned and turned into rows
  const embedChunk = (part: typeof valid) => {
    const t = performance.now();
    return deps.embedder.embed(part.map((v) => v.r.query)).then((emb) => ({ emb, ms: performance.now() - t }));
  };
  let next = chunks.length ? embedChunk(chunks[0]) : null;
  for (let c = 0; c < chunks.length; c++) {
    const part = chunks[c];
    const { emb, ms } = await next!;
    next = c + 1 < chunks.length ? embedChunk(chunks[c + 1]) : null;
    embedMs += ms;
    const t = performance.now();
    const a = deps.assigner.assign(emb.vectors, part.length);
    assignMs += performance.now() - t;
    part.forEach((v, j) => {
      truncated += emb.truncated[j];
      const row = {
        ...toRow(v.m, v.r, deps),
        truncated: emb.truncated[j] ? 1 : 0,
        cluster: a.cluster[j],
        similarity: a.similarity[j],
        runner_up: a.runnerUp?.[j] ?? -1,
        runner_up_similarity: a.runnerUpSimilarity?.[j] ?? -1,
        coverage: a.coverage[j],
        covered: a.covered[j] ? 1 : 0,
      } as RequestRow;
      rows.push(row);
      if (!row.covered || inCoveredSample(row.request_id)) {
        embeddings.push(embeddingRow(row, quantize(emb.vectors, j * deps.embedder.dim, deps.embedder.dim)));
      }
    });
    await deps.onChunk?.();
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
