/**
 * evalgap run in-process against the real broker, the embedded engine and the real model:
 * dead letters, aggregates, redelivery after a crash between insert and commit, two instances.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/config/logger.js';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import { createKafka, ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { processMessages } from '../../src/ingest/process.js';
import { IngestService, ingestOptionsFrom } from '../../src/ingest/service.js';
import { Store, aggToken, aggregateRows } from '../../src/store/store.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import type { Config } from '../../src/config/index.js';
import type { Embedder } from '../../src/embed/embedder.js';
import {
  fitSampleModel,
  groupCaughtUp,
  readTopic,
  realEmbedder,
  testConfig,
  testKafka,
  tmpDir,
  uniqueName,
  waitFor,
} from '../helpers/fixtures.js';

let cfg: Config;
let store: Store;
let embedder: Embedder;
let assigner: CoverageAssigner;
const kafka = testKafka();
const logger = createLogger('silent');

function service(topic: string, group: string, partitions = 1): IngestService {
  const c = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group } };
  return new IngestService(
    { kafka: createKafka(c.kafka, 'evalgap-test', logger), store, embedder, assigner, logger },
    ingestOptionsFrom(c, { metricsPort: -1, partitions, maxBatchMessages: 100 }),
  );
}

async function produce(topic: string, values: unknown[], key?: (v: unknown, i: number) => string) {
  const p = kafka.producer();
  await p.connect();
  await produceJson(p, topic, values, key);
  await p.disconnect();
}

/** Run one instance until the group has committed every offset of the topic, then stop it. */
async function consumeAll(topic: string, group: string): Promise<IngestService> {
  const s = service(topic, group);
  await s.start();
  try {
    await waitFor(() => groupCaughtUp(kafka, group, topic), 60_000, 'the group to commit every offset');
  } finally {
    await s.stop();
  }
  return s;
}

async function countFor(topic: string) {
  const [r] = await store.query<{ n: string; ids: string }>(
    `SELECT count() AS n, uniqExact(request_id) AS ids FROM ${store.t('requests')} WHERE kafka_topic = {t:String}`,
    { t: topic },
  );
  return { n: Number(r.n), ids: Number(r.ids) };
}

beforeAll(async () => {
  const dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  await fitSampleModel(path.join(dir, 'model'));
  embedder = await realEmbedder();
  assigner = new CoverageAssigner(loadCoverageModel(path.join(dir, 'model')));
  store = await Store.open(cfg.clickhouse);
});
afterAll(async () => store?.close());

describe('evalgap run (in-process)', () => {
  it('stores every valid message once and dead-letters every bad one with its reason, without stopping', async () => {
    const topic = uniqueName('evalgap.test.dlq');
    const group = uniqueName('g');
    const valid = sampleTraffic(60, { seed: 3, idPrefix: topic });
    const bad: (string | Buffer)[] = [
      'this is not json',
      JSON.stringify({ request_id: 'x1', query: 'no timestamp here' }),
      JSON.stringify({ request_id: 'x2', ts: '2026-11-24T10:00:00Z', query: '   ' }),
      JSON.stringify({ request_id: 'x3', ts: 'yesterday', query: 'bad time' }),
      JSON.stringify({ request_id: 'x4', ts: 1795000000000, query: 'wrong type', turn: 'two' }),
      Buffer.from([0xff, 0xfe, 0x00, 0x9c, 0x80]),
      JSON.stringify([1, 2, 3]),
    ];
    // bad messages interleaved with good ones
    const mixed: (unknown | string | Buffer)[] = [];
    valid.forEach((v, i) => {
      mixed.push(v);
      if (i % 9 === 4 && bad.length) mixed.push(bad.shift()!);
    });
    const badCount = mixed.length - valid.length;
    expect(badCount).toBe(7);
    await ensureTopics(kafka, [{ topic }]);
    await produce(topic, mixed);
    await consumeAll(topic, group);
    expect(await countFor(topic)).toEqual({ n: 60, ids: 60 });
    const dlq = await readTopic(kafka, `${topic}.dlq`, badCount);
    expect(dlq).toHaveLength(badCount);
    const reasons = dlq.map((m) => m.headers['evalgap-error']).join('\n');
    expect(reasons).toContain('invalid JSON');
    expect(reasons).toContain('ts: required');
    expect(reasons).toContain('query must not be empty');
    expect(reasons).toContain('ts: expected an ISO-8601 string or epoch milliseconds');
    expect(reasons).toContain('turn: Expected number, received string');
    expect(reasons).toContain('not valid UTF-8');
    expect(reasons).toContain('expected a JSON object');
    // original bytes and source offsets are kept
    const srcOffsets = new Set(dlq.map((m) => Number(m.headers['evalgap-source-offset'])));
    expect(srcOffsets.size).toBe(badCount);
    const garbage = dlq.find((m) => m.headers['evalgap-error'].includes('UTF-8'))!;
    expect(Buffer.compare(garbage.value!, Buffer.from([0xff, 0xfe, 0x00, 0x9c, 0x80]))).toBe(0);
    expect(dlq.every((m) => m.headers['evalgap-source-topic'] === topic)).toBe(true);
  });

  it('keeps the windowed aggregates equal to a count from the raw rows', async () => {
    const topic = uniqueName('evalgap.test.agg');
    const group = uniqueName('g');
    // two hours of traffic so rows fall in many 30-second buckets
    await ensureTopics(kafka, [{ topic }]);
    await produce(topic, sampleTraffic(150, { seed: 5, stepMs: 48_000, start: Math.floor(Date.now() / 86_400_000) * 86_400_000 - 3_600_000, idPrefix: topic }));
    await consumeAll(topic, group);
    const raw = await store.query(
      `SELECT toDateTime(toStartOfInterval(ts, INTERVAL 30 SECOND), 'UTC') AS bucket, agent, model_version, cluster,
              count() AS requests, countIf(covered = 0) AS uncovered, countIf(escalated = 1) AS escalated,
              ${Array.from({ length: 9 }, (_, b) => `countIf(coverage_band = ${b}) AS band${b}`).join(', ')}
       FROM ${store.t('requests')} GROUP BY bucket, agent, model_version, cluster
       ORDER BY bucket, agent, model_version, cluster`,
    );
    const agg = await store.query(
      `SELECT bucket, agent, model_version, cluster,
              sum(requests) AS requests, sum(uncovered) AS uncovered, sum(escalated) AS escalated,
              ${Array.from({ length: 9 }, (_, b) => `sum(band${b}) AS band${b}`).join(', ')}
       FROM ${store.t('coverage_5m')} GROUP BY bucket, agent, model_version, cluster
       ORDER BY bucket, agent, model_version, cluster`,
    );
    expect(raw.length).toBeGreaterThan(20);
    expect(agg).toEqual(raw);
    // every row has a coverage depth band (the sample model has bands), uncovered exactly below the threshold's band
    const [bad] = await store.query<{ n: string; all: string }>(
      `SELECT countIf(coverage_band < 0 OR (coverage_band < 5) != (covered = 0)) AS n, count() AS all FROM ${store.t('requests')}`,
    );
    expect(Number(bad.all)).toBeGreaterThan(100);
    expect(Number(bad.n)).toBe(0);
  });

  it('skips messages whose rows were stored before a crash that prevented the commit', async () => {
    const topic = uniqueName('evalgap.test.redeliver');
    const group = uniqueName('g');
    const msgs = sampleTraffic(80, { seed: 8, idPrefix: topic });
    await ensureTopics(kafka, [{ topic }]);
    await produce(topic, msgs);
    // a previous instance stored offsets 0..29 and died before committing them
    const prev = await processMessages(
      msgs.slice(0, 30).map((m, i) => ({ topic, partition: 0, offset: String(i), value: Buffer.from(JSON.stringify(m)) })),
      { embedder, assigner, redactText: false },
    );
    await store.insertRequests(prev.rows, `${topic}:0:0-29`);
    await store.setProgress(topic, 0, 'raw', 29n);
    await store.insertAggregates(aggregateRows(prev.rows), aggToken(topic, 0, -1n, 29n));
    await store.setProgress(topic, 0, 'agg', 29n);
    const s = await consumeAll(topic, group);
    expect(await countFor(topic)).toEqual({ n: 80, ids: 80 });
    const skipped = (await s.metrics.skipped.get()).values.reduce((a, v) => a + v.value, 0);
    expect(skipped).toBe(30);
  });

  it('splits partitions between two instances of one group with no loss or duplicates', async () => {
    const topic = uniqueName('evalgap.test.group');
    const group = uniqueName('g');
    await ensureTopics(kafka, [{ topic, numPartitions: 4 }]);
    const a = service(topic, group, 4);
    const b = service(topic, group, 4);
    await a.start();
    await b.start();
    try {
      // both members are in the group before the traffic arrives
      await waitFor(async () => a.assigned.size + b.assigned.size >= 4 && b.assigned.size > 0, 60_000, 'both instances to get partitions');
      await produce(topic, sampleTraffic(400, { seed: 9, idPrefix: topic }), (_, i) => `session-${i % 40}`);
      await waitFor(() => groupCaughtUp(kafka, group, topic), 90_000, 'the group to commit every offset');
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    expect(await countFor(topic)).toEqual({ n: 400, ids: 400 });
    const stored = async (s: IngestService) => (await s.metrics.stored.get()).values.reduce((x, v) => x + v.value, 0);
    const sa = await stored(a);
    const sb = await stored(b);
    expect(sa).toBeGreaterThan(0);
    expect(sb).toBeGreaterThan(0);
    expect(sa + sb).toBe(400);
  });
});
