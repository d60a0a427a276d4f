/**
 * Neyman allocation of new eval cases: where `budget` more cases most reduce the variance of a
 * stratified score Σ_h W_h · p̂_h, whose variance is Σ_h W_h² σ_h² / n_h.
 *
 * With no cases yet, the optimum is n_h ∝ W_h σ_h (Neyman, 1934). With n_h⁰ cases already in each
 * stratum (none can be taken away), the optimum of the continuous problem is the water-filling
 * a_h = max(0, λ·W_h σ_h − n_h⁰) with λ set so that Σ a_h = budget (the Lagrange conditions of
 * minimising Σ W_h² σ_h² / (n_h⁰ + a_h) subject to Σ a_h = budget, a_h ≥ 0). It is rounded to
 * integers by largest remainder. Pure.
 */

export interface Stratum {
  /** share of the traffic the score is taken over */
  weight: number;
  /** within-stratum standard deviation of a case's result (0.5 for a stratum nothing is known of) */
  sigma: number;
  /** cases it has already */
  existing: number;
}

export interface Allocation {
  /** new cases per stratum (integers summing to the budget, unless no stratum has W·σ > 0) */
  cases: number[];
  /** Σ W² σ² / n before and after (Infinity when a stratum with W·σ > 0 has no case) */
  varianceBefore: number;
  varianceAfter: number;
}

export function stratifiedVariance(strata: readonly Stratum[], added?: readonly number[]): number {
  let v = 0;
  strata.forEach((s, i) => {
    const ws = s.weight * s.sigma;
    if (ws <= 0) return;
    const n = s.existing + (added?.[i] ?? 0);
    v += n > 0 ? (ws * ws) / n : Infinity;
  });
  return v;
}

export function neymanAllocation(strata: readonly Stratum[], budget: number): Allocation {
  if (!(Number.isInteger(budget) && budget >= 0)) throw new RangeError('budget must be a non-negative integer');
  for (const s of strata) {
    if (!(s.weight >= 0 && s.sigma >= 0 && s.existing >= 0)) throw new RangeError('strata need weight, sigma and existing ≥ 0');
  }
  const ws = strata.map((s) => s.weight * s.sigma);
  const cases = strata.map(() => 0);
  const varianceBefore = stratifiedVariance(strata);
  if (budget === 0 || !ws.some((x) => x > 0)) return { cases, varianceBefore, varianceAfter: varianceBefore };
  const spent = (lambda: number) => ws.reduce((s, x, i) => s + Math.max(0, lambda * x - strata[i].existing), 0);
  // bracket λ, then bisect: spent(λ) is continuous and non-decreasing
  let lo = 0;
  let hi = 1;
  while (spent(hi) < budget) hi *= 2;
  for (let it = 0; it < 200; it++) {
    const mid = (lo + hi) / 2;
    if (spent(mid) < budget) lo = mid;
    else hi = mid;
  }
  const exact = ws.map((x, i) => Math.max(0, hi * x - strata[i].existing));
  const total = exact.reduce((s, x) => s + x, 0);
  const scaled = exact.map((x) => (x * budget) / total);
  const floor = scaled.map((x) => Math.floor(x + 1e-9));
  let left = budget - floor.reduce((s, x) => s + x, 0);
  const order = scaled.map((x, i) => [x - floor[i], i] as const).sort((a, b) => b[0] - a[0] || ws[b[1]] - ws[a[1]]);
  for (const [, i] of order) {
    if (left <= 0) break;
    floor[i]++;
    left--;
  }
  floor.forEach((x, i) => (cases[i] = x));
  return { cases, varianceBefore, varianceAfter: stratifiedVariance(strata, cases) };
}

/** Allocation in proportion to the weights, or equal per stratum: the baselines the plan is measured against. */
export function proportionalAllocation(weights: readonly number[], budget: number): number[] {
  return roundShares(weights, budget);
}

export function uniformAllocation(k: number, budget: number): number[] {
  return roundShares(Array.from({ length: k }, () => 1), budget);
}

function roundShares(w: readonly number[], budget: number): number[] {
  const z = w.reduce((s, x) => s + x, 0);
  if (!(z > 0)) return w.map(() => 0);
  const scaled = w.map((x) => (x * budget) / z);
  const out = scaled.map((x) => Math.floor(x + 1e-9));
  let left = budget - out.reduce((s, x) => s + x, 0);
  const order = scaled.map((x, i) => [x - out[i], i] as const).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) {
    if (left <= 0) break;
    out[i]++;
    left--;
  }
  return out;
}
