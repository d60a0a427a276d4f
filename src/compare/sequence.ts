/**
 * Anytime-valid confidence sequences for a rate, and for the difference and ratio of two rates.
 *
 * One arm: the beta-binomial mixture martingale (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon
 * 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49, §3
 * "conjugate mixtures"). For units X_1, X_2, … in [0, 1] with mean p (a session's share of its
 * requests with the outcome; a request alone is 0 or 1),
 *
 *   M_n(p) = ∫ Π_i (q/p)^X_i ((1-q)/(1-p))^(1-X_i) dBeta(q; a, b)
 *          = B(a + S, b + n - S) / B(a, b) / (p^S (1-p)^(n-S)),   S = Σ X_i,
 *
 * is a non-negative supermartingale with M_0 = 1 under p (each factor is convex in X_i, so its
 * mean is at most its mean under a Bernoulli of the same p, which is 1). By Ville's inequality
 * P(∃n: M_n(p) ≥ 1/α) ≤ α, so C_n = {p : M_n(p) < 1/α} covers p at every n at once, however often
 * it is looked at and whenever the looking stops. It depends on the data only through (n, S), so it
 * can be computed from SQL aggregates, in any order of arrival.
 *
 * Two arms: each arm gets its own sequence at α/2; both cover at all times with probability
 * ≥ 1 - α (union bound), so [Lc - Ub, Uc - Lb] covers the difference and [Lc / Ub, Uc / Lb] the
 * ratio, uniformly in time. Conservative (a union bound), but valid whatever the arms' volumes.
 */
import gammaln from '@stdlib/math-base-special-gammaln';

export interface BetaPrior {
  a: number;
  b: number;
}

/** Jeffreys' prior as the mixing distribution: no rate favoured, mass near 0 and 1 for rare outcomes. */
export const JEFFREYS: BetaPrior = { a: 0.5, b: 0.5 };

/** Units seen and the sum of their values (each in [0, 1]). */
export interface ArmStats {
  n: number;
  s: number;
}

export interface Interval {
  lo: number;
  hi: number;
}

const lnBeta = (a: number, b: number): number => gammaln(a) + gammaln(b) - gammaln(a + b);

/** log M_n(p): the mixture martingale's log at the null rate p. */
export function logMixture(stats: ArmStats, p: number, prior: BetaPrior = JEFFREYS): number {
  const { n, s } = clampStats(stats);
  const mix = lnBeta(prior.a + s, prior.b + n - s) - lnBeta(prior.a, prior.b);
  return mix - logLik(n, s, p);
}

function logLik(n: number, s: number, p: number): number {
  return (s > 0 ? s * Math.log(p) : 0) + (n - s > 0 ? (n - s) * Math.log1p(-p) : 0);
}

function clampStats(stats: ArmStats): ArmStats {
  const n = Math.max(0, stats.n);
  return { n, s: Math.min(n, Math.max(0, stats.s)) };
}

const ITERATIONS = 50;

/**
 * The (1 - α) confidence sequence's interval for one arm's rate at its current (n, S).
 * [0, 1] before any unit.
 */
export function rateInterval(stats: ArmStats, alpha: number, prior: BetaPrior = JEFFREYS): Interval {
  if (!(alpha > 0 && alpha < 1)) throw new Error(`alpha must be in (0, 1), got ${alpha}`);
  const { n, s } = clampStats(stats);
  if (n === 0) return { lo: 0, hi: 1 };
  const c = Math.log(1 / alpha);
  const mix = lnBeta(prior.a + s, prior.b + n - s) - lnBeta(prior.a, prior.b);
  // inside the set: mix - logLik(p) < c; convex in p with its minimum at p̂ = S/n (where it is ≤ 0)
  const outside = (p: number) => mix - logLik(n, s, p) >= c;
  const phat = s / n;
  let lo = 0;
  if (s > 0) {
    let a = 0;
    let b = phat;
    for (let i = 0; i < ITERATIONS; i++) {
      const m = (a + b) / 2;
      if (outside(m)) a = m;
      else b = m;
    }
    lo = a;
  }
  let hi = 1;
  if (s < n) {
    let a = phat;
    let b = 1;
    for (let i = 0; i < ITERATIONS; i++) {
      const m = (a + b) / 2;
      if (outside(m)) b = m;
      else a = m;
    }
    hi = b;
  }
  return { lo, hi };
}

/** Both arms' intervals at α/2 each, and the difference and ratio (candidate over baseline) they imply. */
export interface TwoSampleInterval {
  baseline: Interval;
  candidate: Interval;
  /** candidate − baseline */
  difference: Interval;
  /** candidate / baseline (hi is Infinity while the baseline's lower bound is 0) */
  ratio: Interval;
}

export function twoSampleInterval(baseline: ArmStats, candidate: ArmStats, alpha: number, prior: BetaPrior = JEFFREYS): TwoSampleInterval {
  const b = rateInterval(baseline, alpha / 2, prior);
  const c = rateInterval(candidate, alpha / 2, prior);
  return {
    baseline: b,
    candidate: c,
    difference: { lo: c.lo - b.hi, hi: c.hi - b.lo },
    ratio: { lo: b.hi > 0 ? c.lo / b.hi : c.lo > 0 ? Infinity : 0, hi: b.lo > 0 ? c.hi / b.lo : Infinity },
  };
}
