import { createHash, createHmac } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { EvalCase } from '../../src/coverage/evalset.js';
import { DEFAULT_FIT, buildCoverageModel, evalSetHash, type EmbeddingInfo } from '../../src/coverage/fit.js';
import { CoverageAssigner } from '../../src/coverage/model.js';
import { normalizeRows, rng } from '../../src/coverage/vec.js';
import type { EmbedBatch, Embedder } from '../../src/embed/embedder.js';
import { CallSizer, EMBED_TEXT_CAP, processMessages, type ProcessDeps, type SourceMessage } from '../../src/ingest/process.js';
import { createIngestMetrics } from '../../src/ingest/metrics.js';
import { IngestService } from '../../src/ingest/service.js';
import type { Store } from '../../src/store/store.js';
import type { RequestRow } from '../../src/store/store.js';

// ---------------------------------------------------------------- a deterministic fake embedding space

const DIM = 24;
const TOPICS = ['refund', 'password', 'shipping', 'invoice'];
const SIGMA = 0.1;

function gaussian(r: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r());
}

/** TOPICS.length + 1 orthonormal directions; the last is for text about none of the topics. */
const DIRS = (() => {
  const k = TOPICS.length + 1;
  const g = gaussian(rng(2024));
  const c = new Float64Array(k * DIM);
  for (let i = 0; i < k; i++) {
    for (let d = 0; d < DIM; d++) c[i * DIM + d] = g();
    for (let j = 0; j < i; j++) {
      let dot = 0;
      for (let d = 0; d < DIM; d++) dot += c[i * DIM + d] * c[j * DIM + d];
      for (let d = 0; d < DIM; d++) c[i * DIM + d] -= dot * c[j * DIM + d];
    }
    let n = 0;
    for (let d = 0; d < DIM; d++) n += c[i * DIM + d] ** 2;
    for (let d = 0; d < DIM; d++) c[i * DIM + d] /= Math.sqrt(n);
  }
  return Float32Array.from(c);
})();

function topicOf(text: string): number {
  const t = TOPICS.findIndex((w) => text.toLowerCase().includes(w));
  return t < 0 ? TOPICS.length : t;
}

/** Topic direction plus noise seeded by the text's hash, normalised. */
function embedOne(text: string, out: Float32Array, o: number): void {
  const t = topicOf(text);
  const seed = createHash('sha256').update(text).digest().readUInt32LE(0);
  const g = gaussian(rng(seed));
  for (let d = 0; d < DIM; d++) out[o + d] = DIRS[t * DIM + d] + SIGMA * g();
  normalizeRows(out.subarray(o, o + DIM), DIM);
}

class FakeEmbedder implements Embedder {
  readonly modelName = 'fake-topic-embedder';
  readonly modelChecksum = createHash('sha256').update('fake-topic-embedder').digest('hex');
  readonly precision = 'int8' as const;
  readonly dim = DIM;
  readonly maxTokens = 16;
  readonly calls: string[][] = [];
  async embed(texts: readonly string[]): Promise<EmbedBatch> {
    this.calls.push([...texts]);
    const vectors = new Float32Array(texts.length * DIM);
    const truncated = new Uint8Array(texts.length);
    texts.forEach((t, i) => {
      embedOne(t, vectors, i * DIM);
      truncated[i] = t.split(/\s+/).length > this.maxTokens ? 1 : 0;
    });
    return { vectors, truncated };
  }
}

async function makeAssigner(embedder: FakeEmbedder): Promise<CoverageAssigner> {
  const cases: EvalCase[] = [];
  TOPICS.forEach((w) => {
    for (let i = 0; i < 30; i++) cases.push({ id: `${w}-${i}`, text: `${w} case${i}`, tags: [w] });
  });
  const { vectors } = await embedder.embed(cases.map((c) => c.text));
  embedder.calls.length = 0;
  const emb: EmbeddingInfo = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim: DIM, maxTokens: embedder.maxTokens };
  expect(emb.checksum).toMatch(/^[0-9a-f]{64}$/);
  const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vectors, emb, {
    ...DEFAULT_FIT,
    k: TOPICS.length,
    source: 'fake',
    textField: 'query',
  });
  return new CoverageAssigner({ manifest: { ...built.draft, files: {} as never }, ...built.arrays });
}

/** cluster id whose top term is the topic word */
function clusterOf(assigner: CoverageAssigner, topic: string): number {
  const c = assigner.model.manifest.clusters.find((cl) => cl.terms[0] === topic);
  if (!c) throw new Error(`no cluster labelled ${topic}`);
  return c.id;
}

let offset = 100;
function msg(value: unknown, partition = 0): SourceMessage {
  const v = value === null ? null : Buffer.isBuffer(value) ? value : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));
  return { topic: 'evalgap.requests', partition, offset: String(offset++), value: v, key: null };
}

async function setup(over: Partial<ProcessDeps> = {}) {
  const embedder = new FakeEmbedder();
  const assigner = await makeAssigner(embedder);
  const deps: ProcessDeps = { embedder, assigner, redactText: false, ...over };
  return { embedder, assigner, deps };
}

const TS = Date.UTC(2024, 4, 6, 9, 15, 0);

// ---------------------------------------------------------------- CallSizer

describe('CallSizer: texts per embedding call from the measured speed', () => {
  it('starts small, grows at most twofold per call while calls stay inside the target, up to the cap', () => {
    const z = new CallSizer(5000);
    expect(z.size()).toBe(32);
    const sizes: number[] = [];
    for (let i = 0; i < 8; i++) {
      z.observe(z.size(), z.size() * 1.5); // 1.5 ms per text: 1,024 texts take 1.5 s
      sizes.push(z.size());
    }
    expect(sizes).toEqual([64, 128, 256, 512, 1024, 1024, 1024, 1024]);
  });

  it('shrinks at once when a call runs slow, so that the next call fits the target (a machine 20× slower)', () => {
    const z = new CallSizer(5000);
    for (let i = 0; i < 6; i++) z.observe(z.size(), z.size() * 1.5);
    expect(z.size()).toBe(1024);
    z.observe(1024, 1024 * 30); // 30 ms per text: 1,024 texts take 31 s, past a 30 s session
    expect(z.size()).toBe(166);
    expect(z.size() * 30).toBeLessThanOrEqual(5000);
    // one fast call does not bring the whole size back: the estimate moves part of the way
    z.observe(166, 166 * 1.5);
    expect(z.size()).toBeLessThan(332);
  });

  it('never goes below its floor, whatever the speed', () => {
    const z = new CallSizer(1000);
    z.observe(32, 32 * 500);
    expect(z.size()).toBe(16);
  });

  it('processMessages sizes each call with it', async () => {
    const sizer = new CallSizer(5000);
    const { deps, embedder } = await setup({ sizer });
    const msgs = Array.from({ length: 100 }, (_, i) => msg({ request_id: `z${i}`, ts: TS, query: `refund order ${i}` }));
    const res = await processMessages(msgs, deps);
    expect(res.rows).toHaveLength(100);
    // 32, then twice as many per call (the fake is fast), until the messages run out
    expect(embedder.calls.map((c) => c.length)).toEqual([32, 64, 4]);
    expect(res.rows.map((r) => r.request_id)).toEqual(msgs.map((_, i) => `z${i}`));
  });
});

// ---------------------------------------------------------------- processMessages

describe('processMessages', () => {
  it('turns valid messages into assigned rows carrying their Kafka position', async () => {
    const { deps, assigner } = await setup();
    const m1 = msg({
      request_id: 'r1',
      ts: TS,
      query: 'I want a refund for my order',
      agent: 'support',
      session_id: 's1',
      turn: 2,
      outcome: 'escalated',
      latency_ms: 120,
      cost_usd: 0.01,
      tools: ['orders'],
      region: 'eu',
      version: 'v2',
    });
    const m2 = msg({ request_id: 'r2', ts: '2024-05-06T10:00:00Z', query: 'forgot my password again' }, 3);
    const m3 = msg({ request_id: 'r3', ts: TS, query: 'what is the meaning of life' });
    const res = await processMessages([m1, m2, m3], deps);
    expect(res.dead).toEqual([]);
    expect(res.rows.length).toBe(3);
    expect(res.truncated).toBe(0);
    expect(res.embedMs).toBeGreaterThanOrEqual(0);
    expect(res.assignMs).toBeGreaterThanOrEqual(0);

    const [a, b, c] = res.rows;
    expect(a).toMatchObject({
      request_id: 'r1',
      ts: '2024-05-06T09:15:00.000Z',
      agent: 'support',
      version: 'v2',
      session_id: 's1',
      turn: 2,
      query: 'I want a refund for my order',
      query_redacted: 0,
      truncated: 0,
      escalated: 1,
      outcome: 'escalated',
      latency_ms: 120,
      cost_usd: 0.01,
      tools: ['orders'],
      model_version: assigner.version,
      kafka_topic: 'evalgap.requests',
      kafka_partition: 0,
      kafka_offset: m1.offset,
      cluster: clusterOf(assigner, 'refund'),
      covered: 1,
    });
    expect(JSON.parse(a.metadata)).toEqual({ region: 'eu' });
    expect(b).toMatchObject({
      request_id: 'r2',
      ts: '2024-05-06T10:00:00.000Z',
      agent: '',
      version: '',
      session_id: '',
      turn: 0,
      escalated: 0,
      outcome: 'ok',
      latency_ms: null,
      cost_usd: null,
      tools: [],
      metadata: '{}',
      kafka_partition: 3,
      kafka_offset: m2.offset,
      cluster: clusterOf(assigner, 'password'),
      covered: 1,
    });
    // off-topic text lands far from every eval case
    expect(c.covered).toBe(0);
    expect(c.coverage).toBeLessThan(assigner.threshold);
    expect(a.coverage).toBeGreaterThanOrEqual(assigner.threshold);

    // the numbers are exactly what the assigner gives for the embedder's vectors
    const emb = await new FakeEmbedder().embed(res.rows.map((r) => r.query));
    const direct = assigner.assign(emb.vectors, 3);
    res.rows.forEach((r, i) => {
      expect(r.cluster).toBe(direct.cluster[i]);
      expect(r.similarity).toBe(direct.similarity[i]);
      expect(r.coverage).toBe(direct.coverage[i]);
      expect(r.covered).toBe(direct.covered[i]);
    });
  });

  it('dead-letters invalid messages with reasons and keeps the valid ones in order', async () => {
    const { deps, embedder } = await setup();
    const good1 = msg({ request_id: 'g1', ts: TS, query: 'shipping to Canada?' });
    const empty = msg(null);
    const badUtf8 = msg(Buffer.from([0xff, 0xfe, 0x00]));
    const badJson = msg('{"request_id":');
    const arr = msg('[1,2]');
    const noQuery = msg({ request_id: 'x', ts: TS });
    const blank = msg({ request_id: 'y', ts: TS, query: '   ' });
    const badTs = msg({ request_id: 'z', ts: 'soon', query: 'invoice copy' });
    const good2 = msg({ request_id: 'g2', ts: TS, query: 'invoice copy please' });
    const all = [good1, empty, badUtf8, badJson, arr, noQuery, blank, badTs, good2];
    const res = await processMessages(all, deps);
    expect(res.rows.map((r) => r.request_id)).toEqual(['g1', 'g2']);
    expect(res.rows.map((r) => r.kafka_offset)).toEqual([good1.offset, good2.offset]);
    expect(res.dead.map((d) => d.source)).toEqual([empty, badUtf8, badJson, arr, noQuery, blank, badTs]);
    expect(res.dead[0].source).toBe(empty);
    const reasons = res.dead.map((d) => d.reason);
    expect(reasons[0]).toBe('empty message');
    expect(reasons[1]).toBe('message is not valid UTF-8');
    expect(reasons[2]).toMatch(/^invalid JSON: /);
    expect(reasons[3]).toBe('expected a JSON object');
    expect(reasons[4]).toBe('query: Required');
    expect(reasons[5]).toBe('query: query must not be empty');
    expect(reasons[6]).toBe('ts: expected an ISO-8601 string or epoch milliseconds');
    // only valid queries reach the embedder
    expect(embedder.calls).toEqual([['shipping to Canada?', 'invoice copy please']]);
  });

  it('stores a keyed HMAC-SHA256 of the query when redactText is on (not a guessable sha256), but embeds the real text', async () => {
    const { deps } = await setup();
    const q = 'refund for order 1234, card ending 9876';
    const key = 'k'.repeat(32);
    const plain = await processMessages([msg({ request_id: 'r', ts: TS, query: q })], deps);
    const redacted = await processMessages([msg({ request_id: 'r', ts: TS, query: q })], { ...deps, redactText: true, redactKey: key });
    const row = redacted.rows[0];
    expect(row.query).toBe(createHmac('sha256', key).update(q).digest('hex'));
    expect(row.query).not.toBe(createHash('sha256').update(q).digest('hex'));
    const other = await processMessages([msg({ request_id: 'r', ts: TS, query: q })], { ...deps, redactText: true, redactKey: 'x'.repeat(32) });
    expect(other.rows[0].query).not.toBe(row.query);
    expect(row.query).toMatch(/^[0-9a-f]{64}$/);
    expect(row.query_redacted).toBe(1);
    expect(JSON.stringify(row)).not.toContain('9876');
    expect(row.coverage).toBe(plain.rows[0].coverage);
    expect(row.cluster).toBe(plain.rows[0].cluster);
    expect(row.covered).toBe(1);
    expect(plain.rows[0].query).toBe(q);
    expect(plain.rows[0].query_redacted).toBe(0);
  });

  it('embeds in chunks, calling onChunk after each, with the same rows as one chunk', async () => {
    let chunks = 0;
    const { deps, embedder } = await setup({ chunkSize: 2, onChunk: async () => void chunks++ });
    const texts = ['refund now', 'password reset', 'shipping cost', 'invoice missing', 'refund status'];
    const messages = texts.map((q, i) => msg({ request_id: `r${i}`, ts: TS, query: q }));
    messages.splice(2, 0, msg('not json'));
    const res = await processMessages(messages, deps);
    expect(chunks).toBe(3); // 5 valid messages in chunks of 2
    expect(embedder.calls).toEqual([texts.slice(0, 2), texts.slice(2, 4), texts.slice(4)]);
    expect(res.rows.map((r) => r.query)).toEqual(texts);
    expect(res.dead.length).toBe(1);
    const whole = await processMessages(messages, { ...deps, chunkSize: undefined, onChunk: undefined });
    expect(whole.rows).toEqual(res.rows);
  });

  it('pipelines: the next chunk is sent for embedding before this chunk\'s onChunk, and every chunk ends in onChunk', async () => {
    const order: string[] = [];
    const embedder = new FakeEmbedder();
    const assigner = await makeAssigner(embedder);
    const spy: Embedder = {
      modelName: embedder.modelName,
      modelChecksum: embedder.modelChecksum,
      precision: embedder.precision,
      dim: embedder.dim,
      maxTokens: embedder.maxTokens,
      embed: async (t) => {
        order.push(`embed:${t.length}`);
        return embedder.embed(t);
      },
    };
    const onChunk = async () => {
      await new Promise((r) => setTimeout(r, 5));
      order.push('chunk');
    };
    const messages = ['refund a', 'refund b', 'refund c'].map((q, i) => msg({ request_id: `r${i}`, ts: TS, query: q }));
    await processMessages(messages, { embedder: spy, assigner, redactText: false, chunkSize: 2, onChunk });
    expect(order).toEqual(['embed:2', 'embed:1', 'chunk', 'chunk']);
  });

  it('does not call the embedder or onChunk when nothing is valid', async () => {
    let chunks = 0;
    const { deps, embedder } = await setup({ onChunk: async () => void chunks++ });
    const res = await processMessages([msg(null), msg('{}')], deps);
    expect(res.rows).toEqual([]);
    expect(res.dead.length).toBe(2);
    expect(embedder.calls).toEqual([]);
    expect(chunks).toBe(0);
    expect(await processMessages([], deps)).toMatchObject({ rows: [], dead: [], truncated: 0 });
  });

  it('counts and flags truncated queries', async () => {
    const { deps } = await setup();
    const long = 'refund ' + Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    const res = await processMessages(
      [msg({ request_id: 'a', ts: TS, query: long }), msg({ request_id: 'b', ts: TS, query: 'refund' })],
      deps,
    );
    expect(res.truncated).toBe(1);
    expect(res.rows.map((r) => r.truncated)).toEqual([1, 0]);
  });

  // Suspected bug: the schema accepts any finite non-negative epoch-ms number, but toRow calls
  // new Date(ts).toISOString(), which throws RangeError beyond 8.64e15 ms. One such message makes
  // processMessages reject for the whole batch (a poison message) instead of dead-lettering it.
  it('dead-letters a message whose epoch ts is outside the Date range instead of throwing', async () => {
    const { deps } = await setup();
    const res = await processMessages(
      [msg({ request_id: 'ok', ts: TS, query: 'refund' }), msg({ request_id: 'huge', ts: 1e16, query: 'refund' })],
      deps,
    );
    expect(res.rows.map((r) => r.request_id)).toEqual(['ok']);
    expect(res.dead.length).toBe(1);
  });
});

// ---------------------------------------------------------------- IngestService batches, store outages and lost membership

const NOW = Date.now();

describe('IngestService batch handling while the store fails', () => {
  /** A service with fakes around one eachBatch call: the store fails `failures` times, then works. */
  async function harness(failures: number, heartbeat: () => Promise<void>) {
    const { embedder, assigner } = await setup();
    const inserted: { rows: RequestRow[]; token?: string }[] = [];
    let attempts = 0;
    const marks: string[] = [];
    const aggs: { rows: unknown[]; token: string }[] = [];
    const store = {
      repairPartition: async () => ({ raw: -1n, agg: -1n, deleted: 0, aggregated: false }),
      insertEmbeddings: async () => {},
      insertRequests: async (rows: RequestRow[], token?: string) => {
        if (attempts++ < failures) throw new Error('ClickHouse is down');
        inserted.push({ rows, token });
      },
      setProgress: async (_t: string, _p: number, stage: string, o: bigint) => void marks.push(`${stage}:${o}`),
      insertAggregates: async (rows: unknown[], token: string) => void aggs.push({ rows, token }),
    } as unknown as Store;
    const commits: unknown[] = [];
    const service = new IngestService(
      { kafka: {} as never, store, embedder, assigner, logger: pino({ level: 'silent' }), metrics: createIngestMetrics(false) },
      { topic: 'evalgap.requests', dlqTopic: 'dlq', group: 'g', redactText: false, maxBatchMessages: 100, metricsPort: -1 },
    );
    const internals = service as unknown as { running: boolean; consumer: unknown; handleBatch: (p: unknown) => Promise<void> };
    internals.running = true;
    internals.consumer = { commitOffsets: async (c: unknown) => void commits.push(c) };
    const messages = [0, 1, 2].map((i) => ({
      offset: String(10 + i),
      value: Buffer.from(JSON.stringify({ request_id: `hb-${i}`, ts: NOW, query: `refund question ${i}` })),
      key: null,
      timestamp: String(TS),
    }));
    const paused = { pauses: 0, resumes: 0 };
    const resolved: string[] = [];
    const payload = {
      batch: { topic: 'evalgap.requests', partition: 0, messages, highWatermark: '13' },
      heartbeat: () => heartbeat(),
      resolveOffset: (o: string) => void resolved.push(o),
      isRunning: () => true,
      isStale: () => false,
      pause: () => {
        paused.pauses++;
        return () => void paused.resumes++;
      },
    };
    return { run: () => internals.handleBatch(payload), inserted, commits, paused, resolved, attempts: () => attempts, marks, aggs };
  }

  it('retries the insert while paused, then stores once, resumes the partition and commits', async () => {
    const h = await harness(2, async () => {});
    await h.run();
    expect(h.attempts()).toBe(3);
    expect(h.inserted).toHaveLength(1);
    expect(h.inserted[0].rows.map((r) => r.request_id)).toEqual(['hb-0', 'hb-1', 'hb-2']);
    expect(h.inserted[0].token).toMatch(/^raw:evalgap.requests:0:10-12:[0-9a-f-]{36}$/);
    expect(h.paused).toEqual({ pauses: 1, resumes: 1 });
    expect(h.commits).toEqual([[{ topic: 'evalgap.requests', partition: 0, offset: '13' }]]);
    // raw mark, the slice's aggregates under the token a repair would use, then the agg mark
    expect(h.marks).toEqual(['raw:12', 'agg:12']);
    expect(h.aggs).toHaveLength(1);
    expect(h.aggs[0].token).toBe('agg:evalgap.requests:0:-1:12');
  });

  it('gives the batch up, uncommitted and unstored, once a heartbeat says the member lost its place', async () => {
    const lost = new Error('The coordinator is not aware of this member');
    // heartbeats pass until the store has failed once; the one after that failed attempt fails
    let failedOnce = () => false;
    const h = await harness(5, async () => {
      if (failedOnce()) throw lost;
    });
    failedOnce = () => h.attempts() > 0;
    await expect(h.run()).rejects.toBe(lost);
    expect(h.attempts()).toBe(1);
    expect(h.inserted).toHaveLength(0);
    expect(h.commits).toHaveLength(0);
    expect(h.resolved).toHaveLength(0);
    expect(h.paused).toEqual({ pauses: 1, resumes: 1 });
  });

  it('does not insert when the heartbeat before the insert fails (a rebalance during embedding)', async () => {
    const h = await harness(0, async () => {
      throw new Error('The group is rebalancing, so a rejoin is needed');
    });
    await expect(h.run()).rejects.toThrow(/rebalancing/);
    expect(h.attempts()).toBe(0);
    expect(h.commits).toHaveLength(0);
  });
});

// ---------------------------------------------------------------- poison pills (issue 8)

describe('IngestService: no message can stop the stream', () => {
  /** One eachBatch over `values` with a store that refuses rows whose request_id starts with "bad". */
  async function poisonHarness(values: Buffer[], dlqCap?: number) {
    const { embedder, assigner } = await setup();
    const inserts: { ids: string[]; token?: string }[] = [];
    const stored: RequestRow[] = [];
    const aggs: { rows: { requests: number }[]; token: string }[] = [];
    const marks: string[] = [];
    const store = {
      repairPartition: async () => ({ raw: -1n, agg: -1n, deleted: 0, aggregated: false }),
      insertRequests: async (rows: RequestRow[], token?: string) => {
        inserts.push({ ids: rows.map((r) => r.request_id), token });
        if (rows.some((r) => r.request_id.startsWith('bad'))) {
          throw Object.assign(new Error('Cannot parse escape sequence: missing second part of surrogate pair "secret text"'), {
            code: '25',
            type: 'CANNOT_PARSE_ESCAPE_SEQUENCE',
          });
        }
        stored.push(...rows);
      },
      setProgress: async (_t: string, _p: number, stage: string, o: bigint) => void marks.push(`${stage}:${o}`),
      insertAggregates: async (rows: { requests: number }[], token: string) => void aggs.push({ rows, token }),
      insertEmbeddings: async () => {},
    } as unknown as Store;
    const sent: { messages: { key: Buffer | null; value: Buffer | null; headers: Record<string, string> }[] }[] = [];
    const service = new IngestService(
      { kafka: {} as never, store, embedder, assigner, logger: pino({ level: 'silent' }), metrics: createIngestMetrics(false) },
      { topic: 't', dlqTopic: 'dlq', group: 'g', redactText: false, maxBatchMessages: 1000, metricsPort: -1 },
    );
    const internals = service as unknown as {
      running: boolean;
      consumer: unknown;
      producer: unknown;
      dlqValueCap: number;
      handleBatch: (p: unknown) => Promise<void>;
    };
    internals.running = true;
    if (dlqCap) internals.dlqValueCap = dlqCap;
    internals.producer = { send: async (r: (typeof sent)[number]) => void sent.push(r) };
    const commits: unknown[] = [];
    internals.consumer = { commitOffsets: async (c: unknown) => void commits.push(c) };
    const messages = values.map((v, i) => ({ offset: String(i), value: v, key: null, timestamp: '0' }));
    await internals.handleBatch({
      batch: { topic: 't', partition: 0, messages, highWatermark: String(values.length) },
      heartbeat: async () => {},
      resolveOffset: () => {},
      isRunning: () => true,
      isStale: () => false,
      pause: () => () => {},
    });
    return { inserts, stored, aggs, marks, sent, commits, service };
  }
  const v = (o: unknown) => Buffer.from(JSON.stringify(o));
  const now = Date.now();

  it('isolates the rows ClickHouse refuses by halving, dead-letters them with a text-free reason, stores the rest', async () => {
    const ids = Array.from({ length: 16 }, (_, i) => (i === 5 || i === 11 ? `bad-${i}` : `ok-${i}`));
    const h = await poisonHarness(ids.map((id) => v({ request_id: id, ts: now, query: `refund ${id}` })));
    expect(h.stored.map((r) => r.request_id)).toEqual(ids.filter((id) => id.startsWith('ok')));
    const dead = h.sent.flatMap((s) => s.messages);
    expect(dead.map((d) => d.headers['evalgap-source-offset'])).toEqual(['5', '11']);
    expect(dead[0].headers['evalgap-error']).toBe('ClickHouse refused the row: CANNOT_PARSE_ESCAPE_SEQUENCE (code 25)');
    expect(dead[0].headers['evalgap-error']).not.toContain('secret');
    // a handful of inserts, not one per row: 1 + 2 levels per bad row at most
    expect(h.inserts.length).toBeLessThanOrEqual(1 + 2 * 2 * Math.ceil(Math.log2(16)));
    // aggregates count exactly the stored rows; then marks and the commit
    expect(h.aggs[0].rows.reduce((a, r) => a + r.requests, 0)).toBe(14);
    expect(h.marks).toEqual(['raw:15', 'agg:15']);
    expect(h.commits).toEqual([[{ topic: 't', partition: 0, offset: '16' }]]);
  });

  it('dead-letters deep nesting, oversized and out-of-window messages, and the stream goes on', async () => {
    const deep = Buffer.from('{"request_id":"d","ts":' + now + ',"query":"q","x":' + '['.repeat(50_000) + ']'.repeat(50_000) + '}');
    const h = await poisonHarness([
      deep,
      v({ request_id: 'old', ts: now - 400 * 86_400_000, query: 'refund' }),
      v({ request_id: 'future', ts: now + 30 * 86_400_000, query: 'refund' }),
      v({ request_id: 'secs', ts: Math.floor(now / 1000), query: 'refund' }),
      v({ request_id: 'fine', ts: now, query: 'refund' }),
    ]);
    expect(h.stored.map((r) => r.request_id)).toEqual(['fine']);
    const reasons = h.sent.flatMap((s) => s.messages.map((m) => m.headers['evalgap-error']));
    expect(reasons[0]).toBe('JSON nested deeper than the limit of 32');
    expect(reasons[1]).toMatch(/older than the retention of 90 days/);
    expect(reasons[2]).toMatch(/more than 24 h in the future/);
    expect(reasons[3]).toMatch(/looks like seconds/);
  });

  it('truncates a dead letter too large for the dead-letter topic, recording its size and sha256', async () => {
    const big = Buffer.from(JSON.stringify({ request_id: 'big', ts: now, query: 'x'.repeat(5000) }) + 'junk');
    const h = await poisonHarness([big, Buffer.from('not json'), Buffer.from('also not json')], 2048);
    const all = h.sent.flatMap((s) => s.messages);
    expect(all).toHaveLength(3);
    const d = all[0];
    expect(d.value!.length).toBe(2048);
    expect(d.headers['evalgap-truncated']).toBe('true');
    expect(d.headers['evalgap-original-bytes']).toBe(String(big.length));
    expect(d.headers['evalgap-original-sha256']).toBe(createHash('sha256').update(big).digest('hex'));
    // every produce request fits the topic: the big one goes alone
    for (const s of h.sent) expect(s.messages.reduce((a, m) => a + (m.value?.length ?? 0), 0)).toBeLessThanOrEqual(2048);
    expect(all[1].headers['evalgap-truncated']).toBeUndefined();
  });

  it('a consumer that crashed for good fails liveness and calls onFatal once', async () => {
    const { embedder, assigner } = await setup();
    const fatal: Error[] = [];
    const service = new IngestService(
      { kafka: {} as never, store: {} as Store, embedder, assigner, logger: pino({ level: 'silent' }), metrics: createIngestMetrics(false) },
      { topic: 't', dlqTopic: 'dlq', group: 'g', redactText: false, maxBatchMessages: 10, metricsPort: -1, onFatal: (e) => void fatal.push(e) },
    );
    const internals = service as unknown as { running: boolean; fatal: (e: Error) => void };
    internals.running = true;
    expect(service.health().live).toBe(true);
    internals.fatal(new RangeError('Maximum call stack size exceeded'));
    internals.fatal(new Error('again'));
    expect(fatal.map((e) => e.message)).toEqual(['Maximum call stack size exceeded']);
    const h = service.health();
    expect(h.live).toBe(false);
    expect(h.ready).toBe(false);
    expect(h.reasons[0]).toMatch(/^consumer crashed/);
  });
});

describe('processMessages: the largest accepted message', () => {
  it('sends at most EMBED_TEXT_CAP characters to the tokenizer and flags the row truncated', async () => {
    const { deps, embedder } = await setup();
    const query = 'refund '.repeat(30_000);
    const res = await processMessages([msg({ request_id: 'long', ts: TS, query })], { ...deps, decode: { maxBytes: 1_048_576 } });
    expect(res.rows[0].truncated).toBe(1);
    expect(res.rows[0].query).toBe(query); // stored as sent
    expect(embedder.calls[0][0].length).toBe(EMBED_TEXT_CAP);
  });
});

describe('IngestService readiness', () => {
  it('is not ready while messages wait and no batch has run for EVALGAP_STALL_SECONDS, nor while the broker or store fails', async () => {
    const { embedder, assigner } = await setup();
    const service = new IngestService(
      { kafka: {} as never, store: {} as Store, embedder, assigner, logger: pino({ level: 'silent' }), metrics: createIngestMetrics(false) },
      { topic: 't', dlqTopic: 'dlq', group: 'g', redactText: false, maxBatchMessages: 10, metricsPort: -1, stallSeconds: 60 },
    );
    const s = service as unknown as { running: boolean; waiting: number; lastProgress: number; brokerOk: boolean; brokerError: string; storeHealthy: boolean };
    s.running = true;
    s.waiting = 0;
    s.lastProgress = Date.now() - 3_600_000; // idle for an hour with nothing waiting: fine
    expect(service.health()).toMatchObject({ live: true, ready: true });
    s.waiting = 25;
    expect(service.health().ready).toBe(false);
    expect(service.health().reasons[0]).toMatch(/^no progress for \d+ s with 25 messages waiting$/);
    s.lastProgress = Date.now();
    expect(service.health().ready).toBe(true);
    s.brokerOk = false;
    s.brokerError = 'Connection error';
    expect(service.health()).toMatchObject({ live: true, ready: false, reasons: ['broker unreachable: Connection error'] });
    s.brokerOk = true;
    s.storeHealthy = false;
    expect(service.health()).toMatchObject({ live: true, ready: false, reasons: ['store failing'] });
  });
});
