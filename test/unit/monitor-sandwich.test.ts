import { describe, expect, it } from 'vitest';
import { directionalMoments, novelScores, type CrossMoments } from '../../src/monitor/sandwich.js';
import { rng } from '../../src/coverage/vec.js';

/**
 * Sessions of `intents` kinds: each has its own distribution over B bands; a session draws one
 * intent, a length 1–maxLen, and each turn repeats the previous band (a retry) with probability
 * `retry`, else draws from the intent's bands. Returns the cross-moments of one period and Σ g.
 */
function period(r: () => number, sessions: number, F: number[][], g: number[], retry: number, maxLen: number): { cm: CrossMoments; total: number; n: number } {
  const B = F[0].length;
  const t = new Array(B).fill(0);
  const x = new Array(B * B).fill(0);
  const my = new Array(B).fill(0);
  let n = 0;
  let m2 = 0;
  let total = 0;
  const draw = (f: number[]) => {
    let u = r();
    for (let b = 0; b < B; b++) if ((u -= f[b]) < 0) return b;
    return B - 1;
  };
  for (let s = 0; s < sessions; s++) {
    const f = F[Math.floor(r() * F.length)];
    const m = 1 + Math.floor(r() * maxLen);
    const y = new Array(B).fill(0);
    let b = draw(f);
    for (let k = 0; k < m; k++) {
      if (k > 0 && r() >= retry) b = draw(f);
      y[b] += 1;
      total += g[b];
    }
    n += m;
    m2 += m * m;
    for (let i = 0; i < B; i++) {
      t[i] += y[i];
      my[i] += m * y[i];
      for (let j = 0; j < B; j++) x[i * B + j] += y[i] * y[j];
    }
  }
  return { cm: { n, m2, t, x, my }, total, n };
}

describe('the design effect in a detector’s own direction (sandwich)', () => {
  // three bands: deep, shallow, covered. Intents differ most in how often they fall deep.
  const F = [
    [0.4, 0.3, 0.3],
    [0.01, 0.29, 0.7],
    [0.01, 0.39, 0.6],
    [0.02, 0.28, 0.7],
  ];
  const p = [0.1, 0.315, 0.575];
  const q = [0.6, 0.3, 0.1];

  it('matches the variance of Σ g over many periods of sticky sessions', () => {
    const r = rng(11);
    const g = novelScores(p, q, 0.2);
    const totals: number[] = [];
    const ns: number[] = [];
    let num = 0;
    let den = 0;
    for (let rep = 0; rep < 400; rep++) {
      const x = period(r, 300, F, g, 0.3, 12);
      totals.push(x.total / x.n);
      ns.push(x.n);
      const d = directionalMoments(x.cm, g)!;
      num += d.num;
      den += d.den;
    }
    const phi = num / den;
    // the empirical variance of the per-request mean of g against what independent requests would give
    const mean = totals.reduce((a, b) => a + b, 0) / totals.length;
    const varMean = totals.reduce((a, b) => a + (b - mean) ** 2, 0) / (totals.length - 1);
    const nBar = ns.reduce((a, b) => a + b, 0) / ns.length;
    const gbar = p.reduce((a, pb, b) => a + pb * g[b], 0);
    const varG = p.reduce((a, pb, b) => a + pb * (g[b] - gbar) ** 2, 0);
    const empirical = (varMean * nBar) / varG;
    expect(phi).toBeGreaterThan(2);
    expect(Math.abs(phi - empirical) / empirical).toBeLessThan(0.2);
  });

  it('sees more correlation in the deep direction than the family average when sessions stick to the deep band', () => {
    const r = rng(12);
    const x = period(r, 5000, F, [0, 0, 0], 0.3, 12);
    const deep = directionalMoments(x.cm, novelScores(p, q, 0.2))!;
    const covered = directionalMoments(x.cm, [0, 0, 1])!;
    expect(deep.num / deep.den).toBeGreaterThan(1.2 * (covered.num / covered.den));
  });

  it('is 1 for sessions of one request and for independent turns', () => {
    const r = rng(13);
    const g = novelScores(p, q, 0.1);
    const one = period(r, 20000, F, g, 0, 1);
    const d1 = directionalMoments(one.cm, g)!;
    expect(d1.num / d1.den).toBeCloseTo(1, 1);
    // every intent the same distribution and no retries: turns are independent
    const same = period(r, 4000, [p, p], g, 0, 12);
    const d2 = directionalMoments(same.cm, g)!;
    expect(Math.abs(d2.num / d2.den - 1)).toBeLessThan(0.1);
  });

  it('cannot measure a constant score', () => {
    const r = rng(14);
    const x = period(r, 100, F, [1, 1, 1], 0.3, 5);
    expect(directionalMoments(x.cm, [1, 1, 1])).toBeNull();
  });
});
