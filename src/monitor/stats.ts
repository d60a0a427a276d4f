/**
 * Small numeric helpers shared by the detectors. Special functions come from maintained libraries
 * (mathjs `lgamma`, @stdlib seeded gamma variates); the rest is arithmetic.
 */
import gammaln from '@stdlib/math-base-special-gammaln';
import gammaRandom from '@stdlib/random-base-gamma';

export const lnGamma = (x: number): number => gammaln(x);

/** log of the multivariate beta function B(a) = Π Γ(a_i) / Γ(Σ a_i) */
export function lnBeta(a: ArrayLike<number>): number {
  let s = 0;
  let t = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] <= 0) continue;
    s += lnGamma(a[i]);
    t += a[i];
  }
  return s - lnGamma(t);
}

/** x·ln(x/y) with 0·ln 0 = 0 */
const xlogy = (x: number, y: number) => (x === 0 ? 0 : x * Math.log(x / y));

/** Kullback–Leibler divergence KL(Bern(p) ‖ Bern(q)) in nats. */
export function klBernoulli(p: number, q: number): number {
  return xlogy(p, q) + xlogy(1 - p, 1 - q);
}

/** KL(p ‖ q) for two probability vectors (terms with p_i = 0 vanish). */
export function klCategorical(p: ArrayLike<number>, q: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) s += p[i] * Math.log(p[i] / q[i]);
  return s;
}

/** Log-likelihood ratio of x successes in n Bernoulli(p1) trials against Bernoulli(p0). */
export function bernoulliLlr(x: number, n: number, p0: number, p1: number): number {
  return x * Math.log(p1 / p0) + (n - x) * Math.log((1 - p1) / (1 - p0));
}

/** The rate with odds `ratio` times the odds of p0. */
export function oddsShift(p0: number, ratio: number): number {
  return (ratio * p0) / (1 - p0 + ratio * p0);
}

/**
 * Chernoff (KL) interval for a Bernoulli rate: every p with n·KL(x/n ‖ p)/phi ≤ level, found by
 * bisection. level = ln(1/α) gives a (1−α) interval valid for each side (Chernoff–Hoeffding), the
 * dispersion phi widens it the way a quasi-likelihood does.
 */
export function klInterval(x: number, n: number, level: number, phi = 1): [number, number] {
  if (n <= 0) return [0, 1];
  const ph = Math.min(1, Math.max(0, x / n));
  const f = (p: number) => (n * klBernoulli(ph, p)) / phi - level;
  const solve = (a: number, b: number) => {
    // f(a) > 0 ≥ f(b) or the reverse; 40 halvings (relative precision 1e-12)
    for (let i = 0; i < 40; i++) {
      const m = (a + b) / 2;
      if (f(m) > 0 === f(a) > 0) a = m;
      else b = m;
    }
    return (a + b) / 2;
  };
  const lo = ph <= 0 || f(1e-12) <= 0 ? 0 : solve(1e-12, ph);
  const hi = ph >= 1 || f(1 - 1e-12) <= 0 ? 1 : solve(1 - 1e-12, ph);
  return [lo, hi];
}

/** Total variation distance ½ Σ |p_i − q_i|. */
export function totalVariation(p: ArrayLike<number>, q: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) s += Math.abs(p[i] - q[i]);
  return s / 2;
}

/**
 * The normal (delta-method) approximation of the same interval, for the many windows where the
 * finding is not firing: TV ± 1.96·sd, sd² ≈ φ·Σ q_i(1−q_i)/(4n), clipped to [0, 1].
 */
export function tvIntervalApprox(counts: ArrayLike<number>, ref: ArrayLike<number>, phi: number): [number, number] {
  let n = 0;
  for (let i = 0; i < counts.length; i++) n += counts[i];
  if (n <= 0) return [0, 1];
  let v = 0;
  const q = new Array<number>(counts.length);
  for (let i = 0; i < counts.length; i++) {
    q[i] = counts[i] / n;
    v += q[i] * (1 - q[i]);
  }
  const tv = totalVariation(q, ref);
  const sd = Math.sqrt((phi * v) / (4 * n));
  return [Math.max(0, tv - 1.96 * sd), Math.min(1, tv + 1.96 * sd)];
}

/** Normalise counts to shares (all zero stays zero). */
export function shares(c: ArrayLike<number>): number[] {
  let t = 0;
  for (let i = 0; i < c.length; i++) t += c[i];
  return Array.from(c, (v) => (t > 0 ? v / t : 0));
}

/**
 * A credible interval for the total variation between the (Dirichlet posterior of the) shares
 * behind `counts` and the fixed reference shares `ref`: `draws` seeded Dirichlet(counts/phi + ½)
 * samples, the 2.5% and 97.5% quantiles, and the median (the posterior's point estimate: the
 * plug-in distance of noisy shares sits below it, possibly under the interval). Deterministic for a
 * given seed.
 */
export function tvInterval(counts: ArrayLike<number>, ref: ArrayLike<number>, phi: number, draws = 100, seed = 1): [number, number, number] {
  const g = gammaRandom.factory({ seed });
  const k = counts.length;
  const tv: number[] = [];
  const q = new Float64Array(k);
  for (let d = 0; d < draws; d++) {
    let t = 0;
    for (let i = 0; i < k; i++) {
      const a = counts[i] / phi + 0.5;
      q[i] = g(a, 1);
      t += q[i];
    }
    for (let i = 0; i < k; i++) q[i] /= t;
    tv.push(totalVariation(q, ref));
  }
  tv.sort((a, b) => a - b);
  return [tv[Math.floor(0.025 * (draws - 1))], tv[Math.ceil(0.975 * (draws - 1))], tv[Math.floor(0.5 * (draws - 1))]];
}

/** Seeded uniform generator (mulberry32) for simulations: the one coverage uses. */
export { rng } from '../coverage/vec.js';

/** Wilson score interval of a binomial proportion (successes of n), at normal quantile z. */
export function wilson(successes: number, n: number, z = 1.959964): [number, number] {
  if (n <= 0) return [0, 1];
  const p = successes / n;
  const z2 = z * z;
  const den = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / den;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / den;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}
