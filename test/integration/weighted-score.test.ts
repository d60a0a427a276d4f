/**
 * The weighted_score rule through the real path of `evalgap monitor --backtest` (src/cli/monitor.ts:
 * the eval pass rates read from the stored eval run, the rule set composed with the core rules, the
 * store's windows and closed sessions, the alert lifecycle), on session traffic embedded and
 * assigned by the real model and stored in the real engine. The eval run fails 70% of the cases of
 * one topic ("returns"); after 6 hours production moves to that topic.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMonitorConfig } from '../../src/alert/config.js';
import { resultsCommand } from '../../src/cli/estimate.js';
import { monitorBacktest } from '../../src/cli/monitor.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import { rng } from '../../src/monitor/stats.js';
import { Store } from '../../src/store/store.js';
import { fitSampleModel, realEmbedder, testConfig, tmpDir, uniqueName } from '../helpers/fixtures.js';
import { assignRows, storeRows } from '../helpers/monitor.js';

const HOUR = 3_600_000;
const END = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;
const START = END - 8 * HOUR;
const SHIFT = START + 6 * HOUR;
const BAD = 'returns';

let dir: string;
let cfg: ReturnType<typeof testConfig>;

/** sessions of 1–5 turns on one topic, 3 requests a minute; topics uniform, then 70% "returns" from SHIFT */
function traffic(seed: number) {
  const pool = new Map<string, ReturnType<typeof sampleTraffic>>();
  for (const r of sampleTraffic(3000, { seed, surpriseShare: 0 })) pool.set(r.topic_hint, [...(pool.get(r.topic_hint) ?? []), r]);
  const topics = [...pool.keys()].sort();
  const r = rng(seed);
  const out: Record<string, unknown>[] = [];
  let t = START;
  let k = 0;
  while (t < END - 10 * 60_000) {
    const topic = t >= SHIFT && r() < 0.7 ? BAD : topics[Math.floor(r() * topics.length)];
    const texts = pool.get(topic)!;
    const sid = `ws-${seed}-${k++}`;
    const turns = 1 + Math.floor(r() * 5);
    for (let i = 0; i < turns; i++) {
      const q = texts[Math.floor(r() * texts.length)];
      out.push({ request_id: `${sid}-${i}`, ts: new Date(t + i * 20_000).toISOString(), query: q.query, agent: 'support-bot', session_id: sid, turn: i + 1, escalated: false, outcome: 'ok' });
    }
    t += turns * 20_000;
  }
  return out;
}

beforeAll(async () => {
  dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  await fitSampleModel(path.join(dir, 'model'));
  const model = loadCoverageModel(path.join(dir, 'model'));
  // the eval run: the "returns" cases fail 7 in 10, the others 1 in 20
  const f = path.join(dir, 'results.jsonl');
  fs.writeFileSync(
    f,
    model.cases
      .map((c, i) => JSON.stringify({ id: c.id, passed: c.id.startsWith(`${BAD}-`) ? i % 10 >= 7 : i % 20 !== 0 }))
      .join('\n') + '\n',
  );
  await resultsCommand(cfg, f, { model: path.join(dir, 'model'), runId: 'nightly' });
  const rows = await assignRows(traffic(5), await realEmbedder(), new CoverageAssigner(model));
  const store = await Store.open(cfg.clickhouse);
  try {
    for (let i = 0; i < rows.length; i += 2000) await storeRows(store, rows.slice(i, i + 2000));
  } finally {
    await store.close();
  }
}, 600_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const mc = () =>
  parseMonitorConfig({
    controlTopic: uniqueName('evalgap.test.control'),
    electionGroup: uniqueName('monitor'),
    windowSeconds: 300,
    notifyBackfill: true,
    receivers: [],
    // a 3-hour reference instead of the default 24 hours (the test's traffic is 8 hours long)
    weightedScore: { warmupHours: 3, minSessions: 30 },
  });

type Note = { kind: string; alert: { rule: string; onset: string; summary: string; agent: string; clusters: { label?: string }[] } };

describe('weighted_score through monitor --backtest (real engine, model and stored eval results)', () => {
  it('fires after production moves to the topic the eval run fails, naming it; silent before', async () => {
    const out = JSON.parse(await monitorBacktest(cfg, mc(), path.join(dir, 'model'), new Date(START).toISOString(), new Date(END).toISOString(), true));
    const ws: Note[] = out.notifications.filter((n: Note) => n.alert.rule === 'weighted_score' && n.kind === 'firing');
    if (process.env.EVALGAP_TEST_PRINT) console.log(ws.map((n) => `${n.alert.onset} ${n.alert.summary}`));
    expect(ws.length).toBeGreaterThan(0);
    for (const n of ws) expect(Date.parse(n.alert.onset)).toBeGreaterThanOrEqual(SHIFT);
    expect(Date.parse(ws[0].alert.onset)).toBeLessThan(SHIFT + 2 * HOUR); // 3 requests a minute, sessions of 3 turns on average
    expect(ws[0].alert.summary).toContain('fell by more than 3.0 points');
    // the cluster it names first holds mostly the failing topic's eval cases (the label's words
    // depend on the fit's clusters, which move a little with the CPU's kernels)
    const named = loadCoverageModel(path.join(dir, 'model')).manifest.clusters.find((c) => c.label === ws[0].alert.clusters[0].label);
    expect(named?.tags[0]?.tag).toBe(BAD);
  }, 600_000);

  it('without the shift (the first 6 hours): no weighted_score alert', async () => {
    const before = JSON.parse(await monitorBacktest(cfg, mc(), path.join(dir, 'model'), new Date(START).toISOString(), new Date(SHIFT).toISOString(), true));
    expect(before.notifications.filter((n: Note) => n.alert.rule === 'weighted_score')).toEqual([]);
  }, 600_000);
});
