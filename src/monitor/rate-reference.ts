/**
 * The per-cluster rate reference of the escalation-family rules (`escalation`: escalation, refusal
 * and failure rates within each cluster), borrowing strength across clusters by empirical Bayes.
 *
 * A thin cluster's own reference rate is noisy: at 0.05 requests/s a cluster of 1% of traffic has
 * about 130 requests and 6 escalations in a 3-day reference, and a detector that charges that noise
 * (the factor 1 + N/R of the segment, R the cluster's reference requests) can never gather more than
 * about R·KL nats, below the rule's threshold. The clusters' rates are not unrelated: most clusters
 * escalate at rates near each other, and how near is measured on the same reference. The
 * random-effects model (clusters' true rates p_j with mean μ and between-cluster variance τ²; each
 * observed rate y_j = x_j/n_j with within-cluster variance v_j = u/n_j, u = φ·p̄(1 − p̄), φ the
 * family's design effect) gives each cluster the posterior mean
 *
 *     p0_j = (x_j + M_j·μ) / (n_j + M_j),   M_j = u_j / (τ² + Var μ̂),
 *
 * (u_j = φ·p̃_j(1 − p̃_j), the cluster's within-variance at its own smoothed rate), whose error has
 * variance u_j/(n_j + M_j): the detector's reference term uses n_j + M_j requests (rescaled to the
 * detector's unit, p0_j(1 − p0_j)). M_j is large when clusters agree (the pool lends its many
 * requests), small when they differ. The spread itself is estimated with the pooled within-variance
 * u = φ·p̄(1 − p̄)/n_j (the beta-binomial method of moments; Kleinman 1973).
 *
 * The false-alarm guarantee then rests on τ² not being underestimated: a cluster whose true rate is
 * above the pool would be shrunk below it and read as a rise. Three safeguards:
 *  - τ² is taken at its one-sided upper confidence bound (the Q-profile method: the τ² at which the
 *    generalised Q statistic Σ (y_j − μ(τ²))²/(v_j + τ²) equals the lower (1 − level) quantile of
 *    χ²(k − 1); Viechtbauer 2007, Statistics in Medicine 26, "Confidence intervals for the amount
 *    of heterogeneity in meta-analysis"), not at its point estimate;
 *  - a cluster whose own rate lies outside the spread (|y_j − μ| > screen·√(v_j + τ² + Var μ̂))
 *    keeps its own reference, unshrunk: the normal random-effects model describes a spread, not
 *    a few clusters far from all others;
 *  - with fewer than `minClusters` clusters holding requests the spread is not estimated and every
 *    cluster keeps its own reference.
 */
import jstatPkg from 'jstat';

const { jStat } = jstatPkg as unknown as { jStat: { chisquare: { inv(p: number, df: number): number } } };

/** the generalised Q statistic at between-cluster variance τ², with the random-effects mean it uses */
export function generalizedQ(y: ArrayLike<number>, v: ArrayLike<number>, tau2: number): { q: number; mean: number; meanVariance: number } {
  let sw = 0;
  let swy = 0;
  for (let j = 0; j < y.length; j++) {
    const w = 1 / (v[j] + tau2);
    sw += w;
    swy += w * y[j];
  }
  const mean = swy / sw;
  let q = 0;
  for (let j = 0; j < y.length; j++) q += (y[j] - mean) ** 2 / (v[j] + tau2);
  return { q, mean, meanVariance: 1 / sw };
}

/**
 * The τ² ≥ 0 at which Q(τ²) = target (Q decreases in τ²), 0 when Q(0) ≤ target. With target k − 1
 * this is the Paule–Mandel estimator; with the χ²(k − 1) quantile at 1 − level, the Q-profile upper
 * bound at that level.
 */
export function solveTau2(y: ArrayLike<number>, v: ArrayLike<number>, target: number): number {
  if (y.length < 2 || generalizedQ(y, v, 0).q <= target) return 0;
  let lo = 0;
  // the observed rates' variance bounds any τ² solving the equation from above (Q(τ²) ≤ Σ(y − ȳ)²/τ²)
  let hi = 1e-12;
  while (generalizedQ(y, v, hi).q > target && hi < 1e6) hi *= 4;
  for (let it = 0; it < 200 && hi - lo > 1e-14 + 1e-10 * hi; it++) {
    const mid = (lo + hi) / 2;
    if (generalizedQ(y, v, mid).q > target) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** DerSimonian–Laird moment estimator of τ² (the beta-binomial method of moments when v_j = u/n_j) */
export function tau2Moments(y: ArrayLike<number>, v: ArrayLike<number>): number {
  if (y.length < 2) return 0;
  const { q } = generalizedQ(y, v, 0);
  let sw = 0;
  let sw2 = 0;
  for (let j = 0; j < y.length; j++) {
    sw += 1 / v[j];
    sw2 += 1 / v[j] ** 2;
  }
  return Math.max(0, (q - (y.length - 1)) / (sw - sw2 / sw));
}

/** the one-sided upper confidence bound of τ² at `level` (Q-profile) */
export function tau2Upper(y: ArrayLike<number>, v: ArrayLike<number>, level: number): number {
  if (y.length < 2) return 0;
  return solveTau2(y, v, jStat.chisquare.inv(1 - level, y.length - 1));
}

export interface RateReferenceOptions {
  /** confidence level of τ²'s upper bound */
  level: number;
  /** a cluster further than this many standard deviations from the pool keeps its own reference */
  screen: number;
  /** fewest clusters with requests for the spread to be estimated */
  minClusters: number;
  /** the pseudo-requests of the unshrunk reference toward all clusters' rate (the rule's former reference) */
  ownPrior: number;
  /** bounds of a reference rate */
  floor: number;
  ceil: number;
}

export const RATE_REFERENCE_DEFAULTS: RateReferenceOptions = { level: 0.99, screen: 2, minClusters: 5, ownPrior: 20, floor: 1e-4, ceil: 0.999 };

export interface RateReference {
  /** each cluster's reference rate */
  p0: number[];
  /** the requests its error is worth (the detector's reference size: Var = u / size) */
  size: number[];
  /** whether the cluster borrowed from the pool (false: its own reference) */
  shrunk: boolean[];
  /** the pool's random-effects mean, the spread's point estimate and upper bound, the prior's requests M */
  mean: number;
  tau2: number;
  tau2Upper: number;
  prior: number;
}

/**
 * Each cluster's reference rate from its events x_j in n_j reference requests, borrowing from the
 * other clusters as far as their measured spread allows (see the file's header). φ is the family's
 * design effect (≥ 1): the within-cluster variance is φ·p̄(1 − p̄)/n_j.
 */
export function rateReference(events: ArrayLike<number>, requests: ArrayLike<number>, phi: number, options: Partial<RateReferenceOptions> = {}): RateReference {
  const o = { ...RATE_REFERENCE_DEFAULTS, ...options };
  const k = requests.length;
  let X = 0;
  let N = 0;
  for (let j = 0; j < k; j++) {
    X += events[j];
    N += requests[j];
  }
  const all = (X + 0.5) / (N + 1);
  const clamp = (p: number) => Math.min(o.ceil, Math.max(o.floor, p));
  const own = (j: number) => clamp((events[j] + o.ownPrior * all) / (requests[j] + o.ownPrior));
  const unshrunk: RateReference = {
    p0: Array.from({ length: k }, (_, j) => own(j)),
    size: Array.from({ length: k }, (_, j) => requests[j] + o.ownPrior),
    shrunk: new Array<boolean>(k).fill(false),
    mean: all,
    tau2: 0,
    tau2Upper: 0,
    prior: o.ownPrior,
  };
  const idx: number[] = [];
  for (let j = 0; j < k; j++) if (requests[j] > 0) idx.push(j);
  if (idx.length < o.minClusters || X <= 0) return unshrunk;
  const u = Math.max(1, phi) * all * (1 - all);
  const y = idx.map((j) => events[j] / requests[j]);
  const v = idx.map((j) => u / requests[j]);
  const tau2 = tau2Moments(y, v);
  const up = Math.max(tau2, tau2Upper(y, v, o.level));
  const { mean: mu, meanVariance } = generalizedQ(y, v, up);
  const mean = clamp(mu);
  const spread = up + meanVariance;
  const prior = u / spread;
  const out: RateReference = { p0: unshrunk.p0.slice(), size: unshrunk.size.slice(), shrunk: unshrunk.shrunk.slice(), mean, tau2, tau2Upper: up, prior };
  for (let j = 0; j < k; j++) {
    const n = requests[j];
    // the cluster's own within-variance (at its own smoothed rate: a cluster escalating at 15% varies
    // more than the pool's rate says), so that its weight and its error are its own
    const uj = Math.max(1, phi) * unshrunk.p0[j] * (1 - unshrunk.p0[j]);
    if (n > 0 && Math.abs(events[j] / n - mean) > o.screen * Math.sqrt(uj / n + spread)) continue;
    const mj = uj / spread;
    const p0 = clamp((events[j] + mj * mean) / (n + mj));
    out.p0[j] = p0;
    // the posterior variance uj/(n + mj), in units of the reference rate's own p0(1 − p0)
    out.size[j] = ((p0 * (1 - p0)) / uj) * (n + mj);
    out.shrunk[j] = true;
  }
  return out;
}
