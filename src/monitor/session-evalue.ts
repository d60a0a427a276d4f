/**
 * The dispersion at which a whole session's likelihood ratio is an e-value, per alternative of the
 * per-cluster share detectors (`cluster_mix`).
 *
 * A share detector watches one cluster's share p of requests rising to the odds ratio r: each
 * request adds the Bernoulli log-likelihood ratio, and the sum is divided by a dispersion φ
 * (quasi-likelihood). The session design effect makes that sum's *variance* right when a session's
 * turns repeat one topic, but a CUSUM needs more than the variance: the accumulated ratio must have
 * mean ≤ 1 under no change (Lorden 1971), and a count made of a few long sessions has a heavier
 * upper tail than its variance describes. What is needed is that each session's ratio, raised to
 * 1/φ, has mean ≤ 1.
 *
 * For a session of m turns, y of them in the cluster, the ratio raised to 1/φ is
 * r^{y/φ}·a^{−m/φ} with a = 1 + p(r − 1). Under no change E[y] = m·p, and to first order in p
 * (y > 0 only with probability O(p)) its mean is 1 + E[h(y/φ)] with
 *
 *     h(t) = r^t − 1 − t·(r − 1)
 *
 * (convex, 0 at t = 0 and t = 1, negative between). So the condition is Σ h(y/φ) ≤ 0 over the
 * sessions' counts y in a cluster: exactly the design-effect condition when r → 1 (h(t) ≈
 * (r−1)²(t² − t)/2, i.e. φ = Σy²/Σy), heavier when r is large and a few sessions have large y.
 * The counts are pooled over clusters (one histogram of y per session and cluster touched): the
 * same shape of session for every cluster is assumed, and the first-order form in p is the limit
 * p → 0, which for sessions that stay in one cluster (sticky) is the largest φ over p (checked in
 * the unit test against the exact mean at p up to 0.3).
 *
 * Why exact for sticky sessions and an upper bound for any within-session dependence given the
 * sizes: for a session of size m whose turns each fall in the cluster with probability p, the
 * distribution of y on [0, m] with mean m·p that maximises E[r^{y/φ}] (a convex function of y) is
 * the one on {0, m} (convex order): all turns in the cluster or none. The histogram here is of the
 * measured y, so it also uses the real dependence rather than its worst case.
 *
 * u ↦ H(u) = Σ h(y·u) is convex with H(0) = 0 and H'(0) < 0, so it has one positive root u*, and
 * H ≤ 0 exactly on (0, u*]: the dispersion is φ* = 1/u* (at least 1), found by bisection.
 */

/** requests of one session in one cluster, counted per bucket: y ≤ 64 exactly, then (64·2^j, 64·2^{j+1}] */
export interface RunHistogram {
  /** sessions (× clusters) per bucket */
  c: number[];
  /** their summed counts y per bucket (for the chord bound inside a bucket) */
  s: number[];
}

const EXACT = 64;

export const emptyRuns = (): RunHistogram => ({ c: [], s: [] });
export const cloneRuns = (h: RunHistogram): RunHistogram => ({ c: h.c.slice(), s: h.s.slice() });

/** the bucket of a count y ≥ 1 */
export function runBucket(y: number): number {
  if (y <= EXACT) return Math.max(0, Math.ceil(y) - 1);
  let b = EXACT;
  let hi = 2 * EXACT;
  while (y > hi) {
    hi *= 2;
    b++;
  }
  return b;
}

/** the bucket's range [lo, hi] of counts */
export function runBucketRange(b: number): [number, number] {
  if (b < EXACT) return [b + 1, b + 1];
  const hi = EXACT * 2 ** (b - EXACT + 1);
  return [hi / 2 + 1, hi];
}

/** add `times` sessions (× clusters) with y requests each */
export function addRuns(h: RunHistogram, y: number, times = 1): void {
  if (!(y > 0) || !(times > 0)) return;
  const b = runBucket(y);
  while (h.c.length <= b) {
    h.c.push(0);
    h.s.push(0);
  }
  h.c[b] += times;
  h.s[b] += times * y;
}

export function mergeRuns(into: RunHistogram, from: RunHistogram): void {
  while (into.c.length < from.c.length) {
    into.c.push(0);
    into.s.push(0);
  }
  for (let b = 0; b < from.c.length; b++) {
    into.c[b] += from.c[b];
    into.s[b] += from.s[b];
  }
}

/** Σy²/Σy of the histogram (its buckets above 64 at their upper end): the design effect of sticky counts */
export function runsDesignEffect(h: RunHistogram): number {
  let s1 = 0;
  let s2 = 0;
  for (let b = 0; b < h.c.length; b++) {
    if (!(h.c[b] > 0)) continue;
    const [, hi] = runBucketRange(b);
    s1 += h.s[b];
    s2 += b < EXACT ? h.s[b] * (b + 1) : h.s[b] * hi;
  }
  return s1 > 0 ? s2 / s1 : 1;
}

/**
 * H(u) = Σ h(y·u) over the histogram; inside a bucket of width > 0 the chord of the convex h at the
 * bucket's ends, through the bucket's mean, bounds the sum from above (conservative).
 */
function sumH(h: RunHistogram, ratio: number, u: number): number {
  const lr = Math.log(ratio);
  const f = (t: number) => Math.expm1(t * lr) - t * (ratio - 1);
  let s = 0;
  for (let b = 0; b < h.c.length; b++) {
    const c = h.c[b];
    if (!(c > 0)) continue;
    const [lo, hi] = runBucketRange(b);
    if (lo === hi) {
      s += c * f(lo * u);
      continue;
    }
    const mu = Math.min(hi, Math.max(lo, h.s[b] / c));
    const wl = (hi - mu) / (hi - lo);
    const wh = (mu - lo) / (hi - lo);
    if (wl > 0) s += c * wl * f(lo * u);
    if (wh > 0) s += c * wh * f(hi * u);
  }
  return s;
}

/**
 * The smallest dispersion φ ≥ 1 at which a session's likelihood ratio for the odds ratio `ratio`,
 * raised to 1/φ, has mean ≤ 1 under the histogram of sessions' counts in a cluster (first order in
 * the cluster's share; see the module comment). 1 when every count is 1 (sessions of one turn, or
 * turns that never repeat a cluster); Σy²/Σy in the limit ratio → 1.
 */
export function evalueDispersion(h: RunHistogram, ratio: number): number {
  if (!(ratio > 1)) return 1;
  let n = 0;
  for (const c of h.c) n += c;
  if (!(n > 0)) return 1;
  if (sumH(h, ratio, 1) <= 0) return 1;
  // H(lo) ≤ 0 < H(hi); H convex with H(0) = 0 and H'(0) < 0
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 60; i++) {
    const m = (lo + hi) / 2;
    if (sumH(h, ratio, m) <= 0) lo = m;
    else hi = m;
  }
  return lo > 0 ? 1 / lo : Infinity;
}

const cache = new WeakMap<RunHistogram, Map<string, number[]>>();

/** evalueDispersion for each ratio, cached per (unchanged) histogram object */
export function evalueDispersions(h: RunHistogram, ratios: number[]): number[] {
  const key = ratios.join(',');
  let m = cache.get(h);
  if (!m) cache.set(h, (m = new Map()));
  let v = m.get(key);
  if (!v) m.set(key, (v = ratios.map((r) => evalueDispersion(h, r))));
  return v;
}

/**
 * The share detectors' segment dispersion per alternative g: the segment's dispersion `seg(N, v)`
 * (design effect × the reference's noise) with the design effect φ(N) multiplied by the tail
 * factor τ_g = max(1, φ*_g / D) of alternative g, φ*_g its e-value dispersion and D = Σy²/Σy the
 * design effect of the same histogram (capped at `cap`). The design effect φ keeps its own estimate
 * (per cluster, at its upper bound); the histogram says how much more than their variance the
 * sessions' counts ask at odds ratio g. When the two measure the same sessions (φ = D: one shape of
 * session in every cluster) the dispersion is φ*_g itself. Without φ* (no sessions measured) it is
 * `seg` unchanged.
 */
export function shareDispersion(
  seg: (segmentRequests: number, referenceTerm: number) => number,
  phi: (segmentRequests: number) => number,
  evalue: number[] | null,
  design: number,
  cap: number,
): (segmentRequests: number, referenceTerm: number, alternative?: number) => number {
  if (!evalue || !(design > 0)) return (N, v) => seg(N, v);
  return (N, v, g) => {
    const base = seg(N, v);
    if (g === undefined || !(evalue[g] > 0)) return base;
    const f = Math.max(1, phi(N));
    const fr = Math.min(Math.max(cap, f), f * Math.max(1, evalue[g] / design));
    return (base * fr) / f;
  };
}

/** the tail factors φ*_r / (Σy²/Σy) of a histogram, per ratio (for reports and tests) */
export function tailFactors(h: RunHistogram, ratios: number[]): number[] {
  const d = runsDesignEffect(h);
  return evalueDispersions(h, ratios).map((f) => Math.max(1, f / d));
}
