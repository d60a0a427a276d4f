/**
 * evalgap compare against the real broker, the embedded engine and the real model: messages
 * carrying `version` go through `evalgap run`'s pipeline (IngestService), the per-version
 * aggregates equal the raw rows, and a candidate that escalates every `returns` question is found
 * worse in the clusters holding them — in-process and through the built CLI. (The canary guard, run
 * by the monitor: monitor-guard.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import { createKafka, ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { IngestService, ingestOptionsFrom } from '../../src/ingest/service.js';
import { Store } from '../../src/store/store.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { compareFromStore, comparePairedFromStore } from '../../src/cli/compare.js';
import { fitSampleModel, groupCaughtUp, realEmbedder, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
let cfg: Config;
let store: Store;
let dataDir: string;
let dir: string;
const kafka = testKafka();
const logger = createLogger('silent');
const start = Math.floor(Date.now() / 60_000) * 60_000 - 3 * 3_600_000;
const SESSIONS_V2 = (s: number) => s % 2 === 1;
const N = 1500;
const SHADOW = 300;
const UNVERSIONED = Array.from({ length: N }, (_, i) => i).filter((i) => i % 97 === 5).length;

beforeAll(async () => {
  dir = tmpDir();
  dataDir = path.join(dir, 'chdb');
  cfg = testConfig(dataDir);
  await fitSampleModel(path.join(dir, 'model'));
  const embedder = await realEmbedder();
  const assigner = new CoverageAssigner(loadCoverageModel(path.join(dir, 'model')));
  store = await Store.open(cfg.clickhouse);
  const topic = uniqueName('evalgap.test.compare');
  const group = uniqueName('g');
  // sessions of 2 requests, every other one served by v2, which escalates every `returns` question
  // two of the sample's topics (each spreads over several of the model's clusters)
  const two = sampleTraffic(4 * N, { seed: 21, surpriseShare: 0, stepMs: 5_000, start, idPrefix: topic })
    .filter((m) => m.topic_hint === 'returns' || m.topic_hint === 'shipping')
    .slice(0, N);
  expect(two).toHaveLength(N);
  const msgs = two.map((m, i) => {
    const { topic_hint, ...rest } = m;
    const s = Math.floor(i / 2);
    rest.ts = new Date(start + i * 5_000).toISOString();
    rest.session_id = `${topic}-s${s}`;
    const version = i % 97 === 5 ? undefined : SESSIONS_V2(s) ? 'v2' : 'v1';
    const regress = version === 'v2' && topic_hint === 'returns';
    return { ...rest, ...(version ? { version } : {}), ...(regress ? { escalated: true, outcome: 'escalated' } : {}) };
  });
  // a shadow version s2 answers the first SHADOW requests v1 served (same request_id): it escalates every
  // `returns` question; elsewhere it agrees with v1 except for 1 in 10 pairs whose escalation is flipped
  const shadow = two
    .map((m, i) => ({ m, v: msgs[i] }))
    .filter((x) => x.v.version === 'v1')
    .slice(0, SHADOW)
    .map(({ m, v }, j) => {
      const esc = m.topic_hint === 'returns' ? true : j % 10 === 3 ? !v.escalated : Boolean(v.escalated);
      return { ...v, version: 's2', escalated: esc, outcome: esc ? 'escalated' : v.outcome === 'escalated' ? 'ok' : v.outcome };
    });
  msgs.push(...shadow);
  await ensureTopics(kafka, [{ topic }]);
  const p = kafka.producer();
  await p.connect();
  await produceJson(p, topic, msgs);
  await p.disconnect();
  const c = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group } };
  const svc = new IngestService(
    { kafka: createKafka(c.kafka, 'evalgap-test', logger), store, embedder, assigner, logger },
    ingestOptionsFrom(c, { metricsPort: -1, partitions: 1, maxBatchMessages: 100 }),
  );
  await svc.start();
  try {
    await waitFor(() => groupCaughtUp(kafka, group, topic), 120_000, 'the group to commit every offset');
  } finally {
    await svc.stop();
  }
}, 300_000);
afterAll(async () => store?.close());

describe('evalgap compare', () => {
  it('stores each row with its version, and the per-version aggregates equal the raw rows', async () => {
    const raw = await store.query<{ version: string; n: string; e: string }>(
      `SELECT version, toString(count()) AS n, toString(countIf(escalated = 1)) AS e FROM ${store.t('requests')} GROUP BY version ORDER BY version`,
    );
    const agg = await store.query<{ version: string; n: string; e: string }>(
      `SELECT version, toString(sum(requests)) AS n, toString(sum(escalated)) AS e FROM ${store.t('coverage_5m')} GROUP BY version ORDER BY version`,
    );
    expect(raw.map((r) => r.version)).toEqual(['', 's2', 'v1', 'v2']);
    expect(raw.reduce((a, r) => a + Number(r.n), 0)).toBe(N + SHADOW);
    expect(Number(raw[0].n)).toBe(UNVERSIONED);
    expect(agg).toEqual(raw);
  });

  it('finds the candidate worse in the clusters of the regressed topic, and only there', async () => {
    const rep = await compareFromStore(store, {
      baseline: 'v1',
      candidate: 'v2',
      since: new Date(start - 60_000),
      until: new Date(),
      agent: '',
      alpha: 0.05,
      outcomes: ['escalated', 'failed'],
    });
    const res = rep.result;
    expect(rep.slow.source).toBe('baseline p95');
    expect(res.tests).toBe((res.segments.length + 1) * 2 + res.segments.length);
    expect(res.worse.length).toBeGreaterThan(0);
    // each worse cluster is one of returns: its candidate rows there are escalated `returns` questions
    for (const c of res.worse) {
      const [r] = await store.query<{ n: string; esc: string }>(
        `SELECT toString(count()) AS n, toString(countIf(escalated = 1)) AS esc FROM ${store.t('requests')}
         WHERE version = 'v2' AND covered = 1 AND cluster = {c:Int32}`,
        { c },
      );
      expect(Number(r.esc) / Number(r.n)).toBeGreaterThan(0.8);
    }
    // units are sessions: 750 sessions of 2 requests, half on v2 (a request without a version is in neither)
    expect(res.overall.units.candidate).toBe(375);
    expect(res.overall.units.baseline).toBe(375);
    expect(res.overall.requests.baseline + res.overall.requests.candidate).toBe(N - UNVERSIONED);
    // no other outcome or cluster is called worse
    expect(res.segments.filter((s) => s.verdict === 'worse').every((s) => s.outcomes.filter((o) => o.verdict === 'worse').every((o) => o.outcome === 'escalated'))).toBe(true);
  });

  it('prints the same through the CLI, and says which versions exist when one has no rows', async () => {
    await store.close();
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, 'compare', '--data-dir', dataDir, '--since', new Date(start - 60_000).toISOString(), ...args], {
        encoding: 'utf8',
        env: { ...process.env, EVALGAP_LOG_LEVEL: 'warn' },
      });
    const j = run('--baseline', 'v1', '--candidate', 'v2', '--outcomes', 'escalated,failed', '--format', 'json');
    expect(j.stderr).toBe('');
    expect(j.status).toBe(0);
    const rep = JSON.parse(j.stdout);
    expect(rep.result.worse.length).toBeGreaterThan(0);
    const t = run('--baseline', 'v1', '--candidate', 'v2', '--outcomes', 'escalated,failed');
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(/anytime-valid/);
    expect(t.stdout).toMatch(/escalated .* worse/);
    // latency was recorded but slow is not among the outcomes asked for
    expect(t.stdout).toMatch(/^slow: not compared \(--outcomes\)$/m);
    const missing = run('--baseline', 'v1', '--candidate', 'v9');
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/no requests of version "v9".*versions seen \(most requests first\): v1 \(\d+\), v2 \(\d+\), s2 \(300\), '' \(no version\)/);
    store = await Store.open(cfg.clickhouse);
  });

  it('--paired: finds the shadow worse on the clusters of the regressed topic from its pairs alone', async () => {
    const o = { baseline: 'v1', candidate: 's2', since: new Date(start - 60_000), until: new Date(), agent: '', alpha: 0.05 };
    const rep = await comparePairedFromStore(store, o);
    const res = rep.result;
    expect(res.overall.pairs).toBe(SHADOW);
    expect(res.tests).toBe((res.segments.length + 1) * 3);
    expect(res.worse.length).toBeGreaterThan(0);
    for (const c of res.worse) {
      const seg = res.segments.find((s) => s.cluster === c)!;
      const esc = seg.outcomes.find((x) => x.outcome === 'escalated')!;
      expect(esc.verdict).toBe('worse');
      expect(esc.interval.lo).toBeGreaterThan(0.5);
      expect(esc.candidateOnly).toBeGreaterThan(esc.baselineOnly);
    }
    // nothing is called better
    expect(res.better).toEqual([]);
    // without a shadow, there are no pairs
    await expect(comparePairedFromStore(store, { ...o, candidate: 'v2' })).rejects.toThrow(/no request_id is stored under both/);
  });
});
