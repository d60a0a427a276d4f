/**
 * The per-alternative e-value dispersion of the cluster_mix share detectors (session-evalue.ts):
 * checked against a brute-force Monte-Carlo of sticky sessions (all turns of a session in the
 * cluster or none), against the design effect, and at its limits.
 */
import { describe, expect, it } from 'vitest';
import { addRuns, emptyRuns, evalueDispersion, runsDesignEffect, shareDispersion, tailFactors } from '../../src/monitor/session-evalue.js';
import { rng } from '../../src/monitor/stats.js';

/** the bench generator's session sizes: 1..30 turns, P(L) ∝ 0.88^L */
const SIZES = Array.from({ length: 30 }, (_, i) => Math.pow(0.88, i + 1));
const TOTAL = SIZES.reduce((a, b) => a + b, 0);
const RATIOS = [1.25, 1.5, 2, 3, 5];

function drawSize(r: () => number): number {
  let u = r() * TOTAL;
  for (let i = 0; i < SIZES.length; i++) {
    u -= SIZES[i];
    if (u < 0) return i + 1;
  }
  return SIZES.length;
}

/** a histogram of sticky sessions of these sizes (the counts y of a session in its cluster = its size) */
function stickyHistogram(weights: number[]): ReturnType<typeof emptyRuns> {
  const h = emptyRuns();
  weights.forEach((w, i) => addRuns(h, i + 1, w * 1e6));
  return h;
}

/**
 * Brute force: draw n sticky sessions (size from SIZES, all turns in the cluster with probability
 * p, else none); the sample mean (and its standard error) of each session's likelihood ratio for
 * odds ratio r, raised to 1/φ: an e-value needs mean ≤ 1.
 */
function monteCarlo(p: number, ratio: number, n: number, seed: number): (phi: number) => { mean: number; se: number } {
  const r = rng(seed);
  // tally (size, in the cluster) once; the mean at any φ is then a sum over the tally
  const tally = new Map<number, [number, number]>();
  for (let s = 0; s < n; s++) {
    const m = drawSize(r);
    const t = tally.get(m) ?? [0, 0];
    t[r() < p ? 1 : 0] += 1;
    tally.set(m, t);
  }
  const p1 = (ratio * p) / (1 - p + ratio * p);
  const lin = Math.log(p1 / p);
  const lout = Math.log((1 - p1) / (1 - p));
  return (phi: number) => {
    let e = 0;
    let e2 = 0;
    for (const [m, [out, inn]] of tally) {
      const a = Math.exp((m * lout) / phi);
      const b = Math.exp((m * lin) / phi);
      e += out * a + inn * b;
      e2 += out * a * a + inn * b * b;
    }
    const mean = e / n;
    return { mean, se: Math.sqrt((e2 / n - mean * mean) / n) };
  };
}

describe('evalueDispersion: the dispersion at which a session likelihood ratio is an e-value', () => {
  const h = stickyHistogram(SIZES.map((w) => w / TOTAL));
  const D = runsDesignEffect(h);

  it('sessions of one turn: 1 for every alternative (the design effect); fixed sizes m: m', () => {
    const one = emptyRuns();
    addRuns(one, 1, 5000);
    for (const r of RATIOS) expect(evalueDispersion(one, r)).toBe(1);
    for (const m of [2, 7, 30]) {
      const fixed = emptyRuns();
      addRuns(fixed, m, 100);
      for (const r of RATIOS) expect(evalueDispersion(fixed, r)).toBeCloseTo(m, 6);
    }
    expect(evalueDispersion(emptyRuns(), 5)).toBe(1);
  });

  it('is at least the design effect Σm²/Σm of sticky sessions, equal to it as the odds ratio → 1, and grows with the odds ratio', () => {
    expect(D).toBeCloseTo(12.99, 2);
    expect(evalueDispersion(h, 1.001) / D).toBeCloseTo(1, 2);
    let prev = D;
    for (const r of RATIOS) {
      const f = evalueDispersion(h, r);
      expect(f).toBeGreaterThanOrEqual(prev);
      prev = f;
    }
    // about 1.18× the design effect at odds ratio 5 on this size distribution
    expect(tailFactors(h, [5])[0]).toBeCloseTo(evalueDispersion(h, 5) / D, 12);
    expect(evalueDispersion(h, 5) / D).toBeGreaterThan(1.15);
    expect(evalueDispersion(h, 5) / D).toBeLessThan(1.2);
  });

  it('agrees with a brute-force Monte-Carlo of sticky sessions: the sampled mean is ≤ 1 at φ*, above 1 at 0.9·φ* and at the design effect', () => {
    for (const p of [0.02, 0.1]) {
      for (const r of [2, 3, 5]) {
        const f = evalueDispersion(h, r);
        const mc = monteCarlo(p, r, 1_000_000, 17 + Math.round(100 * p) + r);
        // an e-value at φ* (the limit of small shares; a larger share only lowers the mean) …
        const at = mc(f);
        expect(at.mean).toBeLessThanOrEqual(1 + 3 * at.se);
        if (r < 3) continue;
        // … not a loose bound: 10% less dispersion is not one, nor is the design effect alone
        const below = mc(0.9 * f);
        expect(below.mean).toBeGreaterThan(1 + 3 * below.se);
        const de = mc(D);
        expect(de.mean).toBeGreaterThan(1 + 3 * de.se);
      }
    }
  });

  it('sessions longer than 64 requests are bucketed; the chord bound keeps the dispersion at or above the exact one', () => {
    const w = Array.from({ length: 300 }, (_, i) => Math.pow(0.985, i + 1));
    const bucketed = emptyRuns();
    w.forEach((x, i) => addRuns(bucketed, i + 1, x * 1e4));
    // the exact value: bisection on Σ w_m·h(m/φ) over every size
    const exact = (r: number) => {
      const H = (u: number) => w.reduce((a, x, i) => a + x * (Math.pow(r, (i + 1) * u) - 1 - (i + 1) * u * (r - 1)), 0);
      let lo = 0;
      let hi = 1;
      for (let k = 0; k < 60; k++) {
        const m = (lo + hi) / 2;
        if (H(m) <= 0) lo = m;
        else hi = m;
      }
      return 1 / lo;
    };
    for (const r of RATIOS) {
      const f = evalueDispersion(bucketed, r);
      expect(f).toBeGreaterThanOrEqual(exact(r) * (1 - 1e-9));
      expect(f).toBeLessThan(exact(r) * 1.25);
    }
  });

  it('shareDispersion: the design effect times the tail factor φ*_r/D per alternative, never below the design effect, capped; unchanged without sessions', () => {
    const seg = (N: number, v: number) => 2 * (1 + v / Math.max(1, N));
    const phi = () => 2;
    // D = 4: tail factors 0.5 (→ 1), 1.5 and 5 (capped at 8 / 2)
    const s = shareDispersion(seg, phi, [2, 6, 20], 4, 8);
    expect(s(100, 10, 0)).toBeCloseTo(seg(100, 10), 12);
    expect(s(100, 10, 1)).toBeCloseTo(seg(100, 10) * 1.5, 12);
    expect(s(100, 10, 2)).toBeCloseTo((seg(100, 10) * 8) / 2, 12);
    expect(s(100, 10)).toBe(seg(100, 10));
    expect(shareDispersion(seg, phi, null, 4, 8)(100, 10, 2)).toBe(seg(100, 10));
  });
});
