/**
 * The version comparison's statistics by simulation: coverage of the confidence sequences under
 * continuous peeking, false verdicts for identical versions with correlated sessions, detection of
 * a regression, the multiplicity correction, and the mixture against numerical integration.
 */
import { describe, expect, it } from 'vitest';
import { JEFFREYS, logMixture, rateInterval, twoSampleInterval } from '../../src/compare/sequence.js';
import { ALL, RateComparison, UNCOVERED, compareVersions, emptyArm, type CompareInput, type SegmentArm } from '../../src/compare/detector.js';
import { CanaryGuard, GuardConfigSchema } from '../../src/compare/guard.js';
import { comparePaired, emptyPaired, pairedSegment } from '../../src/compare/paired.js';

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A session of 1–6 requests whose outcome probability is p × a session frailty (mean 1): correlated within. */
function sessionValue(r: () => number, p: number): number {
  const len = 1 + Math.floor(r() * 6);
  const frailty = r() < 0.2 ? 3.5 : 0.375; // mean 0.2·3.5 + 0.8·0.375 = 1
  const q = Math.min(1, p * frailty);
  let k = 0;
  for (let i = 0; i < len; i++) if (r() < q) k++;
  return k / len;
}

describe('the beta-binomial mixture confidence sequence', () => {
  it('matches the mixture integral computed by quadrature', () => {
    for (const [n, s, p] of [
      [10, 3, 0.2],
      [200, 17.5, 0.05],
      [50, 0, 0.1],
      [1, 1, 0.9],
    ] as const) {
      // ∫ q^s (1-q)^(n-s) Beta(q; ½, ½) dq / (p^s (1-p)^(n-s)) by the midpoint rule in θ, q = sin²θ
      const steps = 200_000;
      let sum = 0;
      for (let i = 0; i < steps; i++) {
        const th = ((i + 0.5) / steps) * (Math.PI / 2);
        const q = Math.sin(th) ** 2;
        // Beta(½,½) density dq = (2/π) dθ under q = sin²θ
        sum += Math.exp(s * Math.log(q) + (n - s) * Math.log1p(-q) - s * Math.log(p) - (n - s) * Math.log1p(-p)) * (2 / Math.PI) * (Math.PI / 2 / steps);
      }
      expect(logMixture({ n, s }, p, JEFFREYS)).toBeCloseTo(Math.log(sum), 4);
    }
  });

  it('holds the true rate at every look with probability ≥ 1 - α (300 runs, a look after every unit)', () => {
    const alpha = 0.1;
    const p = 0.08;
    const runs = 300;
    let missed = 0;
    let naiveMissed = 0;
    for (let run = 0; run < runs; run++) {
      const r = rng(1000 + run);
      let n = 0;
      let s = 0;
      let miss = false;
      let naive = false;
      for (let i = 0; i < 1500; i++) {
        n++;
        s += r() < p ? 1 : 0;
        if (!miss && n % 5 === 0) {
          const iv = rateInterval({ n, s }, alpha);
          if (p < iv.lo || p > iv.hi) miss = true;
        }
        // the fixed-sample Wald interval, peeked at the same looks (the failure anytime validity prevents)
        if (!naive && n >= 30 && n % 5 === 0) {
          const ph = s / n;
          const h = 1.645 * Math.sqrt((ph * (1 - ph)) / n);
          if (p < ph - h || p > ph + h) naive = true;
        }
      }
      if (miss) missed++;
      if (naive) naiveMissed++;
    }
    expect(missed / runs).toBeLessThanOrEqual(alpha);
    expect(naiveMissed / runs).toBeGreaterThan(2 * alpha); // the check can fail: peeking breaks a fixed-horizon interval
  });

  it('narrows like √(log n / n) and is a proper sub-interval of [0, 1]', () => {
    const a = rateInterval({ n: 100, s: 10 }, 0.05);
    const b = rateInterval({ n: 10_000, s: 1000 }, 0.05);
    expect(a.lo).toBeGreaterThan(0);
    expect(a.hi).toBeLessThan(1);
    expect(b.lo).toBeGreaterThan(a.lo);
    expect(b.hi).toBeLessThan(a.hi);
    expect(b.hi - b.lo).toBeLessThan((a.hi - a.lo) / 5);
    expect(rateInterval({ n: 0, s: 0 }, 0.05)).toEqual({ lo: 0, hi: 1 });
    expect(rateInterval({ n: 50, s: 0 }, 0.05).lo).toBe(0);
    expect(rateInterval({ n: 50, s: 50 }, 0.05).hi).toBe(1);
  });

  it('gives a ratio and difference interval consistent with the two arms', () => {
    const t = twoSampleInterval({ n: 5000, s: 500 }, { n: 500, s: 150 }, 0.01);
    expect(t.difference.lo).toBeCloseTo(t.candidate.lo - t.baseline.hi, 12);
    expect(t.ratio.lo).toBeCloseTo(t.candidate.lo / t.baseline.hi, 12);
    expect(t.ratio.lo).toBeGreaterThan(1);
  });
});

describe('RateComparison', () => {
  it('gives a false verdict for identical versions in ≤ α of 300 runs, looked at after every 20 sessions (correlated sessions, 5%/95% split)', () => {
    const alpha = 0.05;
    const runs = 300;
    let wrong = 0;
    for (let run = 0; run < runs; run++) {
      const r = rng(50_000 + run);
      const t = new RateComparison(alpha);
      let bad = false;
      for (let i = 1; i <= 8000; i++) {
        const arm = r() < 0.05 ? 'candidate' : 'baseline';
        const len = 1 + Math.floor(r() * 6);
        const q = Math.min(1, 0.1 * (r() < 0.2 ? 3.5 : 0.375));
        let k = 0;
        for (let j = 0; j < len; j++) k += r() < q ? 1 : 0;
        t.update(arm, k / len);
        if (i % 20 === 0) {
          if (!bad && t.verdict !== 'no evidence yet') bad = true;
        }
      }
      if (bad) wrong++;
    }
    expect(wrong / runs).toBeLessThanOrEqual(alpha);
  });

  it('stays within α for identical versions whose common rate follows a daily cycle (200 runs, 3 days, a look every 20 sessions)', () => {
    const alpha = 0.05;
    let wrong = 0;
    for (let run = 0; run < 200; run++) {
      const r = rng(90_000 + run);
      const t = new RateComparison(alpha);
      let bad = false;
      // 3 days of sessions; the rate swings 4%–16% with the hour, the same for both versions (random routing)
      for (let i = 1; i <= 9000 && !bad; i++) {
        const hour = ((i / 9000) * 72) % 24;
        const p = 0.1 + 0.06 * Math.sin((2 * Math.PI * hour) / 24);
        t.update(r() < 0.05 ? 'candidate' : 'baseline', sessionValue(r, p));
        if (i % 20 === 0 && t.verdict !== 'no evidence yet') bad = true;
      }
      if (bad) wrong++;
    }
    expect(wrong / 200).toBeLessThanOrEqual(alpha);
  });

  it('calls a tripled escalation rate worse, and a halved one better', () => {
    const r = rng(7);
    const worse = new RateComparison(0.05 / 300);
    const better = new RateComparison(0.05 / 300);
    let worseAt = -1;
    let betterAt = -1;
    for (let i = 1; i <= 40_000 && (worseAt < 0 || betterAt < 0); i++) {
      const cand = r() < 0.05;
      const arm = cand ? 'candidate' : 'baseline';
      const x = sessionValue(r, 0.1);
      worse.update(arm, cand ? sessionValue(r, 0.3) : x);
      better.update(arm, cand ? sessionValue(r, 0.05) : x);
      if (worseAt < 0 && worse.verdict === 'worse') worseAt = worse.stats('candidate').n;
      if (betterAt < 0 && better.verdict === 'better') betterAt = better.stats('candidate').n;
    }
    expect(worseAt).toBeGreaterThan(0);
    expect(worseAt).toBeLessThan(600);
    expect(betterAt).toBeGreaterThan(0);
    expect(worse.exceeds(1.5)).toBe(true);
    expect(worse.noWorseThan({ ratio: 1.2 })).toBe(false);
  });

  it('keeps its state as JSON', () => {
    const t = new RateComparison(0.01).set('baseline', { n: 900, s: 90 }).set('candidate', { n: 100, s: 31 });
    const u = RateComparison.fromJSON(JSON.parse(JSON.stringify(t)), 0.01);
    expect(u.interval).toEqual(t.interval);
    expect(() => t.update('candidate', 1.5)).toThrow(/\[0, 1\]/);
  });
});

function arm(units: number, rate: number, mixShare: number, over: Partial<SegmentArm> = {}): SegmentArm {
  return { ...emptyArm(), units, requests: units, escalated: units * rate, refused: 0, failed: 0, mix: mixShare, ...over };
}

describe('compareVersions', () => {
  it('splits α over clusters × outcomes, the overall rows and the mix, and names the worse cluster', () => {
    const segs = Array.from({ length: 10 }, (_, c) => ({
      cluster: c,
      baseline: arm(2000, 0.1, 2000),
      candidate: arm(200, c === 3 ? 0.4 : 0.1, 200),
    }));
    const input: CompareInput = {
      segments: [...segs, { cluster: UNCOVERED, baseline: arm(500, 0.2, 500), candidate: arm(50, 0.2, 50) }],
      overall: { cluster: ALL, baseline: arm(20_500, 0.1, 20_500), candidate: arm(2050, 0.115, 2050) },
      units: { baseline: 20_500, candidate: 2050 },
    };
    const res = compareVersions(input, { alpha: 0.05, outcomes: ['escalated', 'failed'] });
    expect(res.tests).toBe(12 * 2 + 11);
    expect(res.alphaPerTest).toBeCloseTo(0.05 / 35, 12);
    expect(res.worse).toEqual([3]);
    expect(res.overall.verdict).toBe('no evidence yet'); // the global rate barely moves
    expect(res.mixDiffers).toBe(false);
  });

  it('finds a candidate whose traffic avoids a cluster (a canary routed to easy users)', () => {
    const segs = [0, 1, 2].map((c) => ({
      cluster: c,
      baseline: arm(3000, 0.1, 3000),
      candidate: arm(c === 0 ? 20 : 400, 0.1, c === 0 ? 20 : 400),
    }));
    const res = compareVersions(
      { segments: segs, overall: { cluster: ALL, baseline: arm(9000, 0.1, 9000), candidate: arm(820, 0.1, 820) }, units: { baseline: 9000, candidate: 820 } },
      { alpha: 0.05, outcomes: ['escalated'] },
    );
    expect(res.mixDiffers).toBe(true);
    expect(res.segments[0].mix?.differs).toBe(true);
    expect(res.worse).toEqual([]);
  });
});

describe('CanaryGuard', () => {
  const cfg = (over: Record<string, unknown> = {}) =>
    GuardConfigSchema.parse({
      baseline: 'v1',
      candidate: 'v2',
      since: '2026-12-01T00:00:00Z',
      rollback: [
        { outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 },
        { outcome: 'failed', segments: 'uncovered', ratio: 2 },
      ],
      promote: { ratio: 1.2, difference: 0.02, min_share: 0.05 },
      ...over,
    });

  it('refuses a config that cannot mean what it says', () => {
    expect(() => cfg({ candidate: 'v1' })).toThrow(/must differ/);
    expect(() => cfg({ rollback: [{ outcome: 'slow', ratio: 1.2 }] })).toThrow(/latency_ms/);
    expect(() => cfg({ rollback: [{ outcome: 'escalated', ratio: 0.5 }] })).toThrow();
    expect(() => cfg({ rollback: [] })).toThrow();
    expect(() => cfg({ promote: { min_share: 0.1 } })).toThrow(/ratio or a difference/);
    expect(() => cfg({ surprise: 1 })).toThrow(/Unrecognized key/);
    expect(cfg().alpha).toBe(0.05);
  });

  /** Cumulative evidence of 4 clusters and uncovered traffic; cluster 2 holds 5% and escalates `mult`× on the candidate. */
  function stream(seed: number, mult: number, looks: number, perLook: number, g: CanaryGuard) {
    const r = rng(seed);
    const shares = [0.5, 0.3, 0.05, 0.1, 0.05];
    const ids = [0, 1, 2, 3, UNCOVERED];
    const esc = [0.1, 0.08, 0.1, 0.05, 0.2];
    const fail = [0.02, 0.02, 0.02, 0.02, 0.05];
    const arms = ids.map(() => ({ baseline: emptyArm(), candidate: emptyArm() }));
    const overall = { baseline: emptyArm(), candidate: emptyArm() };
    const verdicts = [];
    for (let l = 0; l < looks; l++) {
      for (let i = 0; i < perLook; i++) {
        const cand = r() < 0.1;
        const key = cand ? 'candidate' : 'baseline';
        let u = r();
        let k = 0;
        while (k < shares.length - 1 && u >= shares[k]) u -= shares[k++];
        const pe = cand && ids[k] === 2 ? Math.min(1, esc[k] * mult) : esc[k];
        const e = r() < pe ? 1 : 0;
        const f = r() < fail[k] ? 1 : 0;
        for (const a of [arms[k][key], overall[key]]) {
          a.units++;
          a.requests++;
          a.escalated += e;
          a.failed += f;
          a.mix++;
        }
      }
      verdicts.push(
        g.update({
          segments: ids.map((c, i) => ({ cluster: c, baseline: arms[i].baseline, candidate: arms[i].candidate })),
          overall: { cluster: ALL, ...overall },
          units: { baseline: overall.baseline.units, candidate: overall.candidate.units },
        }),
      );
    }
    return verdicts;
  }

  it('rolls back a regression confined to one small cluster, naming it, and never an identical candidate in ≤ α of 200 runs', () => {
    const hit = stream(3, 3, 40, 2000, new CanaryGuard(cfg(), [0, 1, 2, 3]));
    const first = hit.findIndex((v) => v.rollback.length > 0);
    expect(first).toBeGreaterThanOrEqual(0);
    expect(hit[first].rollback.map((f) => [f.cluster, f.outcome])).toEqual([[2, 'escalated']]);
    expect(hit[first].rollback[0].interval.ratio.lo).toBeGreaterThan(1.5);
    expect(hit[hit.length - 1].promote).toBe(false);
    let fired = 0;
    for (let run = 0; run < 200; run++) {
      const v = stream(100 + run, 1, 10, 2000, new CanaryGuard(cfg(), [0, 1, 2, 3]));
      if (v.some((x) => x.rollback.length > 0)) fired++;
    }
    expect(fired / 200).toBeLessThanOrEqual(0.05);
  });

  it('promotes a candidate no worse anywhere, and keeps what fired across a restart', () => {
    const promoting = cfg({ promote: { ratio: 1.2, difference: 0.05, min_share: 0.05, outcomes: ['escalated'] } });
    const v = stream(9, 0.7, 250, 4000, new CanaryGuard(promoting, [0, 1, 2, 3]));
    expect(v.some((x) => x.promote)).toBe(true);
    expect(v.some((x) => x.rollback.length > 0)).toBe(false);
    const g = new CanaryGuard(cfg(), [0, 1, 2, 3]);
    stream(3, 3, 40, 2000, g);
    const again = CanaryGuard.fromJSON(JSON.parse(JSON.stringify(g)), cfg(), [0, 1, 2, 3]);
    expect(again.toJSON().fired).toEqual(['0:2:escalated']);
    // latched: with no evidence at all the finding is still reported
    const empty = { cluster: 0, baseline: emptyArm(), candidate: emptyArm() };
    const res = again.update({ segments: [0, 1, 2, 3, UNCOVERED].map((c) => ({ ...empty, cluster: c })), overall: { ...empty, cluster: ALL }, units: { baseline: 0, candidate: 0 } });
    expect(res.rollback.map((f) => f.cluster)).toEqual([]); // below min_share without data: not eligible, not reported
    expect(again.toJSON().fired).toEqual(['0:2:escalated']);
  });
});

describe('paired (shadow) comparison', () => {
  /** sessions of 1–4 shadowed requests; each version escalates with p (correlated within a request by `agree`) */
  function run(seed: number, pBase: number, pCand: number, sessions: number, look: number, alpha: number) {
    const r = rng(seed);
    const seg = emptyPaired(0);
    const c = seg.outcomes.escalated;
    for (let i = 1; i <= sessions; i++) {
      const len = 1 + Math.floor(r() * 4);
      let c01 = 0;
      let c10 = 0;
      for (let j = 0; j < len; j++) {
        // a shared difficulty makes the two answers agree more often than chance (what pairing exploits)
        const hard = r() < 0.1;
        const b = r() < (hard ? 0.6 : pBase * 0.5) ? 1 : 0;
        const x = r() < (hard ? 0.6 * (pCand / pBase) : pCand * 0.5) ? 1 : 0;
        seg.pairs++;
        c.baseline += b;
        c.candidate += x;
        if (b === 0 && x === 1) c01++;
        if (b === 1 && x === 0) c10++;
      }
      c.candidateOnly += c01;
      c.baselineOnly += c10;
      if (c01 + c10 > 0) {
        c.units++;
        c.s += c01 / (c01 + c10);
      }
      if (i % look === 0) {
        const v = pairedSegment(seg, ['escalated'], alpha).verdict;
        if (v !== 'no evidence yet') return { verdict: v, at: seg.pairs };
      }
    }
    return { verdict: 'no evidence yet' as const, at: seg.pairs };
  }

  it('calls identical versions different in ≤ α of 300 runs looked at every 10 sessions, and finds a doubled rate', () => {
    let wrong = 0;
    for (let k = 0; k < 300; k++) if (run(300 + k, 0.1, 0.1, 3000, 10, 0.05).verdict !== 'no evidence yet') wrong++;
    expect(wrong / 300).toBeLessThanOrEqual(0.05);
    const hit = run(7, 0.1, 0.2, 20_000, 10, 0.05 / 100);
    expect(hit.verdict).toBe('worse');
    expect(run(8, 0.2, 0.1, 20_000, 10, 0.05 / 100).verdict).toBe('better');
  });

  it('splits α over (segments + 1) × outcomes', () => {
    const res = comparePaired({ segments: [emptyPaired(0), emptyPaired(1), emptyPaired(-1)], overall: emptyPaired(-2) }, { alpha: 0.05, outcomes: ['escalated', 'failed'] });
    expect(res.tests).toBe(8);
    expect(res.segments.every((s) => s.verdict === 'no evidence yet')).toBe(true);
  });
});
