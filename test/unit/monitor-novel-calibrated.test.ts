/**
 * novel_vs_calibrated (issue 17 item 4, "no blind day"): on a fresh deployment, with no production
 * history, the share of requests in the deepest coverage bands is tested against the upper end of
 * the fit's interval for new phrasings of tested intents (calibration.bands.heldOut). Novel topics
 * are found from the first windows; session-correlated traffic without a shift does not alarm.
 */
import { describe, expect, it } from 'vitest';
import { backtestAsync } from '../../src/monitor/index.js';
import type { MonitorContext } from '../../src/monitor/types.js';
import { rng } from '../../src/monitor/stats.js';
import { sessionStream, type Cell, type SessionStreamSpec } from '../helpers/monitor-sim.js';
import { heldOutDeepOf } from '../../src/alert/runner.js';

const K = 12;
const B = 9;
const DAY = 86400_000;
const START = '2026-03-02T00:00:00.000Z';
const NOVEL = 6;

/**
 * 24 tested intents over 12 clusters and 6 novel ones. Cells: (cluster, band), uncovered below band
 * 5 (the threshold's). A tested intent puts 0.2–1.6% of its requests in the three deepest bands
 * (mean ≈ 0.9%: each intent's own, so sessions repeating one intent correlate them), a novel one 40%.
 */
function bandedWorld(seed = 11) {
  const r = rng(seed);
  const cells: Cell[] = [];
  for (let c = 0; c < K; c++) for (let b = 0; b < B; b++) cells.push({ cluster: c, uncovered: b < 5, band: b });
  const cell = (c: number, b: number) => c * B + b;
  const profile = (deep: number, unc: number) => {
    const rest = 1 - unc - 0.35;
    return [deep / 3, deep / 3, deep / 3, 0.004, unc - deep - 0.004, 0.05, 0.1, 0.2, rest];
  };
  const intentCells: number[][] = [];
  const deepOf: number[] = [];
  for (let j = 0; j < 2 * K; j++) {
    const c = j % K;
    const deep = 0.002 + 0.014 * r();
    deepOf.push(deep);
    const p = profile(deep, 0.03 + 0.05 * r());
    const f = new Array<number>(cells.length).fill(0);
    for (let b = 0; b < B; b++) {
      f[cell(c, b)] += 0.9 * p[b];
      f[cell((c + 1) % K, b)] += 0.1 * p[b];
    }
    intentCells.push(f);
  }
  const novelProfile = [0.14, 0.12, 0.14, 0.08, 0.12, 0.1, 0.1, 0.1, 0.1];
  for (let j = 0; j < NOVEL; j++) {
    const f = new Array<number>(cells.length).fill(0);
    for (let b = 0; b < B; b++) f[cell((2 * j + 1) % K, b)] = novelProfile[b];
    intentCells.push(f);
  }
  const base = Array.from({ length: 2 * K }, () => 0.3 + r());
  const phase = base.map(() => r());
  const weights = (t: number, novel: number) => {
    const h = ((t / 3600000) % 24) / 24;
    const w = base.map((b, j) => b * (1 + 0.5 * Math.sin(2 * Math.PI * (h + phase[j]))));
    const s = w.reduce((a, b) => a + b, 0);
    return [...w.map((x) => ((1 - novel) * x) / s), ...Array.from({ length: NOVEL }, () => novel / NOVEL)];
  };
  const w0 = base.map((b) => b / base.reduce((a, x) => a + x, 0));
  const deepShare = w0.reduce((a, w, j) => a + w * deepOf[j], 0);
  return { cells, intentCells, weights, deepShare, novelDeep: 0.4 };
}

const world = bandedWorld();
/** as the fit states it: new phrasings fall deep somewhat more often than production's tested traffic does; the interval honest */
const heldOutDeep = { deepBands: 3, share: world.deepShare * 1.2, interval: [world.deepShare * 0.6, world.deepShare * 1.6] as [number, number], novelShare: world.novelDeep };
const ctxOld: MonitorContext = {
  modelVersion: 'm1',
  // an honest, wide calibrated interval: 5% novel traffic stays inside it (uncovered_vs_calibrated cannot see it)
  calibratedRate: 0.055,
  calibratedRateInterval: [0.02, 0.12],
  evalShares: Object.fromEntries(Array.from({ length: K }, (_, i) => [i, 1 / K])),
  labels: Object.fromEntries(Array.from({ length: K }, (_, i) => [i, `topic ${i}`])),
};
const ctx: MonitorContext = { ...ctxOld, heldOutDeep };

function spec(seed: number, rate: number, days: number, novel: number, over: Partial<SessionStreamSpec> = {}): SessionStreamSpec {
  return {
    start: START,
    durationMs: days * DAY,
    windowSeconds: 900,
    ratePerSecond: rate,
    agents: { support: 0.7, sales: 0.3 },
    cells: world.cells,
    intentCells: world.intentCells,
    intentWeights: (t) => world.weights(t, novel),
    bands: B,
    seed,
    ...over,
  };
}

/** runs a stream; returns the alerts and, per window start, the requests emitted before it */
async function run(s: SessionStreamSpec, c: MonitorContext) {
  const before = new Map<number, number>();
  let total = 0;
  const res = await backtestAsync(sessionStream({ ...s, onWindow: (t, n) => (before.set(t, total), (total += n)) }), c);
  return { alerts: res.alerts, requestsBefore: (iso: string) => before.get(Date.parse(iso)) ?? NaN, total };
}

describe('novel_vs_calibrated: no blind day', () => {
  it('a fresh deployment with 5% novel traffic from the first request is found within a bounded number of requests (0.5 requests/s)', async () => {
    for (const seed of [1, 2]) {
      const r = await run(spec(seed, 0.5, 2, 0.05), ctx);
      const hit = r.alerts.find((a) => a.rule === 'novel_vs_calibrated');
      expect(hit, `seed ${seed}: ${r.alerts.map((a) => a.rule).join(', ')}`).toBeDefined();
      // the oracle-free bound: h / KL(p1 ‖ upper end) ≈ 14 / 0.0047 ≈ 3,000 requests, times the
      // sessions' design effect (≈ 2–3 here) and the first hours' wait for closed sessions
      expect(r.requestsBefore(hit!.onset)).toBeLessThan(20_000);
      expect(hit!.severity).toBe('warning');
      expect(hit!.summary).toMatch(/fall far below the eval set \(the 3 deepest coverage bands\), against at most \d+\.\d+% for new phrasings/);
      expect(hit!.clusters.length).toBeGreaterThan(0);
      // reported once per scope: a standing fact
      const all = r.alerts.filter((a) => a.rule === 'novel_vs_calibrated');
      expect(new Set(all.map((a) => a.scope.agent)).size).toBe(all.length);
      // nothing else sees it without history within the day (the production-relative rules wait 24 h)
      const other = r.alerts.filter((a) => a.rule !== 'novel_vs_calibrated' && r.requestsBefore(a.onset) < r.requestsBefore(hit!.onset));
      expect(other).toEqual([]);
    }
  }, 600_000);

  for (const seed of [1, 2]) {
    it(`14 days of session-correlated traffic with no shift at 0.05 requests/s raise no novel_vs_calibrated alert (seed ${seed})`, async () => {
      const r = await run(spec(seed, 0.05, 14, 0), ctx);
      expect(r.alerts.filter((a) => a.rule === 'novel_vs_calibrated').map((a) => `${a.scope.agent} ${a.onset} ${a.summary}`)).toEqual([]);
    }, 600_000);
  }

  it('a model without the held-out deep-band share (fitted before it): the rule is off, nothing fails', async () => {
    const r = await run(spec(1, 0.5, 1, 0.05), ctxOld);
    expect(r.alerts.filter((a) => a.rule === 'novel_vs_calibrated')).toEqual([]);
    const ev = await backtestAsync(sessionStream(spec(1, 0.5, 0.1, 0.05)), ctxOld);
    expect(ev.alerts.every((a) => a.rule !== 'novel_vs_calibrated')).toBe(true);
  }, 600_000);

  it('a statement from before the deep bands\' 1% floor (fewer than 3 bands) is marked and not relied on: the rule that fires on the same stream with it trusted stays silent', async () => {
    const stated = { deepShare: heldOutDeep.share, deepShareInterval: heldOutDeep.interval, novelDeepShare: heldOutDeep.novelShare };
    expect(heldOutDeepOf({ ...stated, deepBands: 2 }).belowFloor).toBe(true);
    expect(heldOutDeepOf({ ...stated, deepBands: 1 }).belowFloor).toBe(true);
    expect(heldOutDeepOf({ ...stated, deepBands: 3 }).belowFloor).toBeUndefined();
    expect(heldOutDeepOf({ ...stated, deepBands: 4 }).belowFloor).toBeUndefined();
    const s = spec(1, 0.5, 2, 0.05);
    expect((await run(s, ctx)).alerts.some((a) => a.rule === 'novel_vs_calibrated')).toBe(true);
    const r = await run(s, { ...ctx, heldOutDeep: { ...heldOutDeep, belowFloor: true } });
    expect(r.alerts.filter((a) => a.rule === 'novel_vs_calibrated')).toEqual([]);
  }, 600_000);
});
