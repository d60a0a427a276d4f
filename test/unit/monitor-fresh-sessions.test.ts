/**
 * novel_sessions on a fresh deployment (issue 17, "no blind day"): before production history
 * exists the rule reads closed sessions against the fit's session reference
 * (src/coverage/session-reference.ts: pseudo-sessions of tested intents from the calibration's
 * held-out scoring), then hands over to production's reference.
 *
 * A synthetic banded world (as test/unit/monitor-novel-sessions.test.ts: 24 tested intents over 12
 * clusters, 0.2–1.6% of their requests in the 3 deepest bands, one poorly covered intent at 8%, 6
 * novel intents at 40%) and a fake eval set drawn from the tested intents' own cell mixes: each case
 * a (cluster, band) of its intent, its "new phrasing" band one band deeper than its seen band with
 * probability 0.3 (the eval set's phrasing families sit closer to each other than production's
 * phrasings do), 8 families of 20 cases per intent.
 *
 * Shown: the fit reference's e-value has mean ≤ 1 on tested intents' sessions of every length; 20%
 * of traffic on novel topics from the first request is found within the first day (before
 * production's reference can be ready; the rule without the fit reference, a model fitted before
 * it, finds nothing in that day); 5% is not (its e-values' log-growth is at most 0.002 nats per session
 * for every mix: the measured limit, docs/monitor.md); no shift at 0.05 requests/s raises nothing over 4 days and the
 * fit's CUSUMs end after the hand-over.
 */
import { describe, expect, it } from 'vitest';
import { backtest, composeEvaluators } from '../../src/monitor/index.js';
import type { EvaluateWindow, MonitorContext, SessionReferenceContext } from '../../src/monitor/types.js';
import { rng } from '../../src/monitor/stats.js';
import { fitSessionEvalue, novelSessionRules, usableFitReference, type NovelSessionsOptions } from '../../src/monitor/session-novel.js';
import { SESSION_GROUPS, sessionGroup, sessionReference, SESSION_REFERENCE } from '../../src/coverage/session-reference.js';
import { sessionStream, type SessionStreamSpec } from '../helpers/monitor-sim.js';
import { B, bandedContext, bandedWorld, K, NOVEL } from '../helpers/banded-world.js';

const DAY = 86400_000;
const START = '2026-03-02T00:00:00.000Z';

const world = bandedWorld();
/** the fit's novel-topic profile: somewhat off the true one */
const NOVEL_PROFILE = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15];

function pick(r: () => number, w: readonly number[]): number {
  let u = r() * w.reduce((a, b) => a + b, 0);
  for (let i = 0; i < w.length; i++) if ((u -= w[i]) < 0) return i;
  return w.length - 1;
}

/** the fit's session reference from a fake eval set of the tested intents (margins = band numbers) */
function fitReference(seed = 5): SessionReferenceContext {
  const r = rng(seed);
  const seen: number[] = [];
  const fresh: number[] = [];
  const cluster: number[] = [];
  const family: number[] = [];
  const region: number[] = [];
  for (let j = 0; j < 2 * K; j++)
    for (let i = 0; i < 160; i++) {
      const c = pick(r, world.intentCells[j]);
      const b = world.cells[c].band!;
      seen.push(b);
      fresh.push(r() < 0.3 ? Math.max(0, b - 1) : b);
      cluster.push(world.cells[c].cluster);
      family.push(j * 8 + Math.floor(i / 20));
      region.push(j);
    }
  const novelSample = Array.from({ length: 60 }, (_, i) => i * 50);
  const novelMargins = novelSample.map(() => pick(r, world.novelProfile));
  const s = sessionReference({
    seen, fresh, cluster, family, region, regions: 2 * K, bandOf: (m) => m, deepBands: 3, novel: NOVEL_PROFILE, novelSample, novelMargins,
    ...SESSION_REFERENCE, draws: 100, seed,
  });
  return { caps: s.caps, deepBands: s.deepBands, groupShares: s.groupShares, novelShares: s.novelShares, cap: s.cap, shape: s.shape, bound: s.bound };
}

const sessionRef = fitReference();
const baseCtx: MonitorContext = bandedContext({ novelProfile: NOVEL_PROFILE });
const fitCtx: MonitorContext = { ...baseCtx, sessionReference: sessionRef };

const noCore: EvaluateWindow = (_s, _w, c) => ({ state: { version: 1, modelVersion: c.modelVersion }, findings: [], trends: [], notices: [] });
const evaluator = (o: Partial<NovelSessionsOptions> = {}) => composeEvaluators(noCore, [novelSessionRules({ output: 'changes', ...o })]);

function spec(seed: number, rate: number, days: number, novel: number): SessionStreamSpec {
  return {
    start: START,
    durationMs: days * DAY,
    windowSeconds: 300,
    ratePerSecond: rate,
    agents: { support: 0.7, sales: 0.3 },
    cells: world.cells,
    intentCells: world.intentCells,
    intentWeights: (t) => world.weights(t, novel),
    bands: B,
    seed,
  };
}

function run(s: SessionStreamSpec, ctx: MonitorContext) {
  const before = new Map<number, number>();
  let total = 0;
  const res = backtest(sessionStream({ ...s, onWindow: (t, n) => (before.set(t, total), (total += n)) }), ctx, { evaluate: evaluator() });
  return { alerts: res.alerts.filter((a) => a.rule === 'novel_sessions'), requestsBefore: (iso: string) => before.get(Date.parse(iso)) ?? NaN, state: res.state };
}

describe('novel_sessions from the fit reference (fresh deployment)', () => {
  it('the fit reference is usable by the rule, and its e-value has mean ≤ 1 on tested intents\' sessions of every length', () => {
    expect(usableFitReference(sessionRef, 3)).toBe(true);
    expect(usableFitReference({ ...sessionRef, caps: [4, 4, 4] }, 3)).toBe(false);
    expect(usableFitReference(sessionRef, 2)).toBe(false);
    // sessions of m distinct draws of one tested intent (the eval mix), each length on its own
    const r = rng(17);
    const w = world.weights(0, 0).slice(0, 2 * K);
    for (const m of [1, 2, 3, 5, 8, 13, 20, 30]) {
      let s = 0;
      const N = 20000;
      for (let i = 0; i < N; i++) {
        const j = pick(r, w);
        const seen = new Set<number>();
        for (let t = 0; t < m; t++) seen.add(pick(r, world.intentCells[j]));
        const n = new Array<number>(SESSION_GROUPS).fill(0);
        for (const c of seen) n[sessionGroup(world.cells[c].band!, world.cells[c].uncovered, 3)]++;
        s += fitSessionEvalue(sessionRef, n);
      }
      expect(s / N, `m = ${m}`).toBeLessThan(1);
    }
  });

  it('20% of traffic on novel topics from the first request at 0.5 requests/s is found within a day from the fit reference (without it: not found)', () => {
    for (const seed of [1, 2]) {
      const r = run(spec(seed, 0.5, 1, 0.2), fitCtx);
      expect(r.alerts.length, `seed ${seed}`).toBeGreaterThan(0);
      expect(r.alerts[0].summary).toContain("fit's statement");
      // before production's reference could be ready (24 h)
      expect(Date.parse(r.alerts[0].onset!) - Date.parse(START)).toBeLessThan(DAY);
      // without the fit reference (a model fitted before it): today's behaviour, nothing within the day
      const old = run(spec(seed, 0.5, 1, 0.2), baseCtx);
      expect(old.alerts).toEqual([]);
      // a model whose deep-band statement predates the 1% floor: its fit reference is not used either
      const pre = run(spec(seed, 0.5, 1, 0.2), { ...fitCtx, heldOutDeep: { ...fitCtx.heldOutDeep!, belowFloor: true } });
      expect(pre.alerts).toEqual([]);
      const st = (old.state as { sets?: { novel_sessions?: { scopes: Record<string, { fit?: unknown }> } } }).sets?.novel_sessions;
      expect(st?.scopes['*'].fit ?? null).toBeNull();
    }
  }, 600_000);

  it('5% of traffic on novel topics from the first request: the fit reference has no power (a measured limit, docs/monitor.md)', () => {
    // the e-values' mean rises above 1, but their tail leaves every mix's log-growth at most 0.002
    // nats per session (more than 6,000 sessions to a threshold of 12)
    const Ls: number[] = [];
    for (const _ of sessionStream({
      ...spec(1, 0.5, 1, 0.05),
      onSession: (x) => {
        const n = new Array<number>(SESSION_GROUPS).fill(0);
        for (const c of new Set(x.cells)) n[sessionGroup(world.cells[c].band!, world.cells[c].uncovered, 3)]++;
        Ls.push(fitSessionEvalue(sessionRef, n));
      },
    })) {
      /* the sessions only */
    }
    expect(Ls.reduce((a, b) => a + b, 0) / Ls.length).toBeGreaterThan(1);
    for (const eps of [0.01, 0.02, 0.05, 0.1]) expect(Ls.reduce((a, L) => a + Math.log(1 - eps + eps * L), 0) / Ls.length).toBeLessThan(0.002);
  });

  for (const seed of [3, 4]) {
    it(`session traffic with no shift at 0.05 requests/s on a fresh deployment raises nothing over 4 days (fit reference, then hand-over; seed ${seed})`, () => {
      const r = run(spec(seed, 0.05, 4, 0), fitCtx);
      expect(r.alerts.map((a) => `${a.scope.agent} ${a.onset} ${a.summary}`)).toEqual([]);
      // the fit CUSUMs ended after the hand-over: production's reference took over
      const st = (r.state as { sets?: { novel_sessions?: { scopes: Record<string, { fit?: unknown }> } } }).sets?.novel_sessions;
      expect(st?.scopes['*']).toBeDefined();
      expect(st?.scopes['*'].fit ?? null).toBeNull();
    }, 600_000);
  }
});
