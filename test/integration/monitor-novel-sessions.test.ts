/**
 * The novel_sessions rule (src/monitor/session-novel.ts) on the real monitor backtest path
 * (evalgap monitor --backtest: store → windows → closed sessions → rules → lifecycle → outbox
 * schema) over session traffic embedded and assigned by the real model, stored in the real engine:
 * 36 hours at about 0.05 requests/s of sessions of 1–30 turns that repeat one topic (exact retries
 * and paraphrases). No shift: the rule runs (it has a reference after its 24-hour warm-up) and
 * notifies nothing. From hour 26, a third of the sessions on topics the eval set never covered:
 * the rule fires, warning, naming clusters.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBacktest } from '../../src/alert/backtest.js';
import { contextFromManifest } from '../../src/alert/runner.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { CoverageAssigner, loadCoverageModel, type Manifest } from '../../src/coverage/model.js';
import { composeEvaluators, createEvaluateWindow, novelSessionRules, type EvaluateWindow } from '../../src/monitor/index.js';
import { rng } from '../../src/monitor/stats.js';
import { MonitorStore } from '../../src/store/monitor.js';
import { Store } from '../../src/store/store.js';
import { fitSampleModel, realEmbedder, testConfig, tmpDir } from '../helpers/fixtures.js';
import { assignRows, monitorConfig, storeRows } from '../helpers/monitor.js';

const HOUR = 3_600_000;
/** whole hours: the stream ends 2 hours ago (inside the tables' TTL, every window closed) */
const END = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;
const START = END - 36 * HOUR;
const CHANGE = START + 26 * HOUR;

let manifest: Manifest;
let modelDir: string;
let cfg: ReturnType<typeof testConfig>;
const stores: Store[] = [];

/**
 * Session traffic from the sample generator's phrasings, grouped by topic; a share `novel` of the
 * sessions from `change` on the topics the eval set never covered.
 */
function sessionTraffic(seed: number, novel: number, change: number, from = START) {
  const pool = new Map<string, ReturnType<typeof sampleTraffic>>();
  for (const r of sampleTraffic(4000, { seed, surpriseShare: 0 })) pool.set(r.topic_hint, [...(pool.get(r.topic_hint) ?? []), r]);
  const topics = [...pool.keys()].sort();
  const surprise = new Map<string, ReturnType<typeof sampleTraffic>>();
  if (novel > 0) for (const r of sampleTraffic(2000, { seed, surpriseShare: 1 })) surprise.set(r.topic_hint, [...(surprise.get(r.topic_hint) ?? []), r]);
  const novelTopics = [...surprise.keys()].sort();
  const r = rng(seed);
  const phase = topics.map(() => r());
  const out: Record<string, unknown>[] = [];
  let t = from;
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
    const texts = novel > 0 && t >= change && r() < novel ? surprise.get(novelTopics[Math.floor(r() * novelTopics.length)])! : pool.get(topics[j])!;
    let q = texts[Math.floor(r() * texts.length)];
    let L = 1;
    while (L < 30 && r() < 0.85) L++;
    let ts = t;
    const sid = `sess-${seed}-${k++}`;
    for (let turn = 1; turn <= L; turn++) {
      if (turn > 1) {
        ts += (5 + r() * 85) * 1000;
        if (r() > 0.3) q = texts[Math.floor(r() * texts.length)]; // a paraphrase, else an exact retry
      }
      out.push({ request_id: `${sid}-${turn}`, ts: new Date(ts).toISOString(), query: q.query, agent, session_id: sid, turn, escalated: q.escalated, outcome: q.outcome });
    }
  }
  return out;
}

beforeAll(async () => {
  const dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  modelDir = path.join(dir, 'model');
  manifest = await fitSampleModel(modelDir);
}, 600_000);
afterAll(async () => {
  for (const s of stores) await s.close();
});

/** stores the stream in a fresh database and replays it through the backtest path with the core rules and novel_sessions */
async function replay(db: string, novel: number) {
  const st = await Store.open({ ...cfg.clickhouse, database: `${db}${process.pid}` });
  stores.push(st);
  const embedder = await realEmbedder();
  const assigner = new CoverageAssigner(loadCoverageModel(modelDir));
  const rows = await assignRows(sessionTraffic(41, novel, CHANGE), embedder, assigner);
  for (let i = 0; i < rows.length; i += 2000) await storeRows(st, rows.slice(i, i + 2000));
  const inner = composeEvaluators(createEvaluateWindow({ output: 'changes' }), [novelSessionRules({ output: 'changes' })]);
  let ran = 0;
  let maxStat = 0;
  const evaluate: EvaluateWindow = (s, w, c) => {
    const ev = inner(s, w, c);
    const ns = (ev.state as { sets?: { novel_sessions?: { h?: number; scopes: Record<string, { s: number[] }> } } }).sets?.novel_sessions;
    if (ns?.h !== undefined) ran++;
    maxStat = Math.max(maxStat, ...(ns?.scopes['*']?.s ?? [0]));
    return ev;
  };
  const res = await runBacktest(new MonitorStore(st), evaluate, contextFromManifest(manifest), monitorConfig(null, '', { windowSeconds: 30 }), new Date(START).toISOString(), new Date(END).toISOString());
  return { res, ran, maxStat };
}

describe('novel_sessions on the backtest path (real engine and model)', () => {
  it('36 hours at 0.05 requests/s without a shift: the rule runs and notifies nothing', async () => {
    const { res, ran } = await replay('nsnone', 0);
    expect(ran).toBeGreaterThan(0);
    expect(res.notifications.filter((n) => n.alert.rule === 'novel_sessions').map((n) => `${n.kind} ${n.alert.agent}: ${n.alert.summary}`)).toEqual([]);
  }, 900_000);

  it('a third of the sessions moving to untested topics after 26 hours of history: the rule fires after the change', async () => {
    const { res, maxStat } = await replay('nsshift', 1 / 3);
    const hit = res.notifications.filter((n) => n.kind === 'firing' && n.alert.rule === 'novel_sessions');
    expect(hit.length, `largest statistic ${maxStat}; ${res.notifications.map((n) => `${n.kind} ${n.alert.rule} ${n.alert.agent}`).join('; ')}`).toBeGreaterThan(0);
    expect(Date.parse(hit[0].alert.onset)).toBeGreaterThanOrEqual(CHANGE);
    expect(hit[0].alert.severity).toBe('warning');
    expect(hit[0].alert.summary).toMatch(/move onto topics the eval set does not test/);
  }, 900_000);
});
