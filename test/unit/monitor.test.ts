/**
 * Detectors: arithmetic against reference implementations (committed vectors from
 * scripts/gen-monitor-vectors.py: ssrm-test for the Dirichlet-multinomial mixture, scipy's binomial
 * pmf for the CUSUM), run length under no change by simulation, floors, state round trips.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import gammaRandom from '@stdlib/random-base-gamma';
import { BernoulliCusum, DirichletMultinomialCusum, ProfileCusum, sequentialLogBayesFactors } from '../../src/monitor/detectors.js';
import { klBernoulli, klInterval, rng, totalVariation, tvInterval, tvIntervalApprox } from '../../src/monitor/stats.js';
import { scoreDetections } from '../../src/monitor/scoring.js';
import { binomial, multinomial } from '../helpers/monitor-sim.js';

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'monitor-vectors.json'), 'utf8'));

describe('reference vectors', () => {
  it('Dirichlet-multinomial mixture log Bayes factors equal ssrm-test sequential_posteriors', () => {
    expect(vectors.dirichlet.length).toBeGreaterThanOrEqual(5);
    for (const v of vectors.dirichlet) {
      const got = sequentialLogBayesFactors(v.data, v.p0, v.concentration);
      got.forEach((g, i) => expect(g).toBeCloseTo(v.logBayesFactors[i], 6));
    }
  });

  it('the detector increments reproduce the same sequence while it does not restart', () => {
    const v = vectors.dirichlet.find((d: { logBayesFactors: number[] }) => d.logBayesFactors[d.logBayesFactors.length - 1] > 100);
    const d = new DirichletMultinomialCusum({ concentration: v.concentration, threshold: 1e9, minRequests: 0 });
    // compare from the first row after which the reference stays positive
    const first = v.logBayesFactors.findIndex((_: number, i: number) => v.logBayesFactors.slice(i).every((x: number) => x > 0));
    const rows = v.data.slice(first);
    const ref = sequentialLogBayesFactors(rows, v.p0, v.concentration);
    rows.forEach((row: number[], i: number) => {
      const s = d.update(row, v.p0).statistic;
      if (ref.slice(0, i + 1).every((x) => x > 0)) expect(s).toBeCloseTo(ref[i], 6);
    });
  });

  it('binomial CUSUM statistics and alarms equal the scipy-based reference', () => {
    for (const v of vectors.cusum) {
      const d = new BernoulliCusum({ ratios: v.ratios, threshold: v.threshold, minRequests: v.minRequests, minEvents: v.minEvents });
      v.x.forEach((x: number, i: number) => {
        const r = d.update(x, v.n[i], v.p0, v.phi);
        expect(r.statistic).toBeCloseTo(v.statistic[i], 8);
        expect(r.alarm).toBe(v.alarm[i]);
      });
    }
  });
});

describe('ProfileCusum (novel topics on the coverage depth bands)', () => {
  // reference band mix: deep bands rare; the novel profile: deep bands common
  const p0 = [0.0025, 0.0025, 0.005, 0.01, 0.03, 0.05, 0.1, 0.2, 0.6];
  const q = [0.07, 0.06, 0.06, 0.12, 0.1, 0.2, 0.18, 0.12, 0.09];
  const mixes = [0.01, 0.02, 0.05, 0.1, 0.2];

  it('each increment is a likelihood ratio: its mean of e^llr under the reference is 1', () => {
    for (const eps of mixes) {
      let m = 0;
      for (let b = 0; b < p0.length; b++) {
        const c = p0.map((_, i) => (i === b ? 1 : 0));
        m += p0[b] * Math.exp(ProfileCusum.llr(c, p0, q, eps));
      }
      expect(m).toBeCloseTo(1, 12);
    }
  });

  it('run length under no change is at least e^h / G windows (simulated)', () => {
    const r = rng(12);
    const A = 100;
    const d = new ProfileCusum({ mixes, threshold: Math.log(A * mixes.length), minRequests: 0, minEvents: 0 });
    const T = 30_000;
    const alarms: number[] = [];
    for (let t = 0; t < T; t++) if (d.update(multinomial(r, 300, p0), p0, q).alarm) alarms.push(t);
    expect(scoreDetections(alarms, [], T).meanTimeBetweenFalseAlarms).toBeGreaterThanOrEqual(A);
  });

  it('sees 5% of traffic moving to the profile sooner than the uncovered share alone does', () => {
    const r = rng(13);
    const h = Math.log(8640 * 10);
    const below = 5; // bands 0..4 are below the threshold
    const pu0 = p0.slice(0, below).reduce((a, b) => a + b, 0);
    const p1 = p0.map((p, b) => 0.95 * p + 0.05 * q[b]);
    const pu1 = p1.slice(0, below).reduce((a, b) => a + b, 0);
    const delay = { profile: [] as number[], binary: [] as number[] };
    for (let rep = 0; rep < 20; rep++) {
      const dp = new ProfileCusum({ mixes, threshold: h });
      const db = new BernoulliCusum({ threshold: h });
      let done = { p: false, b: false };
      for (let t = 0; t < 2000 && !(done.p && done.b); t++) {
        const c = multinomial(r, 300, p1);
        const u = c.slice(0, below).reduce((a, b) => a + b, 0);
        if (!done.p && dp.update(c, p0, q).alarm) (done = { ...done, p: true }), delay.profile.push((t + 1) * 300);
        if (!done.b && db.update(u, 300, pu0).alarm) (done = { ...done, b: true }), delay.binary.push((t + 1) * 300);
      }
    }
    const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
    expect(delay.profile).toHaveLength(20);
    expect(pu1).toBeGreaterThan(pu0);
    expect(med(delay.profile)).toBeLessThan(0.75 * med(delay.binary));
  });

  it('state survives JSON; never alarms below the evidence floor', () => {
    const d = new ProfileCusum({ threshold: 2 });
    expect(d.update([30, 0, 0, 0, 0, 0, 0, 0, 0], p0, q).alarm).toBe(false); // 30 requests < 200
    const e = new ProfileCusum({ threshold: 2 }, JSON.parse(JSON.stringify(d.toJSON())));
    expect(e.statistic).toBe(d.statistic);
  });
});

describe('BernoulliCusum', () => {
  it('never alarms on 30 requests, however extreme (evidence floor)', () => {
    const d = new BernoulliCusum({ threshold: 5 });
    expect(d.update(30, 30, 0.05).alarm).toBe(false);
    expect(d.statistic).toBeGreaterThan(5);
  });

  it('state survives JSON and the detector resets after an alarm', () => {
    const r = rng(3);
    const a = new BernoulliCusum({ threshold: 8 });
    let b = new BernoulliCusum({ threshold: 8 });
    let alarms = 0;
    for (let t = 0; t < 400; t++) {
      const n = 150;
      const x = binomial(r, n, t > 200 ? 0.16 : 0.1);
      const va = a.update(x, n, 0.1);
      const vb = b.update(x, n, 0.1);
      expect(vb).toEqual(va);
      b = BernoulliCusum.fromJSON(JSON.parse(JSON.stringify(b.toJSON())), { threshold: 8 });
      if (va.alarm) {
        alarms++;
        expect(a.statistic).toBe(0);
      }
    }
    expect(alarms).toBeGreaterThan(0);
  });

  it('run length under no change is at least e^h / G windows (simulated)', () => {
    const r = rng(11);
    const A = 100;
    const ratios = [1.25, 1.5, 2, 3, 5];
    const d = new BernoulliCusum({ ratios, threshold: Math.log(A * ratios.length), minRequests: 0, minEvents: 0 });
    const T = 40_000;
    const alarms: number[] = [];
    for (let t = 0; t < T; t++) if (d.update(binomial(r, 200, 0.1), 200, 0.1).alarm) alarms.push(t);
    const s = scoreDetections(alarms, [], T);
    expect(s.meanTimeBetweenFalseAlarms).toBeGreaterThanOrEqual(A);
  });

  it('overdispersed windows break the guarantee unless the evidence is divided by the dispersion', () => {
    // beta-binomial windows: p_t ~ Beta(4.9, 44.1) (mean 0.1), n = 200 → φ = 1 + 199/50 ≈ 5
    const g = gammaRandom.factory({ seed: 5 });
    const r = rng(5);
    const A = 100;
    const T = 20_000;
    const mk = () => new BernoulliCusum({ threshold: Math.log(A * 5), minRequests: 0, minEvents: 0 });
    const naive = mk();
    const scaled = mk();
    let nNaive = 0;
    let nScaled = 0;
    // φ estimated the way the rules do: mean Pearson statistic of earlier windows
    let pearson = 0;
    for (let t = 0; t < T; t++) {
      const a = g(4.9, 1);
      const p = a / (a + g(44.1, 1));
      const x = binomial(r, 200, p);
      const phi = t < 200 ? 5 : Math.max(1, pearson / t);
      if (naive.update(x, 200, 0.1).alarm) nNaive++;
      if (scaled.update(x, 200, 0.1, phi).alarm) nScaled++;
      pearson += (x - 20) ** 2 / (200 * 0.1 * 0.9);
    }
    expect(pearson / T).toBeGreaterThan(4);
    expect(T / nNaive).toBeLessThan(A);
    expect(T / Math.max(1, nScaled)).toBeGreaterThanOrEqual(A);
  });

  it('a rate drifting slowly (shared by consecutive windows) keeps the guarantee only with φ of the whole segment', () => {
    // the rate moves to p0·(1 ± 0.2) for blocks of 60 windows of 600 requests: each window's Pearson
    // statistic shows φ(n) = 1 + κ·n, but a segment of N requests varies as 1 + κ·N
    const r = rng(31);
    const p0 = 0.05;
    const n = 600;
    const kappa = (0.2 ** 2 * p0) / (1 - p0);
    const phiOf = (N: number) => 1 + kappa * N;
    const A = 100;
    const mk = () => new BernoulliCusum({ threshold: Math.log(A * 5), minRequests: 0, minEvents: 0 });
    const perWindow = mk();
    const perSegment = mk();
    const T = 20_000;
    let p = p0;
    let a1 = 0;
    let a2 = 0;
    for (let t = 0; t < T; t++) {
      if (t % 60 === 0) p = p0 * (r() < 0.5 ? 0.8 : 1.2);
      const x = binomial(r, n, p);
      if (perWindow.update(x, n, p0, phiOf(n)).alarm) a1++;
      if (perSegment.update(x, n, p0, phiOf).alarm) a2++;
    }
    expect(T / Math.max(1, a1)).toBeLessThan(A);
    expect(T / Math.max(1, a2)).toBeGreaterThanOrEqual(A);
  });

  it('detects a rise within a few windows, near Lorden’s ln(ARL)/KL', () => {
    const r = rng(21);
    const h = Math.log(8640 * 5);
    const delays: number[] = [];
    for (let rep = 0; rep < 20; rep++) {
      const d = new BernoulliCusum({ threshold: h });
      for (let t = 0; t < 1000; t++) {
        const n = 100;
        if (d.update(binomial(r, n, t >= 100 ? 0.12 : 0.08), n, 0.08).alarm) {
          if (t >= 100) delays.push((t - 100 + 1) * n);
          break;
        }
      }
    }
    expect(delays.length).toBeGreaterThanOrEqual(19);
    const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
    const lorden = h / klBernoulli(0.12, 0.08);
    expect(mean).toBeLessThan(1.5 * lorden);
  });
});

describe('DirichletMultinomialCusum', () => {
  it('run length under no change is at least e^h windows (simulated), and a shift is found', () => {
    const r = rng(8);
    const p0 = [0.4, 0.3, 0.15, 0.1, 0.05];
    const A = 100;
    const d = new DirichletMultinomialCusum({ threshold: Math.log(A), minRequests: 0 });
    const T = 20_000;
    let alarms = 0;
    for (let t = 0; t < T; t++) if (d.update(multinomial(r, 200, p0), p0).alarm) alarms++;
    expect(T / Math.max(1, alarms)).toBeGreaterThanOrEqual(A);
    const q = [0.35, 0.27, 0.14, 0.09, 0.15];
    const e = new DirichletMultinomialCusum({ threshold: Math.log(8640) });
    let when = -1;
    for (let t = 0; t < 200 && when < 0; t++) if (e.update(multinomial(r, 200, q), p0).alarm) when = t;
    expect(when).toBeGreaterThanOrEqual(0);
    expect(when).toBeLessThan(20);
  });

  it('state survives JSON', () => {
    const r = rng(9);
    const p0 = [0.5, 0.3, 0.2];
    const a = new DirichletMultinomialCusum({ threshold: 6 });
    let b = new DirichletMultinomialCusum({ threshold: 6 });
    for (let t = 0; t < 200; t++) {
      const c = multinomial(r, 100, t > 100 ? [0.4, 0.3, 0.3] : p0);
      expect(b.update(c, p0)).toEqual(a.update(c, p0));
      b = DirichletMultinomialCusum.fromJSON(JSON.parse(JSON.stringify(b.toJSON())), { threshold: 6 });
    }
  });
});

describe('stats and scoring', () => {
  it('KL interval covers the truth about 95% of the time and widens with dispersion', () => {
    const r = rng(4);
    let cover = 0;
    for (let i = 0; i < 2000; i++) {
      const x = binomial(r, 500, 0.1);
      const [lo, hi] = klInterval(x, 500, Math.log(40));
      if (lo <= 0.1 && 0.1 <= hi) cover++;
    }
    expect(cover / 2000).toBeGreaterThan(0.93);
    const [a, b] = klInterval(50, 500, Math.log(40));
    const [c, d] = klInterval(50, 500, Math.log(40), 4);
    expect(c).toBeLessThan(a);
    expect(d).toBeGreaterThan(b);
  });

  it('total-variation intervals contain the estimate; sampled and approximate agree roughly', () => {
    const counts = [300, 200, 100, 400];
    const ref = [0.25, 0.25, 0.25, 0.25];
    const tv = totalVariation(counts.map((c) => c / 1000), ref);
    const [lo, hi] = tvInterval(counts, ref, 1);
    const [alo, ahi] = tvIntervalApprox(counts, ref, 1);
    expect(lo).toBeLessThan(tv + 0.01);
    expect(hi).toBeGreaterThan(tv - 0.01);
    expect(Math.abs(alo - lo)).toBeLessThan(0.03);
    expect(Math.abs(ahi - hi)).toBeLessThan(0.03);
    expect(tvInterval(counts, ref, 1, 100, 7)).toEqual(tvInterval(counts, ref, 1, 100, 7));
  });

  it('scores detections: delay, false alarms, mean time between them, misses', () => {
    const s = scoreDetections([10, 120, 130, 400], [100, 300, 600], 1000, 200);
    expect(s.detectionDelay).toEqual([20, 100, null]);
    expect(s.falseAlarms).toBe(1);
    expect(s.falseAlarmRate).toBeCloseTo(1 / 100);
    expect(s.meanTimeBetweenFalseAlarms).toBe(100);
    expect(s.missedDetections).toBe(1);
  });
});
