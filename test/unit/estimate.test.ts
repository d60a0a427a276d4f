/**
 * The estimate stage's pure core: post-stratification and its interval (by simulation), shrinkage,
 * the untested bounds, Neyman allocation (against hand-computed cases), the plan, results parsing.
 */
import { describe, expect, it } from 'vitest';
import gammaRandom from '@stdlib/random-base-gamma';
import { neymanAllocation, proportionalAllocation, stratifiedVariance, uniformAllocation } from '../../src/estimate/allocate.js';
import { estimateScore, heterogeneity, type ClusterCounts } from '../../src/estimate/poststratify.js';
import { planCases } from '../../src/estimate/plan.js';
import { matchResults, parseResults } from '../../src/estimate/results.js';
import { breather } from '../helpers/breathe.js';

function sampler(seed: number) {
  const g = gammaRandom.factory({ seed });
  const u = (g.PRNG as unknown as { normalized: () => number }).normalized; // uniform on [0, 1), same stream
  const binom = (n: number, p: number) => {
    let s = 0;
    for (let i = 0; i < n; i++) if (u() < p) s++;
    return s;
  };
  const dirichlet = (a: number[]) => {
    const x = a.map((v) => g(v, 1));
    const z = x.reduce((s, v) => s + v, 0);
    return x.map((v) => v / z);
  };
  const multinomial = (n: number, p: number[]) => {
    const cum = p.map(((s) => (v: number) => (s += v))(0));
    const out = p.map(() => 0);
    for (let i = 0; i < n; i++) {
      const r = u() * cum[cum.length - 1];
      let j = 0;
      while (cum[j] < r) j++;
      out[j]++;
    }
    return out;
  };
  return { u, binom, dirichlet, multinomial };
}

describe('Neyman allocation', () => {
  it('gives n_h ∝ W_h σ_h with no cases yet (hand-computed: W·σ = .25, .09, .02, budget 36 → 25, 9, 2)', () => {
    const a = neymanAllocation(
      [
        { weight: 0.5, sigma: 0.5, existing: 0 },
        { weight: 0.3, sigma: 0.3, existing: 0 },
        { weight: 0.2, sigma: 0.1, existing: 0 },
      ],
      36,
    );
    expect(a.cases).toEqual([25, 9, 2]);
    expect(a.varianceBefore).toBe(Infinity);
    expect(a.varianceAfter).toBeCloseTo(0.0625 / 25 + 0.0081 / 9 + 0.0004 / 2, 12);
  });

  it('water-fills around the cases already there (hand-computed: existing 30, 0, 0 → λ = 66/.36; 15.8, 16.5, 3.7 → 16, 16, 4)', () => {
    const a = neymanAllocation(
      [
        { weight: 0.5, sigma: 0.5, existing: 30 },
        { weight: 0.3, sigma: 0.3, existing: 0 },
        { weight: 0.2, sigma: 0.1, existing: 0 },
      ],
      36,
    );
    expect(a.cases).toEqual([16, 16, 4]);
  });

  it('gives nothing to a stratum already above its share (existing 100 where λWσ < 100)', () => {
    const a = neymanAllocation(
      [
        { weight: 0.5, sigma: 0.5, existing: 100 },
        { weight: 0.5, sigma: 0.5, existing: 0 },
      ],
      10,
    );
    expect(a.cases).toEqual([0, 10]);
  });

  it('is no worse than any single move of one case (integer optimality, random instances)', () => {
    const s = sampler(7);
    for (let t = 0; t < 200; t++) {
      const k = 2 + Math.floor(s.u() * 6);
      const strata = Array.from({ length: k }, () => ({ weight: s.u(), sigma: 0.05 + 0.45 * s.u(), existing: 1 + Math.floor(s.u() * 20) }));
      const budget = 1 + Math.floor(s.u() * 60);
      const a = neymanAllocation(strata, budget);
      expect(a.cases.reduce((x, y) => x + y, 0)).toBe(budget);
      const v = stratifiedVariance(strata, a.cases);
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < k; j++) {
          if (i === j || a.cases[i] === 0) continue;
          const b = [...a.cases];
          b[i]--;
          b[j]++;
          // rounding may cost a little against the integer optimum, never more than one case's worth
          expect(v).toBeLessThanOrEqual(stratifiedVariance(strata, b) * 1.05);
        }
      }
    }
  });

  it('baselines: proportional and uniform allocations sum to the budget', () => {
    expect(proportionalAllocation([0.5, 0.3, 0.2], 10)).toEqual([5, 3, 2]);
    expect(uniformAllocation(3, 10).reduce((a, b) => a + b, 0)).toBe(10);
    expect(uniformAllocation(3, 10).every((x) => x === 3 || x === 4)).toBe(true);
  });
});

/** A world: K clusters, true pass rates (some much worse), eval shares and production shares that differ. */
function world(seed: number, k = 30) {
  const s = sampler(seed);
  const p = Array.from({ length: k }, () => (s.u() < 0.2 ? 0.3 + 0.4 * s.u() : 0.85 + 0.14 * s.u()));
  const evalShare = s.dirichlet(p.map(() => 10));
  // production leans toward the bad clusters
  const prodShare = s.dirichlet(p.map((x) => (x < 0.8 ? 6 : 1.5)));
  return { s, p, evalShare, prodShare, k };
}

function draw(w: ReturnType<typeof world>, nEval: number, nProd: number, nUnc = 0): ClusterCounts[] {
  const ne = w.s.multinomial(nEval, w.evalShare);
  const np = w.s.multinomial(nProd, w.prodShare);
  const nu = w.s.multinomial(nUnc, w.prodShare);
  return w.p.map((p, c) => ({
    cluster: c,
    label: `c${c}`,
    group: '',
    evalCases: ne[c],
    evalPassed: w.s.binom(ne[c], p),
    covered: np[c],
    uncovered: nu[c],
  }));
}

describe('post-stratified score', () => {
  it('its 90% interval contains the true production pass rate in 85–95% of 300 simulated worlds, and it is ≥ 3× closer than the raw score', () => {
    let inside = 0;
    let errEst = 0;
    let errRaw = 0;
    const n = 300;
    for (let t = 0; t < n; t++) {
      const w = world(1000 + t);
      const cs = draw(w, 1200, 5000); // 40 eval cases per cluster on average (with 20: 84%, see poststratify.ts)
      const truth = w.p.reduce((s, p, c) => s + p * w.prodShare[c], 0);
      const e = estimateScore(cs, { draws: 1000, seed: t + 1 });
      if (truth >= e.interval![0] && truth <= e.interval![1]) inside++;
      errEst += Math.abs(e.estimate! - truth);
      errRaw += Math.abs(e.raw - truth);
    }
    const coverage = inside / n;
    expect(coverage).toBeGreaterThanOrEqual(0.85);
    expect(coverage).toBeLessThanOrEqual(0.95);
    expect(errRaw / errEst).toBeGreaterThan(3);
  });

  it('would under-cover if the production shares were taken as exact and small clusters not shrunk (the interval needs both)', () => {
    // the same worlds, few eval cases: a plug-in normal interval on the raw per-cluster rates misses far more often
    let inside = 0;
    const n = 200;
    for (let t = 0; t < n; t++) {
      const w = world(5000 + t);
      const cs = draw(w, 150, 300);
      const truth = w.p.reduce((s, p, c) => s + p * w.prodShare[c], 0);
      const nc = cs.reduce((s, c) => s + c.covered, 0);
      let est = 0;
      let v = 0;
      for (const c of cs) {
        const wc = c.covered / nc;
        const pc = c.evalCases ? c.evalPassed / c.evalCases : 0.5;
        est += wc * pc;
        if (c.evalCases) v += (wc * wc * pc * (1 - pc)) / c.evalCases;
      }
      if (Math.abs(est - truth) <= 1.645 * Math.sqrt(v)) inside++;
    }
    expect(inside / n).toBeLessThan(0.82);
  });

  it('shrinks a cluster with few cases toward its group, not the whole set', () => {
    const cs: ClusterCounts[] = [
      ...Array.from({ length: 10 }, (_, i) => ({ cluster: i, label: '', group: 'easy', evalCases: 40, evalPassed: 38, covered: 100, uncovered: 0 })),
      ...Array.from({ length: 10 }, (_, i) => ({ cluster: 10 + i, label: '', group: 'hard', evalCases: 40, evalPassed: 16, covered: 100, uncovered: 0 })),
      { cluster: 20, label: '', group: 'hard', evalCases: 1, evalPassed: 1, covered: 100, uncovered: 0 },
      { cluster: 21, label: '', group: 'easy', evalCases: 1, evalPassed: 0, covered: 100, uncovered: 0 },
    ];
    const e = estimateScore(cs, { draws: 2000 });
    const hard1 = e.clusters.find((c) => c.cluster === 20)!;
    const easy1 = e.clusters.find((c) => c.cluster === 21)!;
    const flat = estimateScore(cs.map((c) => ({ ...c, group: '' })), { draws: 2000 });
    // one pass: pulled toward its group's 40%, further than the whole set's 68% pulls it
    expect(hard1.passRate).toBeLessThan(flat.clusters[20].passRate - 0.05);
    expect(hard1.passRate).toBeGreaterThan(0.5);
    // one failure: pulled toward its group's 95%
    expect(easy1.passRate).toBeGreaterThan(flat.clusters[21].passRate + 0.05);
    expect(hard1.passRateInterval[1] - hard1.passRateInterval[0]).toBeGreaterThan(0.3);
  });

  it('reports the untested share separately with all-fail ≤ nearest ≤ all-pass bounds, and the gap parts sum to the gap', () => {
    const w = world(42);
    const cs = draw(w, 300, 2000, 500);
    const e = estimateScore(cs, { draws: 2000 });
    expect(e.untested).toBeCloseTo(500 / 2500, 9);
    const b = e.bounds!;
    expect(b.allFail.estimate).toBeCloseTo(e.coveredShare * e.estimate!, 9);
    expect(b.allPass.estimate).toBeCloseTo(e.coveredShare * e.estimate! + e.untested, 9);
    expect(b.allFail.estimate).toBeLessThan(b.nearest.estimate);
    expect(b.nearest.estimate).toBeLessThan(b.allPass.estimate);
    for (const x of [b.allFail, b.nearest, b.allPass]) {
      expect(x.interval[0]).toBeLessThanOrEqual(x.estimate);
      expect(x.interval[1]).toBeGreaterThanOrEqual(x.estimate);
    }
    const parts = e.clusters.reduce((s, c) => s + c.contribution, 0);
    expect(parts + e.shrinkage! + (e.withinCluster?.correction ?? 0)).toBeCloseTo(e.gap!, 9);
  });

  it('widens the interval with the design effect of sessions', () => {
    const w = world(3);
    const cs = draw(w, 3000, 400);
    const a = estimateScore(cs, { draws: 3000, designEffect: 1 });
    const b = estimateScore(cs, { draws: 3000, designEffect: 4 });
    expect(b.interval![1] - b.interval![0]).toBeGreaterThan(1.2 * (a.interval![1] - a.interval![0]));
    expect(b.estimate).toBeCloseTo(a.estimate!, 12);
  });

  it('no covered traffic: no estimate, everything untested', () => {
    const e = estimateScore([{ cluster: 0, label: '', group: '', evalCases: 10, evalPassed: 9, covered: 0, uncovered: 5 }]);
    expect(e.estimate).toBeNull();
    expect(e.untested).toBe(1);
    expect(e.raw).toBeCloseTo(0.9, 12);
  });
});

describe('plan', () => {
  it('spends on the gaps (σ = 0.5, no cases) and the clusters by Neyman; --covered-only only on the clusters', () => {
    const cs: ClusterCounts[] = [
      { cluster: 0, label: 'a', group: '', evalCases: 50, evalPassed: 49, covered: 700, uncovered: 0 },
      { cluster: 1, label: 'b', group: '', evalCases: 5, evalPassed: 3, covered: 100, uncovered: 200 },
    ];
    const e = estimateScore(cs, { draws: 1000 });
    const p = planCases(e, [{ gapId: 'g1', label: 'gift cards', share: 0.2, escalationRate: 0.3, priority: 10 }], 50);
    expect(p.scope).toBe('all');
    const gap = p.items.find((x) => x.kind === 'gap')!;
    expect(gap.sigma).toBe(0.5);
    expect(gap.cases).toBeGreaterThan(0);
    expect(p.items.reduce((s, x) => s + x.cases, 0)).toBe(50);
    expect(p.seAfter).toBeLessThan(p.seBefore);
    const c = planCases(e, [{ gapId: 'g1', label: 'gift cards', share: 0.2, escalationRate: 0.3, priority: 10 }], 50, { coveredOnly: true });
    expect(c.items.every((x) => x.kind === 'cluster')).toBe(true);
    // the small uncertain cluster gets more than its traffic share
    expect(c.items[1].cases).toBeGreaterThan(50 * (100 / 800));
  });
});

describe('eval results in', () => {
  it('reads passed, score and per-metric scores; reports bad lines and repeated ids with their line', () => {
    const r = parseResults(
      [
        '{"id": "a", "passed": true}',
        '{"id": 7, "score": 0.25, "scores": {"faithfulness": 0.5}}',
        '{"id": "c", "scores": {"faithfulness": 1}}',
        '{"id": "a", "passed": false}',
        '{"id": "d", "score": 1.5}',
        '{"id": "e"}',
        'not json',
        '',
      ].join('\n'),
    );
    expect(r.results.map((x) => [x.id, x.value])).toEqual([
      ['a', 1],
      ['7', 0.25],
      ['c', null],
    ]);
    expect(r.results[1].scores).toEqual({ faithfulness: 0.5 });
    expect(r.errors.map((e) => e.line)).toEqual([4, 5, 6, 7]);
    expect(r.errors[0].reason).toMatch(/line 1/);
  });

  it('matches results to the model cases by id and returns the ones that match none', () => {
    const r = parseResults('{"id":"x","passed":true}\n{"id":"nope","passed":false}\n');
    const m = matchResults(r.results, [{ id: 'y', tags: [] }, { id: 'x', tags: ['t'] }], Int32Array.from([3, 5]));
    expect(m.matched).toHaveLength(1);
    expect(m.matched[0]).toMatchObject({ id: 'x', cluster: 5, tags: ['t'] });
    expect(m.unmatched.map((u) => u.id)).toEqual(['nope']);
  });
});

describe('the assumption term: heterogeneity within clusters', () => {
  it('τ is 0 with one sub-group or equal rates, near the true spread with distinct ones', async () => {
    const { heterogeneity } = await import('../../src/estimate/poststratify.js');
    expect(heterogeneity(undefined)).toBe(0);
    expect(heterogeneity([{ n: 40, s: 30 }])).toBe(0);
    expect(heterogeneity([{ n: 200, s: 180 }, { n: 200, s: 180 }])).toBe(0);
    // two halves at 95% and 45%: τ = 0.25
    expect(heterogeneity([{ n: 2000, s: 1900 }, { n: 2000, s: 900 }])).toBeCloseTo(0.25, 2);
  });

  /**
   * Worlds where clusters hold sub-groups (tags) that fail differently and production weights each
   * sub-group by e^{λ p + 0.7 ε} (ε standard normal) relative to the eval's: λ = 0, the mix is
   * independent of failure; λ = −3, production leans on failing requests, between clusters and inside
   * them alike (the tilt model's assumption). 40 clusters of 1–3 sub-groups of 12 eval cases,
   * a fifth of the sub-groups failing 30–70%, 5,000 requests.
   */
  async function tiltWorlds(lambda: number, worlds: number, seed: number) {
    const breathe = breather();
    const u = (gammaRandom.factory({ seed }).PRNG as unknown as { normalized: () => number }).normalized;
    const out: { truth: number; raw: number; tilt: number; off: number; inTilt: boolean; inOff: boolean; width: number }[] = [];
    for (let w = 0; w < worlds; w++) {
      await breathe();
      const cs: ClusterCounts[] = [];
      const groups: { c: number; p: number; wt: number }[] = [];
      for (let c = 0; c < 40; c++) {
        const G = 1 + Math.floor(u() * 3);
        const subgroups: { n: number; s: number }[] = [];
        let n = 0;
        let s = 0;
        for (let t = 0; t < G; t++) {
          const p = u() < 0.2 ? 0.3 + 0.4 * u() : 0.85 + 0.14 * u();
          let k = 0;
          for (let i = 0; i < 12; i++) if (u() < p) k++;
          subgroups.push({ n: 12, s: k });
          n += 12;
          s += k;
          const z = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
          groups.push({ c, p, wt: Math.exp(lambda * p + 0.7 * z) });
        }
        cs.push({ cluster: c, label: `c${c}`, group: '', evalCases: n, evalPassed: s, covered: 0, uncovered: 0, subgroups });
      }
      const total = groups.reduce((a, g) => a + g.wt, 0);
      let truth = 0;
      for (let r = 0; r < 5000; r++) {
        let x = u() * total;
        let j = 0;
        while (j < groups.length - 1 && (x -= groups[j].wt) > 0) j++;
        cs[groups[j].c].covered++;
        truth += groups[j].p;
      }
      truth /= 5000;
      const t = estimateScore(cs, { draws: 1000, seed: w + 1 });
      const o = estimateScore(cs, { draws: 1000, seed: w + 1, withinCluster: 'off' });
      out.push({ truth, raw: t.raw, tilt: t.estimate!, off: o.estimate!, inTilt: truth >= t.interval![0] && truth <= t.interval![1], inOff: truth >= o.interval![0] && truth <= o.interval![1], width: t.interval![1] - t.interval![0] });
    }
    const m = (f: (x: (typeof out)[number]) => number) => out.reduce((a, x) => a + f(x), 0) / out.length;
    return {
      coverageTilt: m((x) => (x.inTilt ? 1 : 0)),
      coverageOff: m((x) => (x.inOff ? 1 : 0)),
      errTilt: m((x) => Math.abs(x.tilt - x.truth)),
      errOff: m((x) => Math.abs(x.off - x.truth)),
      errRaw: m((x) => Math.abs(x.raw - x.truth)),
      width: m((x) => x.width),
    };
  }

  it('the tilt term: near-nominal coverage whether production leans on failing sub-groups or not, and closer than plain post-stratification when it does', { timeout: 600_000 }, async () => {
    const lean = await tiltWorlds(-3, 150, 41);
    const none = await tiltWorlds(0, 150, 42);
    if (process.env.EVALGAP_TEST_PRINT) console.log({ lean, none });
    // measured: 94.0% and 92.7%; plain post-stratification 5.3% and 84.7%
    for (const x of [lean, none]) {
      expect(x.coverageTilt).toBeGreaterThanOrEqual(0.85);
      expect(x.coverageTilt).toBeLessThanOrEqual(0.95);
    }
    // plain post-stratification misses production's lean inside clusters
    expect(lean.coverageOff).toBeLessThan(0.5);
    // measured: 3.8 against 7.2 points; without a lean the noisy slope costs some accuracy (1.45 against 1.18 points)
    expect(lean.errTilt).toBeLessThan(0.6 * lean.errOff);
    expect(none.errTilt).toBeLessThan(1.35 * none.errOff);
  });

  /**
   * The tilt worlds above plus covered traffic the eval cases do not represent: 20 topics with no eval case, each
   * landing in a random cluster, drawn like the tagged sub-groups (a fifth failing) and weighted by production as
   * they are (e^{λ p + 0.7 ε}, scaled to about `unrepShare` of the requests). Their volume does not follow their
   * cluster's eval pass rate, so they dilute the slope fitted across clusters. Each covered request lands in the
   * deepest depth band with probability 0.75 when the eval represents it, 0.25 when not.
   */
  async function unrepresentedWorlds(lambda: number, worlds: number, seed: number, unrepShare: number) {
    const breathe = breather();
    const u = (gammaRandom.factory({ seed }).PRNG as unknown as { normalized: () => number }).normalized;
    const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    const rate = () => (u() < 0.2 ? 0.3 + 0.4 * u() : 0.85 + 0.14 * u());
    const out: { truth: number; raw: number; deep: number; all: number; inDeep: boolean; inAll: boolean; slopeDeep: number; slopeAll: number; shareTrue: number; shareHat: number; width: number }[] = [];
    for (let w = 0; w < worlds; w++) {
      await breathe();
      const cs: ClusterCounts[] = [];
      const groups: { c: number; p: number; wt: number; represented: boolean }[] = [];
      for (let c = 0; c < 40; c++) {
        const G = 1 + Math.floor(u() * 3);
        const subgroups: { n: number; s: number }[] = [];
        let n = 0;
        let s = 0;
        for (let t = 0; t < G; t++) {
          const p = rate();
          let k = 0;
          for (let i = 0; i < 12; i++) if (u() < p) k++;
          subgroups.push({ n: 12, s: k });
          n += 12;
          s += k;
          groups.push({ c, p, wt: Math.exp(lambda * p + 0.7 * normal()), represented: true });
        }
        cs.push({ cluster: c, label: `c${c}`, group: '', evalCases: n, evalPassed: s, covered: 0, uncovered: 0, subgroups, deepCovered: 0 });
      }
      const tagged = groups.reduce((a, g) => a + g.wt, 0);
      const unrep = Array.from({ length: 20 }, () => {
        const p = rate();
        return { c: Math.floor(u() * 40), p, wt: Math.exp(lambda * p + 0.7 * normal()), represented: false };
      });
      // scaled so that the unrepresented topics hold about unrepShare of the traffic in expectation
      const scale = ((unrepShare / (1 - unrepShare)) * tagged) / unrep.reduce((a, g) => a + g.wt, 0) || 0;
      for (const g of unrep) groups.push({ ...g, wt: g.wt * scale });
      const total = groups.reduce((a, g) => a + g.wt, 0);
      let truth = 0;
      let unrepresented = 0;
      for (let r = 0; r < 5000; r++) {
        let x = u() * total;
        let j = 0;
        while (j < groups.length - 1 && (x -= groups[j].wt) > 0) j++;
        const g = groups[j];
        cs[g.c].covered++;
        if (!g.represented) unrepresented++;
        if (u() < (g.represented ? 0.75 : 0.25)) cs[g.c].deepCovered!++;
        truth += g.p;
      }
      truth /= 5000;
      const d = estimateScore(cs, { draws: 1000, seed: w + 1 });
      const a = estimateScore(cs.map(({ deepCovered: _, ...c }) => c), { draws: 1000, seed: w + 1 });
      out.push({
        truth,
        raw: d.raw,
        deep: d.estimate!,
        all: a.estimate!,
        inDeep: truth >= d.interval![0] && truth <= d.interval![1],
        inAll: truth >= a.interval![0] && truth <= a.interval![1],
        slopeDeep: d.withinCluster!.slope,
        slopeAll: a.withinCluster!.slope,
        shareTrue: unrepresented / 5000,
        shareHat: d.withinCluster!.unrepresented?.share ?? NaN,
        width: d.interval![1] - d.interval![0],
      });
    }
    const m = (f: (x: (typeof out)[number]) => number) => out.reduce((a, x) => a + f(x), 0) / out.length;
    return {
      coverageDeep: m((x) => (x.inDeep ? 1 : 0)),
      coverageAll: m((x) => (x.inAll ? 1 : 0)),
      errDeep: m((x) => Math.abs(x.deep - x.truth)),
      errAll: m((x) => Math.abs(x.all - x.truth)),
      errRaw: m((x) => Math.abs(x.raw - x.truth)),
      biasDeep: m((x) => x.deep - x.truth),
      biasAll: m((x) => x.all - x.truth),
      slopeDeep: m((x) => x.slopeDeep),
      slopeAll: m((x) => x.slopeAll),
      shareTrue: m((x) => x.shareTrue),
      shareHat: m((x) => x.shareHat),
      widthDeep: m((x) => x.width),
    };
  }

  // the worlds with unrepresented traffic, computed once for the two tests below
  let unrepresentedCache: { lean: Awaited<ReturnType<typeof unrepresentedWorlds>>; none: Awaited<ReturnType<typeof unrepresentedWorlds>> } | null = null;
  const unrepresentedRuns = async () => (unrepresentedCache ??= { lean: await unrepresentedWorlds(-3, 150, 51, 0.3), none: await unrepresentedWorlds(0, 150, 52, 0.3) });

  it('fits the lean on the deepest band: closer to production\'s lean than a slope on all covered requests, which the traffic the eval does not represent dilutes', { timeout: 600_000 }, async () => {
    const { lean, none } = await unrepresentedRuns();
    if (process.env.EVALGAP_TEST_PRINT) console.log({ lean, none });
    // measured: slope −2.93 on the deepest band against −2.45 on all covered requests (true λ = −3); the estimate's
    // bias +2.5 points against +3.5, its error 4.3 against 5.0 (raw 13.0)
    expect(lean.slopeDeep).toBeLessThan(lean.slopeAll - 0.3);
    expect(lean.biasDeep).toBeLessThan(0.8 * lean.biasAll);
    expect(lean.errDeep).toBeLessThan(lean.errAll);
    // no lean: no cost (measured 2.25 against 2.37 points)
    expect(none.errDeep).toBeLessThan(1.1 * none.errAll);
    // NOT met in these worlds (docs/estimate.md): the 90% interval holds the truth in 76% (lean) and 73% (none) of
    // them, against 71% and 76% fitted on all covered requests: the unrepresented topics' own pass rates (30% of the
    // traffic, 20 topics) vary more than anything the interval counts, and no count the estimate reads sizes them
  });

  it('the unrepresented term: sized from the shallow bands\' diluted lean, it widens the interval where production leans (worlds with 30% unrepresented traffic)', { timeout: 600_000 }, async () => {
    const { lean, none } = await unrepresentedRuns();
    // û from the dilution of the shallower bands' slope: 19% of covered traffic where production leans (true 30%: the
    // deepest band's own unrepresented requests, 12.5% of it here, dilute the deep slope too, so û falls short)
    expect(lean.shareHat).toBeGreaterThan(0.4 * lean.shareTrue);
    expect(lean.shareHat).toBeLessThan(lean.shareTrue);
    // measured: the 90% interval holds the truth in 78.7% of the leaning worlds (76.0% without the term; still short of
    // 85%: docs/estimate.md) and 74.0% without a lean (73.3%: the term is proportional to |λ|)
    expect(lean.coverageDeep).toBeGreaterThan(0.78);
    expect(none.coverageDeep).toBeGreaterThanOrEqual(0.73);
  });

  it('the unrepresented term\'s parts: û = (S/N) · clamp(1 − λ_S/λ_D, 0, 1), sd = û · |λ| · V_G; none without bands or without shallow requests', () => {
    // 20 clusters of two tags, production leaning on failure; the shallow requests hold a flat share of unrepresented traffic
    const s = sampler(21);
    const cs: ClusterCounts[] = Array.from({ length: 20 }, (_, c) => {
      const bad = 0.3 + 0.4 * s.u();
      const good = 0.85 + 0.14 * s.u();
      const nb = 5 + Math.floor(s.u() * 20);
      const sb = s.binom(nb, bad);
      const sg = s.binom(40 - nb, good);
      const p = (sb + sg) / 40;
      const deep = Math.round(400 * Math.exp(-3 * p + 0.3 * (s.u() - 0.5)));
      // shallow: a quarter of the deep requests (represented) plus 60 requests whatever the pass rate (unrepresented)
      return { cluster: c, label: `c${c}`, group: '', evalCases: 40, evalPassed: sb + sg, covered: deep + Math.round(deep / 4) + 60, deepCovered: deep, uncovered: 0, subgroups: [{ n: nb, s: sb }, { n: 40 - nb, s: sg }] };
    });
    const e = estimateScore(cs, { seed: 5 });
    const wc = e.withinCluster!;
    const un = wc.unrepresented!;
    const n = cs.reduce((a, c) => a + c.covered, 0);
    const shallowShare = cs.reduce((a, c) => a + c.covered - c.deepCovered!, 0) / n;
    if (process.env.EVALGAP_TEST_PRINT) console.log({ wc, shallowShare });
    expect(wc.fittedOn).toBe('deepest band');
    expect(un.shallowSlope).toBeGreaterThan(wc.rawSlope);
    expect(un.share).toBeCloseTo(shallowShare * Math.min(1, Math.max(0, 1 - un.shallowSlope / wc.rawSlope)), 12);
    expect(un.share).toBeGreaterThan(0);
    expect(un.topicSpread).toBeCloseTo(heterogeneity(cs.flatMap((c) => c.subgroups!)), 12);
    expect(un.sd).toBeCloseTo(un.share * Math.abs(wc.slope) * un.topicSpread ** 2, 12);
    // the point estimate is not moved by it
    const noShallow = estimateScore(cs.map((c) => ({ ...c, covered: c.deepCovered! })), { seed: 5 });
    expect(noShallow.withinCluster!.unrepresented).toBeNull();
    const noBands = estimateScore(cs.map(({ deepCovered: _, ...c }) => c), { seed: 5 });
    expect(noBands.withinCluster!.fittedOn).toBe('covered');
    expect(noBands.withinCluster!.unrepresented).toBeNull();
  });

  it('the interval carries the slope shrinkage\'s bias (|unshrunk − shrunk slope| · Σ w τ²), reported in withinCluster', () => {
    // 12 clusters of two tags (one failing), production leaning on failure with noise: the fitted slope is shrunk
    const s = sampler(11);
    const cs: ClusterCounts[] = Array.from({ length: 12 }, (_, c) => {
      const bad = 0.3 + 0.4 * s.u();
      const good = 0.85 + 0.14 * s.u();
      const nb = 5 + Math.floor(s.u() * 20);
      const sb = s.binom(nb, bad);
      const sg = s.binom(40 - nb, good);
      const p = (sb + sg) / 40;
      return { cluster: c, label: `c${c}`, group: '', evalCases: 40, evalPassed: sb + sg, covered: Math.round(400 * Math.exp(-1 * p + 1.5 * (s.u() - 0.5))), uncovered: 0, subgroups: [{ n: nb, s: sb }, { n: 40 - nb, s: sg }] };
    });
    const e = estimateScore(cs, { seed: 5 });
    const wc = e.withinCluster!;
    const n = cs.reduce((a, c) => a + c.covered, 0);
    const t2 = cs.reduce((a, c) => a + (c.covered / n) * heterogeneity(c.subgroups!) ** 2, 0);
    if (process.env.EVALGAP_TEST_PRINT) console.log({ wc, low: e.estimate! - e.interval![0], sampling: e.estimate! - e.samplingInterval![0] });
    expect(Math.abs(wc.rawSlope - wc.slope)).toBeGreaterThan(0.2);
    expect(wc.shrinkageBias).toBeCloseTo(Math.abs(wc.rawSlope - wc.slope) * t2, 9);
    // the lower end reaches past the shrinkage's bias
    expect(e.estimate! - e.interval![0]).toBeGreaterThan(1.645 * wc.shrinkageBias);
  });

  it('withinCluster off is plain post-stratification: the interval is the sampling interval', async () => {
    const { estimateScore } = await import('../../src/estimate/poststratify.js');
    const cs = [
      { cluster: 0, label: 'a', group: '', evalCases: 40, evalPassed: 28, covered: 500, uncovered: 0, subgroups: [{ n: 20, s: 19 }, { n: 20, s: 9 }] },
      { cluster: 1, label: 'b', group: '', evalCases: 40, evalPassed: 38, covered: 500, uncovered: 0, subgroups: [{ n: 40, s: 38 }] },
    ];
    const s = estimateScore(cs, { seed: 3, withinCluster: 'off' });
    expect(s.interval).toEqual(s.samplingInterval);
    expect(s.withinCluster).toBeNull();
    // two clusters are too few to fit a slope: no correction
    expect(estimateScore(cs, { seed: 3 }).withinCluster).toBeNull();
  });
});
