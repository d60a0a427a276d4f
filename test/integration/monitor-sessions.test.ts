/**
 * The real monitor backtest path (evalgap monitor --backtest: store → windows → closed sessions →
 * the default rules → lifecycle) on session traffic embedded and assigned by the real model:
 * 36 hours at about 0.05 requests/s of sessions of 1–30 turns 5–90 s apart that repeat one topic
 * (exact retries and paraphrases), two agents 70/30, a daily topic cycle. No shift: nothing above
 * info is notified, and the rules were given the closed sessions the store holds.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBacktest } from '../../src/alert/backtest.js';
import { contextFromManifest } from '../../src/alert/runner.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { CoverageAssigner, loadCoverageModel, type Manifest } from '../../src/coverage/model.js';
import { createEvaluateWindow } from '../../src/monitor/index.js';
import { rng } from '../../src/monitor/stats.js';
import type { WindowCounts } from '../../src/monitor/types.js';
import { MonitorStore } from '../../src/store/monitor.js';
import { Store, type RequestRow } from '../../src/store/store.js';
import { fitSampleModel, realEmbedder, testConfig, tmpDir } from '../helpers/fixtures.js';
import { assignRows, monitorConfig, storeRows } from '../helpers/monitor.js';

const HOUR = 3_600_000;
/** whole hours: the stream ends 2 hours ago (inside the tables' TTL, every window closed) */
const END = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;
const START = END - 36 * HOUR;

let manifest: Manifest;
let store: Store;
let cfg: ReturnType<typeof testConfig>;
const extra: Store[] = [];
let sessionsMade = 0;
let requestsMade = 0;

/** Session traffic from the sample generator's phrasings, grouped by topic. */
function sessionTraffic(seed: number) {
  const pool = new Map<string, ReturnType<typeof sampleTraffic>>();
  for (const r of sampleTraffic(4000, { seed, surpriseShare: 0 })) pool.set(r.topic_hint, [...(pool.get(r.topic_hint) ?? []), r]);
  const topics = [...pool.keys()].sort();
  const r = rng(seed);
  const phase = topics.map(() => r());
  const out: Record<string, unknown>[] = [];
  let t = START;
  let k = 0;
  while (t < END - HOUR) {
    const h = ((t / HOUR) % 24) / 24;
    const rate = (0.05 / 6.6) * (1 + 0.66 * Math.cos(2 * Math.PI * (h - 0.6)));
    t += (-Math.log(Math.max(1e-12, r())) / rate) * 1000;
    const agent = r() < 0.7 ? 'support-bot' : 'checkout-assistant';
    const w = topics.map((_, j) => 1 + 0.5 * Math.sin(2 * Math.PI * (h + phase[j])));
    let u = r() * w.reduce((a, b) => a + b, 0);
    let j = 0;
    while ((u -= w[j]) > 0 && j < w.length - 1) j++;
    const texts = pool.get(topics[j])!;
    let q = texts[Math.floor(r() * texts.length)];
    let L = 1;
    while (L < 30 && r() < 0.85) L++;
    let ts = t;
    const sid = `sess-${seed}-${k++}`;
    sessionsMade++;
    for (let turn = 1; turn <= L; turn++) {
      if (turn > 1) {
        ts += (5 + r() * 85) * 1000;
        if (r() > 0.3) q = texts[Math.floor(r() * texts.length)]; // a paraphrase, else an exact retry
      }
      out.push({ request_id: `${sid}-${turn}`, ts: new Date(ts).toISOString(), query: q.query, agent, session_id: sid, turn, escalated: q.escalated, outcome: q.outcome });
      requestsMade++;
    }
  }
  return out;
}

beforeAll(async () => {
  const dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  manifest = await fitSampleModel(path.join(dir, 'model'));
  const embedder = await realEmbedder();
  const assigner = new CoverageAssigner(loadCoverageModel(path.join(dir, 'model')));
  store = await Store.open({ ...cfg.clickhouse, database: `monsess${process.pid}` });
  const rows = await assignRows(sessionTraffic(21), embedder, assigner);
  for (let i = 0; i < rows.length; i += 2000) await storeRows(store, rows.slice(i, i + 2000));
}, 600_000);
afterAll(async () => {
  for (const s of extra) await s.close();
  await store?.close();
});

describe('monitor --backtest on session traffic (real engine and model)', () => {
  it('36 hours at 0.05 requests/s without a shift notify nothing above info; the rules see the closed sessions', async () => {
    const seen: WindowCounts[][] = [];
    const evaluate = createEvaluateWindow({ output: 'changes' });
    const mc = monitorConfig(null, '', { windowSeconds: 30 });
    const res = await runBacktest(
      new MonitorStore(store),
      (s, w, c) => {
        seen.push(w);
        return evaluate(s, w, c);
      },
      contextFromManifest(manifest),
      mc,
      new Date(START).toISOString(),
      new Date(END).toISOString(),
    );
    const firing = res.notifications.filter((n) => n.kind === 'firing');
    expect(firing.filter((n) => n.alert.severity !== 'info').map((n) => `${n.alert.rule} ${n.alert.agent}: ${n.alert.summary}`)).toEqual([]);
    // the fixed-rate rule reports a standing fact once per scope at most
    const cal = firing.filter((n) => n.alert.rule === 'uncovered_vs_calibrated');
    expect(new Set(cal.map((n) => n.alert.agent)).size).toBe(cal.length);
    // every stored request was counted, and (almost) every session reached the rules whole
    const counted = seen.flat().reduce((a, w) => a + w.clusters.reduce((b, c) => b + c.requests, 0), 0);
    expect(counted).toBe(requestsMade);
    const closed = new Set(seen.flat().flatMap((w) => (w.closedSessions ?? []).map((c) => `${w.agent}|${c.session}`)));
    expect(closed.size).toBeGreaterThan(0.97 * sessionsMade);
    const turns = seen.flat().reduce((a, w) => a + (w.closedSessions ?? []).reduce((b, c) => b + c.requests, 0), 0);
    expect(turns).toBe(requestsMade);
  }, 600_000);

  it('closedSessions: a session is read whole once, in the window where it went idle; requests without a session id are sessions of one', async () => {
    // the same data directory (one per process), another database
    const st = await Store.open({ ...cfg.clickhouse, database: `monclosed${process.pid}` });
    extra.push(st);
    {
      const T = END - HOUR;
      const row = (i: number, sid: string, t: number, cluster: number): RequestRow => ({ request_id: `r${i}`, ts: new Date(t).toISOString(), agent: 'a', session_id: sid, turn: i, query: 'q', query_redacted: 0, truncated: 0, cluster, similarity: 0.5, coverage: 0.5, covered: 1, coverage_band: 8, escalated: i === 3 ? 1 : 0, outcome: 'ok', latency_ms: null, cost_usd: null, tools: [], metadata: '{}', model_version: 'm', kafka_topic: 't', kafka_partition: 0, kafka_offset: String(i) });
      await storeRows(st, [row(1, 's1', T, 1), row(2, 's1', T + 20_000, 1), row(3, 's1', T + 40_000, 2), row(4, 's2', T + 60_000, 1), row(5, '', T + 70_000, 3)]);
      const ms = new MonitorStore(st);
      const iso = (t: number) => new Date(t).toISOString();
      // s1 goes idle at T + 40 s + 300 s: not yet closed in the first 5 minutes
      const early = await ms.closedSessions(iso(T), iso(T + 300_000), 300);
      expect(early.map((r) => [r.session, r.cluster, r.requests])).toEqual([['', 3, 1]]);
      const later = await ms.closedSessions(iso(T + 300_000), iso(T + 600_000), 300);
      const key = (r: { session: string; cluster: number; requests: number; escalated: number }) => `${r.session}:${r.cluster}:${r.requests}:${r.escalated}`;
      expect(later.map(key).sort()).toEqual(['s1:1:2:0', 's1:2:1:1', 's2:1:1:0']);
      expect(later.find((r) => r.session === 's1')!.closedAt).toBe(iso(T + 340_000));
    }
  });
});
