/**
 * `evalgap run` on a machine too slow for its session timeout (issue 18, defect 4), in-process
 * against the real broker, engine and model. The embedder is the real one, slowed artificially in
 * this test only (a wrapper injected through IngestDeps; nothing in the production path): every
 * call takes longer than the group's session timeout. Heartbeats must keep flowing meanwhile (no
 * eviction, every row stored once); and when the event loop itself is held past the timeout, the
 * eviction that follows is logged with its cause and still loses and duplicates nothing.
 */
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import type { Embedder } from '../../src/embed/embedder.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import type { Config } from '../../src/config/index.js';
import { createKafka, ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { IngestService, ingestOptionsFrom } from '../../src/ingest/service.js';
import { Store } from '../../src/store/store.js';
import { capMs, fitSampleModel, groupCaughtUp, realEmbedder, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

let cfg: Config;
let store: Store;
let embedder: Embedder;
let assigner: CoverageAssigner;
const kafka = testKafka();
/** the broker's group.min.session.timeout.ms (Kafka's default): the shortest session a member may have */
const SESSION_MS = 6000;

/** The real embedder, with each call made to last `delayMs` longer; `block` holds the event loop instead. */
function slowed(e: Embedder, delayMs: (call: number, texts: number) => number, block = false): Embedder & { calls: number } {
  const s = {
    calls: 0,
    modelName: e.modelName,
    modelChecksum: e.modelChecksum,
    precision: e.precision,
    dim: e.dim,
    maxTokens: e.maxTokens,
    async embed(texts: readonly string[]) {
      const d = delayMs(s.calls++, texts.length);
      if (block) {
        const until = Date.now() + d;
        while (Date.now() < until) {
          /* holding the event loop, as a synchronous pass would */
        }
      } else await new Promise((r) => setTimeout(r, d));
      return e.embed(texts);
    },
  };
  return s;
}

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const out = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, out), lines };
}

/**
 * Three partitions, so that both members of the rebalance test get some.
 */
async function produced(n: number, seed: number) {
  const topic = uniqueName('evalgap.test.slow');
  await ensureTopics(kafka, [{ topic, numPartitions: 3 }]);
  const p = kafka.producer();
  await p.connect();
  await produceJson(p, topic, sampleTraffic(n, { seed, idPrefix: topic }), (_, i) => `k${i % 7}`);
  await p.disconnect();
  return topic;
}

async function countFor(topic: string) {
  const [r] = await store.query<{ n: string; ids: string }>(
    `SELECT count() AS n, uniqExact(request_id) AS ids FROM ${store.t('requests')} WHERE kafka_topic = {t:String}`,
    { t: topic },
  );
  return { n: Number(r.n), ids: Number(r.ids) };
}

function service(topic: string, group: string, e: Embedder, logger: pino.Logger, maxBatchMessages = 100): IngestService {
  const c = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group } };
  return new IngestService(
    { kafka: createKafka(c.kafka, 'evalgap-test', logger), store, embedder: e, assigner, logger },
    ingestOptionsFrom(c, { metricsPort: -1, maxBatchMessages, sessionTimeout: SESSION_MS }),
  );
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

describe('a consumer slower than its session timeout', () => {
  it('stays in its group through embedding slower than the session timeout and through a rebalance: no eviction, every row once', async () => {
    const N = 600;
    const topic = await produced(N, 41);
    const group = uniqueName('g');
    // 90 ms per text on top of the real cost: 1,024 texts would take 92 s, far beyond the session
    // (6 s) and rebalance (10 s) timeouts. A second member joins while the first is embedding:
    // the first must hear of the rebalance and re-join within the rebalance timeout.
    const slow = slowed(embedder, (_call, texts) => 90 * texts);
    const a = capture();
    const b = capture();
    const first = service(topic, group, slow, a.logger, 1000);
    const second = service(topic, group, slow, b.logger, 1000);
    await first.start();
    try {
      await waitFor(async () => slow.calls >= 2, 60_000, 'the first member to be embedding');
      await second.start();
      await waitFor(() => groupCaughtUp(kafka, group, topic), 240_000, 'the slowed members to commit every offset');
    } finally {
      await Promise.all([first.stop(), second.stop()]);
    }
    const lines = [...a.lines, ...b.lines];
    const members = (l: Record<string, unknown>[]) => new Set(l.filter((x) => x.msg === 'joined consumer group').map((x) => x.memberId));
    expect(second.assigned.size, 'the second member never got a partition').toBeGreaterThan(0);
    expect(lines.filter((l) => /evicted|not aware of this member/i.test(String(l.msg))).map((l) => l.msg)).toEqual([]);
    expect(first.evictions + second.evictions).toBe(0);
    expect(members(a.lines).size).toBe(1);
    expect(members(b.lines).size).toBe(1);
    // the calls were sized to the measured speed (about 1 s each), not 1,024 texts
    expect(first.sizer.size()).toBeLessThan(64);
    expect(await countFor(topic)).toEqual({ n: N, ids: N });
  }, capMs(300_000));

  it('names the cause when the member is evicted anyway (event loop held past the timeout), and loses nothing', async () => {
    const N = 200;
    const topic = await produced(N, 42);
    const group = uniqueName('g');
    // the first call holds the event loop for 2 session timeouts: no heartbeat can leave meanwhile
    const stuck = slowed(embedder, (call) => (call === 0 ? 2 * SESSION_MS : 0), true);
    const { logger, lines } = capture();
    const s = service(topic, group, stuck, logger);
    await s.start();
    try {
      await waitFor(() => groupCaughtUp(kafka, group, topic), 180_000, 'the consumer to re-join and commit every offset');
    } finally {
      await s.stop();
    }
    expect(s.evictions).toBe(1);
    const warn = lines.find((l) => String(l.msg).startsWith('evicted from consumer group'));
    expect(warn, JSON.stringify(lines.map((l) => l.msg))).toBeDefined();
    expect(warn!.level).toBe(40);
    expect(String(warn!.msg)).toMatch(/session timeout 6 s/);
    expect(String(warn!.msg)).toMatch(/EVALGAP_SESSION_TIMEOUT_MS/);
    expect(Number(warn!.longestHeartbeatGapMs)).toBeGreaterThanOrEqual(SESSION_MS);
    expect(Number((await s.metrics.evictions.get()).values[0]?.value ?? 0)).toBe(1);
    expect(await countFor(topic)).toEqual({ n: N, ids: N });
  }, capMs(300_000));
});
