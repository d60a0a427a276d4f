/**
 * The weighted_score rule set (src/monitor/score-rules.ts), composed with the core rules as the
 * monitor runs it: it fires when production's mix moves toward a cluster the eval run fails, and
 * stays silent on unshifted traffic made of sessions (every turn of a session in one cluster: the
 * evidence a session repeats is what the design effect discounts).
 */
import { describe, expect, it } from 'vitest';
import { createEvaluator, weightedScoreRules } from '../../src/monitor/index.js';
import { betFor, windowLogE } from '../../src/monitor/score-rules.js';
import type { MonitorContext, MonitorState, SessionCell, WindowCounts } from '../../src/monitor/types.js';
import { breather } from '../helpers/breathe.js';

const PASS = [0.95, 0.9, 0.92, 0.5, 0.97];
const BASE = [0.3, 0.25, 0.2, 0.05, 0.2];
const ctx: MonitorContext = {
  modelVersion: 'm1',
  calibratedRate: 0.05,
  evalShares: Object.fromEntries(BASE.map((_, i) => [i, 0.2])),
  evalPassRates: Object.fromEntries(PASS.map((p, i) => [i, p])),
};

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** one 5-minute window: `sessions` sessions of geometric length (mean `turns`), all turns in one cluster drawn from `shares` */
function window(i: number, shares: number[], u: () => number, sessions = 25, turns = 4): WindowCounts {
  const start = new Date(Date.UTC(2026, 0, 1) + i * 300000).toISOString();
  const end = new Date(Date.UTC(2026, 0, 1) + (i + 1) * 300000).toISOString();
  const req = new Array(shares.length).fill(0);
  const closed: SessionCell[] = [];
  for (let s = 0; s < sessions; s++) {
    let x = u();
    let c = 0;
    while (c < shares.length - 1 && x > shares[c]) x -= shares[c++];
    let n = 1;
    while (u() > 1 / turns) n++;
    req[c] += n;
    closed.push({ session: `s${i}-${s}`, cluster: c, uncovered: false, band: -1, requests: n, escalated: 0, refused: 0, failed: 0 });
  }
  return {
    start,
    end,
    agent: 'bot',
    modelVersion: 'm1',
    sessions,
    closedSessions: closed,
    clusters: req.map((r, c) => ({ cluster: c, requests: r, uncovered: 0, escalated: 0, refused: 0, failed: 0 })),
  };
}

/** run `days` of windows; the mix moves to `shifted` from window `shiftAt`; the windows where weighted_score fired */
async function run(seed: number, days: number, shifted: number[] | null, shiftAt: number, opts = {}) {
  const breathe = breather();
  const evaluate = createEvaluator({}, [weightedScoreRules(opts)]);
  const u = rng(seed);
  let state: MonitorState | null = null;
  const fired: number[] = [];
  for (let i = 0; i < days * 288; i++) {
    await breathe();
    const out = evaluate(state, [window(i, shifted && i >= shiftAt ? shifted : BASE, u)], ctx);
    state = out.state;
    if (out.findings.some((f) => f.rule === 'weighted_score' && f.firing && f.onset === f.windowStart)) fired.push(i);
  }
  return { fired, state };
}

describe('weighted_score rule', () => {
  it('bets: every factor stays positive, and a window of scores at the null mean adds no evidence on average', () => {
    const eta = betFor(0.88, 0.03, 0.02);
    expect(eta * (1 - 0.88)).toBeLessThan(1);
    // a mix whose mean score is exactly m0: the log factor is ≤ 0 (Jensen)
    const m0 = 0.5 * 0.95 + 0.5 * 0.81;
    expect(windowLogE([{ n: 100, y: 0.95 }, { n: 100, y: 0.81 }], m0, eta)).toBeLessThanOrEqual(0);
    // a fall below m0 adds evidence
    expect(windowLogE([{ n: 100, y: 0.5 }], 0.88, eta)).toBeGreaterThan(0);
  });

  it('fires on a mix shift toward the failing cluster (score −9 points), within hours, naming the cluster', async () => {
    const shifted = [0.1, 0.25, 0.2, 0.25, 0.2];
    for (const seed of [1, 2]) {
      const { fired } = await run(seed, 3, shifted, 2 * 288);
      expect(fired.length).toBeGreaterThan(0);
      expect(fired[0]).toBeGreaterThanOrEqual(2 * 288);
      expect(fired[0] - 2 * 288).toBeLessThan(24); // within 2 hours of 5-minute windows
    }
    const evaluate = createEvaluator({}, [weightedScoreRules()]);
    const u = rng(3);
    let state: MonitorState | null = null;
    let summary = '';
    for (let i = 0; i < 3 * 288 && !summary; i++) {
      const out = evaluate(state, [window(i, i >= 2 * 288 ? shifted : BASE, u)], ctx);
      state = out.state;
      const f = out.findings.find((x) => x.rule === 'weighted_score' && x.firing && x.scope.agent === 'bot');
      if (f) {
        summary = f.summary;
        expect(f.clusters[0].cluster).toBe(3);
        expect(f.effect.value).toBeGreaterThan(0.03);
      }
    }
    expect(summary).toContain('fell by more than 3.0 points');
  });

  it('stays silent on a fall smaller than the set amount, and on unshifted session traffic', async () => {
    // −1.1 points (cluster 3 from 5% to 7.5%): below the 3-point drop
    const small = [0.275, 0.25, 0.2, 0.075, 0.2];
    for (const seed of [4, 5, 6]) {
      expect((await run(seed, 4, null, 0)).fired).toEqual([]);
      expect((await run(seed, 4, small, 2 * 288)).fired).toEqual([]);
    }
  });

  it('sessions are the unit: long sessions in one cluster need the design effect (a test that can fail)', async () => {
    // sessions of 30 turns on average, all in one cluster: without the design effect (maxDispersion 1) the
    // per-request evidence is overstated and unshifted traffic alarms
    const alarms = async (opts: object) => {
      const breathe = breather();
      let n = 0;
      for (const seed of [7, 8, 9]) {
        const evaluate = createEvaluator({}, [weightedScoreRules(opts)]);
        const u = rng(seed);
        let state: MonitorState | null = null;
        for (let i = 0; i < 4 * 288; i++) {
          await breathe();
          const out = evaluate(state, [window(i, BASE, u, 4, 30)], ctx);
          state = out.state;
          n += out.findings.filter((f) => f.rule === 'weighted_score' && f.firing && f.onset === f.windowStart).length;
        }
      }
      return n;
    };
    expect(await alarms({})).toBe(0);
    expect(await alarms({ maxDispersion: 1 })).toBeGreaterThan(0);
  });

  it('is off without eval pass rates, and restarts with a new model version', async () => {
    const evaluate = createEvaluator({}, [weightedScoreRules()]);
    const u = rng(10);
    const { evalPassRates: _drop, ...bare } = ctx;
    const out = evaluate(null, [window(0, BASE, u)], bare);
    expect(out.findings.filter((f) => f.rule === 'weighted_score')).toEqual([]);
    const { state } = await run(11, 2, null, 0);
    const next = createEvaluator({}, [weightedScoreRules()])(state, [window(600, BASE, u)], { ...ctx, modelVersion: 'm2' });
    const slice = (next.state as unknown as { sets: { weighted_score: { modelVersion: string; scopes: Record<string, { refMs: number }> } } }).sets.weighted_score;
    expect(slice.modelVersion).toBe('m2');
    expect(next.findings.filter((f) => f.rule === 'weighted_score')).toEqual([]);
  });
});
