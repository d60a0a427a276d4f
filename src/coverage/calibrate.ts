/**
 * Calibration of the covered threshold: Mondrian (per-region) thresholds and the uncovered rate
 * each implies, with an interval. The fit uses `calibrateFamilies` (calibration over phrasing
 * families, below; docs/calibration.md). `calibrateMondrian` is the calibration before it, on one
 * score per case, kept as the reference the tests and the benchmark compare against; it is also
 * what `calibrateFamilies` reduces to with no share of new phrasings (the threshold; not the interval).
 *
 * Guarantee (per region, under exchangeability of the region's calibration scores and the scores
 * of its future queries): with n calibration scores s₍₁₎ ≤ … ≤ s₍ₙ₎ and position p = (n + 1)·α,
 * l = ⌊p⌋ ≥ 1, the threshold is s₍ₗ₎ + (p − l)·(s₍ₗ₊₁₎ − s₍ₗ₎). A threshold at s₍ₗ₎ marks a new
 * query uncovered with probability l / (n + 1), one at s₍ₗ₊₁₎ with (l + 1) / (n + 1); interpolating
 * puts the expected rate at about p / (n + 1) = α instead of the conservative ⌊p⌋ / (n + 1) (on a
 * cluster of 130 cases: 5.0% instead of 4.6%). The rate realised over many future queries,
 * conditional on the calibration set, lies between Beta(l, n + 1 − l) and Beta(l + 1, n − l); the
 * stored interval runs from the lower quantile of the first to the upper quantile of the second.
 * Regions under `minRegion` cases (or with l < 1) are pooled into one more region with one
 * threshold (from all scores when the pooled ones are still under `minRegion`).
 */
import jstatPkg from 'jstat';
import { clusterEmbeddings } from './cluster.js';
import { dotRows, gatherRows } from './vec.js';

const { jStat } = jstatPkg as unknown as {
  jStat: { beta: { inv(p: number, a: number, b: number): number }; normal: { inv(p: number, mean: number, sd: number): number } };
};

export interface RegionCalibration {
  /** calibration scores in the region */
  n: number;
  /** covered threshold applied to queries assigned to the region */
  threshold: number;
  /** whether the region has its own threshold (false: the pooled one, too few cases) */
  own: boolean;
  /** probability that an exchangeable new query of the region is uncovered */
  expectedRate: number;
  /** central interval of the realised rate (level `level`) */
  expectedRateInterval: [number, number];
}

export interface Calibration {
  alpha: number;
  level: number;
  /** threshold of the regions without their own: the conformal threshold of their scores pooled (of all scores when those are too few) */
  threshold: number;
  regions: RegionCalibration[];
  /** share-weighted over regions */
  expectedRate: number;
  expectedRateInterval: [number, number];
}

/**
 * The score at 1-based position p = (n + 1)·α of a sorted array, interpolated between the ⌊p⌋-th
 * and the next; -Infinity when ⌊p⌋ < 1.
 */
export function conformalThreshold(sorted: ArrayLike<number>, alpha: number): number {
  const n = sorted.length;
  const p = (n + 1) * alpha;
  const l = Math.floor(p);
  if (l < 1) return -Infinity;
  if (l >= n) return sorted[n - 1];
  return sorted[l - 1] + (sorted[l] - sorted[l - 1]) * (p - l);
}

/** Central `level` interval of Beta(a, b). */
export function betaInterval(a: number, b: number, level: number): [number, number] {
  const t = (1 - level) / 2;
  return [jStat.beta.inv(t, a, b), jStat.beta.inv(1 - t, a, b)];
}

/**
 * Mondrian conformal calibration: one threshold per region from that region's calibration
 * scores; regions with fewer than `minRegion` scores share the threshold of their scores pooled
 * (each one's expected rate is then estimated from its own scores below it, with a
 * Beta(x + ½, n − x + ½) interval).
 * `weights` (default: each region's share of the calibration scores) weight the overall rate.
 */
export function calibrateMondrian(
  scores: ArrayLike<number>,
  region: ArrayLike<number>,
  regions: number,
  alpha: number,
  opts: { minRegion: number; level?: number; weights?: ArrayLike<number> },
): Calibration {
  const level = opts.level ?? 0.9;
  const n = scores.length;
  const by: number[][] = Array.from({ length: regions }, () => []);
  for (let i = 0; i < n; i++) by[region[i]].push(scores[i]);
  const hasOwn = (m: number) => m >= opts.minRegion && Math.floor((m + 1) * alpha) >= 1 && Math.floor((m + 1) * alpha) < m;
  // the small regions together form one more Mondrian region (all scores when they are too few together)
  const rest = by.filter((a) => !hasOwn(a.length)).flat();
  const pooled = conformalThreshold(Float64Array.from(hasOwn(rest.length) ? rest : Array.from(scores)).sort(), alpha);
  const out: RegionCalibration[] = by.map((a) => {
    a.sort((x, y) => x - y);
    const m = a.length;
    const p = (m + 1) * alpha;
    const l = Math.floor(p);
    if (hasOwn(m)) {
      return {
        n: m,
        threshold: conformalThreshold(a, alpha),
        own: true,
        expectedRate: p / (m + 1),
        expectedRateInterval: [betaInterval(l, m + 1 - l, level)[0], betaInterval(l + 1, m - l, level)[1]],
      };
    }
    // pooled threshold: the region's rate is estimated from its own scores (Jeffreys interval)
    let x = 0;
    for (const s of a) if (s < pooled) x++;
    const rate = m > 0 ? x / m : alpha;
    return {
      n: m,
      threshold: pooled,
      own: false,
      expectedRate: m > 0 ? rate : alpha,
      expectedRateInterval: m > 0 ? betaInterval(x + 0.5, m - x + 0.5, level) : [0, 1],
    };
  });
  const w = Float64Array.from({ length: regions }, (_, c) => (opts.weights ? opts.weights[c] : by[c].length / Math.max(1, n)));
  const wsum = w.reduce((s, v) => s + v, 0) || 1;
  let mean = 0;
  let variance = 0;
  out.forEach((r, c) => {
    const wc = w[c] / wsum;
    mean += wc * r.expectedRate;
    // the variance of the region's realised rate, from its interval's Beta (own) or the binomial estimate
    const v = r.own
      ? (() => {
          // Beta(p, n + 1 − p): between the two Betas the realised rate lies between
          const a = (r.n + 1) * alpha;
          const b = r.n + 1 - a;
          return (a * b) / ((a + b) ** 2 * (a + b + 1));
        })()
      : r.n > 0
        ? (r.expectedRate * (1 - r.expectedRate) + 0.25 / r.n) / (r.n + 1)
        : 0;
    variance += wc * wc * v;
  });
  const z = jStat.normal.inv(1 - (1 - level) / 2, 0, 1);
  const sd = Math.sqrt(variance);
  return {
    alpha,
    level,
    threshold: pooled,
    regions: out,
    expectedRate: mean,
    expectedRateInterval: [Math.max(0, mean - z * sd), Math.min(1, mean + z * sd)],
  };
}

/**
 * Regions by tag: each tag's centroid is the normalised mean of the embeddings of the cases whose
 * first tag it is. A vector's region is its most similar tag centroid, for eval cases and queries
 * alike (so calibration and production are split the same way, which the guarantee needs).
 */
export function tagCentroids(
  tags: readonly (readonly string[])[],
  vectors: Float32Array,
  dim: number,
): { names: string[]; centroids: Float32Array } {
  const names = [...new Set(tags.filter((t) => t.length > 0).map((t) => t[0]))].sort();
  const at = new Map(names.map((t, i) => [t, i]));
  const centroids = new Float32Array(names.length * dim);
  const acc = new Float64Array(names.length * dim);
  tags.forEach((t, i) => {
    if (!t.length) return;
    const o = at.get(t[0])! * dim;
    for (let j = 0; j < dim; j++) acc[o + j] += vectors[i * dim + j];
  });
  for (let c = 0; c < names.length; c++) {
    let n = 0;
    for (let j = 0; j < dim; j++) n += acc[c * dim + j] ** 2;
    n = Math.sqrt(n) || 1;
    for (let j = 0; j < dim; j++) centroids[c * dim + j] = acc[c * dim + j] / n;
  }
  return { names, centroids };
}

/** Index of the most similar centroid of row `i` (ties: the first). */
export function nearestRow(x: Float32Array, i: number, centroids: Float32Array, count: number, dim: number): number {
  let best = -Infinity;
  let bi = 0;
  const xo = i * dim;
  for (let c = 0; c < count; c++) {
    let s = 0;
    const co = c * dim;
    for (let j = 0; j < dim; j++) s += x[xo + j] * centroids[co + j];
    if (s > best) {
      best = s;
      bi = c;
    }
  }
  return bi;
}


/*
 * ---------------------------------------------------------------------------------------------
 * Calibration over phrasing families (the fit's method since the calibration of docs/calibration.md).
 *
 * Eval cases come in families of related phrasings (written from one idea, one template, one
 * writer), and a family's members sit closer to each other than to a query phrased in a way the
 * eval set never wrote. Scoring a case against the others (even with its near-duplicates left out)
 * measures "a new member of a family the eval set has"; scoring it with its whole family left out
 * (leave-group-out, as in conformal prediction for grouped/hierarchical data: Dunn, Wasserman &
 * Ramdas 2022; Lee, Barber & Willett 2023) measures "a phrasing of a family the eval set lacks".
 * Production mixes the two in an unknown proportion π. A region's uncovered rate under a threshold
 * t is then (1 − π)·F_seen(t) + π·F_new(t), linear in π, so for every π it lies between F_seen(t)
 * and F_new(t): the stored interval runs from the lower confidence bound of the first to the upper
 * bound of the second, and so holds whatever the share of new phrasings. The threshold aims the
 * middle, π = `newShare` (default ½: the choice that minimises the worst-case error over π).
 * Sampling error is counted per family, not per case (a cluster-robust variance: families are the
 * independent units), and the overall interval adds the between-region variance (DerSimonian–
 * Laird), because production weights the regions otherwise than the eval set does.
 * ---------------------------------------------------------------------------------------------
 */

/**
 * Families per region of m cases: ⌈√m / 2⌉ (at least 2 from 4 cases on; 1 below), so a family
 * holds about 2√m cases (100 cases: 5 families of 20). Coarser families make the left-out family
 * further from the rest, so the interval holds against larger gaps in the eval set's phrasings
 * (measured: half of each intent's phrasings missing) at the cost of a lower threshold; finer ones
 * (⌈√m⌉) missed there. docs/calibration.md gives both.
 */
export function familiesFor(m: number): number {
  return m < 4 ? 1 : Math.max(2, Math.ceil(Math.sqrt(m) / 2));
}

/**
 * Phrasing families: inside each region, spherical k-means into `familiesFor(m)` groups (seeded).
 * Returns each case's family as a global id (families never span regions) and the count.
 */
export function phrasingFamilies(
  vectors: Float32Array,
  n: number,
  dim: number,
  region: ArrayLike<number>,
  regions: number,
  seed: number,
): { family: Int32Array; families: number } {
  const by: number[][] = Array.from({ length: regions }, () => []);
  for (let i = 0; i < n; i++) by[region[i]].push(i);
  const family = new Int32Array(n);
  let next = 0;
  by.forEach((rows, r) => {
    const g = familiesFor(rows.length);
    if (rows.length === 0) return;
    if (g === 1) {
      for (const i of rows) family[i] = next;
      next++;
      return;
    }
    const res = clusterEmbeddings(gatherRows(vectors, dim, rows), rows.length, dim, g, {
      seed: seed + 104729 * r,
      restarts: 2,
      maxIterations: 30,
      restartSample: rows.length,
    });
    // no family holds more than twice its fair share nor more than half the region: k-means on a
    // few cases can leave one family with nearly all of them, and leaving that out would leave the
    // region nearly empty. A larger one is cut into contiguous chunks along its cases' similarity
    // to its first case.
    const cap = Math.max(2, Math.min(Math.ceil((2 * rows.length) / g), Math.floor(rows.length / 2)));
    const members: number[][] = Array.from({ length: g }, () => []);
    rows.forEach((i, j) => members[res.labels[j]].push(i));
    for (const fam of members) {
      if (fam.length === 0) continue;
      if (fam.length <= cap) {
        for (const i of fam) family[i] = next;
        next++;
        continue;
      }
      const a = fam[0];
      const sim = new Map(fam.map((i) => [i, dotRows(vectors, a, vectors, i, dim)]));
      const sorted = [...fam].sort((x, y) => sim.get(y)! - sim.get(x)! || x - y);
      const chunks = Math.ceil(fam.length / cap);
      sorted.forEach((i, p) => (family[i] = next + Math.floor((p * chunks) / sorted.length)));
      next += chunks;
    }
  });
  return { family, families: next };
}

/**
 * The threshold t at which the mixture (1 − π)·F_seen + π·F_new of a region's two empirical score
 * distributions (n cases each) reaches mass α·(n + 1)/n, each value's mass spread evenly up to the
 * next value. With π = 0 it is `conformalThreshold` of the seen scores; -Infinity when α·(n + 1)/n
 * is below the first value's mass.
 */
export function mixtureThreshold(seen: ArrayLike<number>, fresh: ArrayLike<number>, newShare: number, alpha: number): number {
  const n = seen.length;
  const vals: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    if (newShare < 1) vals.push([seen[i], (1 - newShare) / n]);
    if (newShare > 0) vals.push([fresh[i], newShare / n]);
  }
  vals.sort((a, b) => a[0] - b[0]);
  const target = (alpha * (n + 1)) / n;
  // the last value whose cumulative mass (itself included) is ≤ the target; t sits past it by the
  // fraction of the next value's mass still needed (π = 0: conformalThreshold's interpolation)
  let c = 0;
  let j = -1;
  while (j + 1 < vals.length && c + vals[j + 1][1] <= target + 1e-12) c += vals[++j][1];
  if (j < 0) return -Infinity;
  if (j + 1 >= vals.length) return vals[j][0];
  const frac = Math.min(1, Math.max(0, (target - c) / vals[j + 1][1]));
  return vals[j][0] + (vals[j + 1][0] - vals[j][0]) * frac;
}

/** Below-threshold rate of a set of cases with a cluster-robust (by family) variance. */
export interface RobustRate {
  rate: number;
  /** cluster-robust variance of the rate (families as the independent units) */
  variance: number;
  /** design effect: that variance over the binomial one (≥ 1; NaN when the rate is 0 or 1) */
  deff: number;
  n: number;
  families: number;
}

export function robustRate(scores: ArrayLike<number>, family: ArrayLike<number>, threshold: number | ((i: number) => number)): RobustRate {
  const n = scores.length;
  const per = new Map<number, [number, number]>();
  let below = 0;
  for (let i = 0; i < n; i++) {
    const t = typeof threshold === 'number' ? threshold : threshold(i);
    const u = scores[i] < t ? 1 : 0;
    below += u;
    const e = per.get(family[i]) ?? [0, 0];
    e[0]++;
    e[1] += u;
    per.set(family[i], e);
  }
  const rate = n ? below / n : 0;
  const G = per.size;
  let ss = 0;
  for (const [m, x] of per.values()) ss += (x - rate * m) ** 2;
  const binom = n ? (rate * (1 - rate)) / n : 0;
  const variance = G > 1 && n ? ((G / (G - 1)) * ss) / (n * n) : binom;
  const deff = binom > 0 ? Math.max(1, variance / binom) : NaN;
  return { rate, variance: Math.max(variance, binom), deff, n, families: G };
}

/**
 * Jeffreys-type interval of a rate with a design effect: Beta(x + ½, n − x + ½) with n the
 * effective sample size n / deff and x = rate · n_eff.
 */
export function designInterval(rate: number, n: number, deff: number, level: number): [number, number] {
  if (n === 0) return [0, 1];
  const ne = n / Math.max(1, deff);
  const x = rate * ne;
  // Jeffreys with the usual ends: no case below → 0, every case below → 1
  const [lo, hi] = betaInterval(x + 0.5, ne - x + 0.5, level);
  return [rate === 0 ? 0 : lo, rate === 1 ? 1 : hi];
}

/** DerSimonian–Laird between-group variance of estimates y with within variances v. */
export function dersimonianLaird(y: readonly number[], v: readonly number[]): number {
  const k = y.length;
  if (k < 2) return 0;
  const w = v.map((x) => 1 / x);
  const sw = w.reduce((a, b) => a + b, 0);
  const mean = y.reduce((a, yi, i) => a + w[i] * yi, 0) / sw;
  const q = y.reduce((a, yi, i) => a + w[i] * (yi - mean) ** 2, 0);
  const c = sw - w.reduce((a, b) => a + b * b, 0) / sw;
  return c > 0 ? Math.max(0, (q - (k - 1)) / c) : 0;
}

/**
 * Regions' estimates y (within variances v) pooled with weights w (summing to 1): the weighted
 * mean and its random-effects variance Σ w² (v + τ²), τ² by DerSimonian–Laird.
 */
export function randomEffectsPool(w: readonly number[], y: readonly number[], v: readonly number[]): { mean: number; variance: number; tau2: number } {
  const tau2 = dersimonianLaird(y, v);
  let mean = 0;
  let variance = 0;
  for (let j = 0; j < y.length; j++) {
    mean += w[j] * y[j];
    variance += w[j] * w[j] * (v[j] + tau2);
  }
  return { mean, variance, tau2 };
}

export interface FamilyRegionCalibration extends RegionCalibration {
  /** rate of eval cases scored against the others (a new phrasing of a family the eval set has) */
  rateSeen: number;
  /** rate of eval cases scored with their family left out (a phrasing the eval set did not write) */
  rateNew: number;
  /** phrasing families in the region */
  families: number;
}

export interface FamilyCalibration extends Calibration {
  regions: FamilyRegionCalibration[];
  newShare: number;
  rateSeen: number;
  rateNew: number;
  /** between-region standard deviation of the seen / new rates (random effects) */
  betweenRegionSd: [number, number];
  families: number;
}

export interface FamilyCalibrationInput {
  /** each case scored against the others, its near-duplicates left out */
  seen: ArrayLike<number>;
  /** each case scored with its whole phrasing family left out */
  fresh: ArrayLike<number>;
  family: ArrayLike<number>;
  region: ArrayLike<number>;
  regions: number;
}

/**
 * Mondrian calibration over phrasing families (see the block comment above): one threshold per
 * region at the mixture quantile; regions under `minRegion` cases share the pooled one. Each
 * region's interval runs from the lower bound of its seen rate to the upper bound of its new
 * rate (one-sided (1 − level)/2 each, design-effect Beta); the overall one likewise from normal
 * bounds whose variance adds the between-region variance to the regions' own.
 */
export function calibrateFamilies(
  x: FamilyCalibrationInput,
  alpha: number,
  opts: { minRegion: number; level?: number; newShare?: number; weights?: ArrayLike<number> },
): FamilyCalibration {
  const level = opts.level ?? 0.9;
  const pi = opts.newShare ?? 0.5;
  const n = x.seen.length;
  const by: number[][] = Array.from({ length: x.regions }, () => []);
  for (let i = 0; i < n; i++) by[x.region[i]].push(i);
  const hasOwn = (m: number) => m >= opts.minRegion && Math.floor((m + 1) * alpha) >= 1 && Math.floor((m + 1) * alpha) < m;
  const pick = (rows: number[], a: ArrayLike<number>) => rows.map((i) => a[i]);
  const small = by.filter((rows) => !hasOwn(rows.length)).flat();
  const poolRows = hasOwn(small.length) ? small : [...Array(n).keys()];
  const pooled = mixtureThreshold(pick(poolRows, x.seen), pick(poolRows, x.fresh), pi, alpha);
  const thr = by.map((rows) => (hasOwn(rows.length) ? mixtureThreshold(pick(rows, x.seen), pick(rows, x.fresh), pi, alpha) : pooled));
  const seen = by.map((rows, r) => robustRate(pick(rows, x.seen), pick(rows, x.family), thr[r]));
  const fresh = by.map((rows, r) => robustRate(pick(rows, x.fresh), pick(rows, x.family), thr[r]));
  // a region whose rate is 0 or 1 has no design effect of its own: the median of the others'
  const deffs = [...seen, ...fresh].map((r) => r.deff).filter((d) => Number.isFinite(d)).sort((a, b) => a - b);
  const medDeff = deffs.length ? deffs[Math.floor(deffs.length / 2)] : 1;
  const d = (r: RobustRate) => (Number.isFinite(r.deff) ? r.deff : medDeff);
  const t = (1 - level) / 2;
  const out: FamilyRegionCalibration[] = by.map((rows, r) => {
    const m = rows.length;
    const rate = (1 - pi) * seen[r].rate + pi * fresh[r].rate;
    return {
      n: m,
      threshold: thr[r],
      own: hasOwn(m),
      expectedRate: m ? rate : alpha,
      expectedRateInterval: m
        ? [designInterval(seen[r].rate, m, d(seen[r]), 1 - 2 * t)[0], designInterval(fresh[r].rate, m, d(fresh[r]), 1 - 2 * t)[1]]
        : [0, 1],
      rateSeen: seen[r].rate,
      rateNew: fresh[r].rate,
      families: seen[r].families,
    };
  });
  const w = Float64Array.from({ length: x.regions }, (_, c) => (opts.weights ? opts.weights[c] : by[c].length / Math.max(1, n)));
  const wsum = w.reduce((s, v) => s + v, 0) || 1;
  const use = out.map((_, r) => r).filter((r) => by[r].length > 0);
  const agg = (rates: RobustRate[]) => {
    // within: each region's cluster-robust variance (at least binomial with the median design effect when its rate is 0)
    const v = use.map((r) => Math.max(rates[r].variance, (medDeff * Math.max(rates[r].rate, 0.5 / by[r].length) * (1 - rates[r].rate)) / by[r].length));
    const y = use.map((r) => rates[r].rate);
    const p = randomEffectsPool(use.map((r) => w[r] / wsum), y, v);
    return { mean: p.mean, sd: Math.sqrt(p.variance), tau: Math.sqrt(p.tau2) };
  };
  const S = agg(seen);
  const F = agg(fresh);
  const z = jStat.normal.inv(1 - t, 0, 1);
  const mean = (1 - pi) * S.mean + pi * F.mean;
  return {
    alpha,
    level,
    threshold: pooled,
    regions: out,
    expectedRate: mean,
    expectedRateInterval: [Math.max(0, S.mean - z * S.sd), Math.min(1, F.mean + z * F.sd)],
    newShare: pi,
    rateSeen: S.mean,
    rateNew: F.mean,
    betweenRegionSd: [S.tau, F.tau],
    families: new Set(Array.from(x.family)).size,
  };
}

/**
 * Regions whose threshold sits far below the others' (robust z below −`z`: median and MAD of the
 * regions' own thresholds): a novel topic whose queries land there passes as covered more easily.
 */
export function looseRegions(thresholds: readonly number[], own: readonly boolean[], z = 2.5): { index: number; threshold: number; z: number }[] {
  const t = thresholds.filter((_, i) => own[i] && Number.isFinite(thresholds[i])).sort((a, b) => a - b);
  if (t.length < 4) return [];
  const med = t[Math.floor(t.length / 2)];
  const dev = t.map((v) => Math.abs(v - med)).sort((a, b) => a - b);
  const mad = 1.4826 * dev[Math.floor(dev.length / 2)];
  if (!(mad > 0)) return [];
  return thresholds
    .map((v, index) => ({ index, threshold: v, z: (v - med) / mad }))
    .filter((r) => Number.isFinite(r.threshold) && r.z < -z)
    .sort((a, b) => a.z - b.z);
}
