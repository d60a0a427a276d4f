/** Mondrian conformal calibration: reference quantiles (scipy) and the stated guarantee by simulation. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { betaInterval, calibrateMondrian, conformalThreshold } from '../../src/coverage/calibrate.js';
import { rng } from '../../src/coverage/vec.js';

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'vectors', 'beta-quantiles.json'), 'utf8')) as {
  beta: { a: number; b: number; p: number; q: number }[];
};

function gaussian(r: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r());
}

describe('betaInterval', () => {
  it('matches scipy.stats.beta.ppf (test/vectors/gen_beta_quantiles.py)', () => {
    for (const v of vectors.beta) {
      if (v.p >= 0.5) continue;
      const level = 1 - 2 * v.p;
      const [lo, hi] = betaInterval(v.a, v.b, level);
      expect(lo).toBeCloseTo(v.q, 6);
      const upper = vectors.beta.find((u) => u.a === v.a && u.b === v.b && Math.abs(u.p - (1 - v.p)) < 1e-12)!;
      expect(hi).toBeCloseTo(upper.q, 6);
    }
  });
});

describe('conformalThreshold', () => {
  it('is the score at position (n+1)α, interpolated, and -Infinity when ⌊(n+1)α⌋ is 0', () => {
    const s = Float64Array.from({ length: 200 }, (_, i) => 10 * i);
    expect(conformalThreshold(s.subarray(0, 99), 0.05)).toBe(40); // n = 99: p = 100·0.05 = 5
    expect(conformalThreshold(s.subarray(0, 129), 0.05)).toBeCloseTo(55, 9); // n = 129: p = 6.5, between 50 and 60
    expect(conformalThreshold(s.subarray(0, 18), 0.05)).toBe(-Infinity); // ⌊19·0.05⌋ = 0
    expect(conformalThreshold(s.subarray(0, 19), 0.05)).toBe(0);
  });
});

describe('calibrateMondrian', () => {
  it('gives each large region its own threshold, and small ones the pooled threshold with their own estimate', () => {
    const r = rng(1);
    const scores: number[] = [];
    const region: number[] = [];
    for (let i = 0; i < 200; i++) (scores.push(r()), region.push(0));
    for (let i = 0; i < 200; i++) (scores.push(2 + r()), region.push(1));
    for (let i = 0; i < 10; i++) (scores.push(-1 + r() * 0.1), region.push(2)); // small and all below everything
    const c = calibrateMondrian(scores, region, 3, 0.05, { minRegion: 30 });
    expect(c.regions[0].own).toBe(true);
    expect(c.regions[1].own).toBe(true);
    expect(c.regions[0].threshold).toBeLessThan(0.1);
    expect(c.regions[1].threshold).toBeGreaterThan(2);
    expect(c.regions[0].expectedRate).toBeCloseTo(0.05, 12);
    expect(c.regions[2].own).toBe(false);
    expect(c.regions[2].threshold).toBe(c.threshold);
    // the one small region is under minRegion even pooled: the threshold comes from all scores
    expect(c.threshold).toBe(conformalThreshold(Float64Array.from(scores).sort(), 0.05));
    expect(c.regions[2].expectedRate).toBe(1); // all 10 below the pooled threshold
    expect(c.regions[2].expectedRateInterval[1]).toBeLessThanOrEqual(1);
    const w = [200 / 410, 200 / 410, 10 / 410];
    expect(c.expectedRate).toBeCloseTo(w[0] * 0.05 + w[1] * 0.05 + w[2] * 1, 12);
  });

  it('pools the small regions into one more region with its own threshold', () => {
    const r = rng(2);
    const scores: number[] = [];
    const region: number[] = [];
    for (let i = 0; i < 300; i++) (scores.push(5 + r()), region.push(0)); // big, tight and high
    for (let c = 1; c <= 10; c++) for (let i = 0; i < 20; i++) (scores.push(r() * 2), region.push(c)); // 10 small, diffuse
    const c = calibrateMondrian(scores, region, 11, 0.05, { minRegion: 30 });
    expect(c.regions[0].own).toBe(true);
    const small = scores.filter((_, i) => region[i] > 0).sort((a, b) => a - b);
    expect(c.threshold).toBeCloseTo(conformalThreshold(small, 0.05), 12);
    let below = 0;
    for (const s of small) if (s < c.threshold) below++;
    expect(below).toBe(10); // (200 + 1)·0.05 = 10.05
    // so the overall rate is about the target, not the small regions' rate under a threshold set mostly by the big one
    expect(c.expectedRate).toBeCloseTo((300 / 500) * 0.05 + (200 / 500) * (10 / 200), 3);
  });

  it('holds its guarantee in simulation: per-region rate ≈ α, and the realised rate inside the 90% interval at least about 90% of the time', () => {
    const r = rng(7);
    const g = gaussian(r);
    // three regions with different score distributions; exchangeable calibration and fresh queries
    const draw = [() => g(), () => 3 + 0.3 * g(), () => r() * 2];
    const nCal = [100, 60, 200];
    const alpha = 0.05;
    const trials = 300;
    const fresh = 1500;
    const inside = [0, 0, 0];
    let insideAll = 0;
    const meanRate = [0, 0, 0];
    for (let t = 0; t < trials; t++) {
      const scores: number[] = [];
      const region: number[] = [];
      nCal.forEach((n, c) => {
        for (let i = 0; i < n; i++) (scores.push(draw[c]()), region.push(c));
      });
      const cal = calibrateMondrian(scores, region, 3, alpha, { minRegion: 30, level: 0.9 });
      let allBelow = 0;
      nCal.forEach((_, c) => {
        let below = 0;
        for (let i = 0; i < fresh; i++) if (draw[c]() < cal.regions[c].threshold) below++;
        const rate = below / fresh;
        meanRate[c] += rate / trials;
        const [lo, hi] = cal.regions[c].expectedRateInterval;
        if (rate >= lo && rate <= hi) inside[c]++;
        allBelow += rate * (nCal[c] / 360);
      });
      const [lo, hi] = cal.expectedRateInterval;
      if (allBelow >= lo && allBelow <= hi) insideAll++;
    }
    nCal.forEach((_, c) => {
      expect(Math.abs(meanRate[c] - alpha)).toBeLessThan(0.006);
      // 300 trials: binomial sd of the coverage ≈ 1.7 points; the interval spans two Betas, so it may over-cover
      expect(inside[c] / trials).toBeGreaterThan(0.85);
      expect(inside[c] / trials).toBeLessThan(0.995);
    });
    expect(insideAll / trials).toBeGreaterThan(0.85);
    expect(insideAll / trials).toBeLessThan(0.99);
  });
});
