/**
 * `evalgap plan`: where the next eval cases go. Strata are the covered clusters (weight: their share
 * of all traffic; σ² = E[p(1 − p)] under the cluster's posterior, so a cluster whose cases all pass
 * still has some) and the uncovered gaps (weight: their share of all traffic; σ = 0.5, the most a
 * pass/fail result can vary, because nothing is known of them; no cases). Neyman allocation over
 * them minimises the variance of the score on all traffic once the gaps have cases. With
 * `coveredOnly`, only the clusters, weighted by their share of the covered traffic: the allocation
 * that narrows the reweighted score `evalgap estimate` reports.
 */
import { neymanAllocation, stratifiedVariance, type Stratum } from './allocate.js';
import type { Estimate } from './poststratify.js';

export interface PlanGap {
  gapId: string;
  label: string;
  /** share of all traffic */
  share: number;
  escalationRate: number;
  priority: number;
}

export interface PlanItem {
  kind: 'cluster' | 'gap' | 'uncovered';
  /** cluster id, gap id, or '' */
  id: string;
  label: string;
  /** share of the traffic the planned score is taken over */
  weight: number;
  sigma: number;
  existing: number;
  cases: number;
  /** clusters: their pass rate (posterior mean); gaps: null */
  passRate: number | null;
  escalationRate: number | null;
}

export interface Plan {
  budget: number;
  scope: 'all' | 'covered';
  items: PlanItem[];
  /** standard error of the planned score before and after the allocation (Σ W²σ²/n)^½ */
  seBefore: number;
  seAfter: number;
}

export function planCases(est: Estimate, gaps: readonly PlanGap[], budget: number, opts: { coveredOnly?: boolean } = {}): Plan {
  const coveredOnly = Boolean(opts.coveredOnly) || est.untested === 0;
  const scale = coveredOnly ? 1 : est.coveredShare;
  const items: PlanItem[] = est.clusters
    .filter((c) => c.covered > 0)
    .map((c) => ({
      kind: 'cluster',
      id: String(c.cluster),
      label: c.label,
      weight: scale * c.prodShare,
      sigma: Math.sqrt(c.variance),
      existing: c.evalCases,
      cases: 0,
      passRate: c.passRate,
      escalationRate: null,
    }));
  if (!coveredOnly) {
    const inGaps = gaps.reduce((s, g) => s + g.share, 0);
    for (const g of gaps) {
      items.push({ kind: 'gap', id: g.gapId, label: g.label, weight: g.share, sigma: 0.5, existing: 0, cases: 0, passRate: null, escalationRate: g.escalationRate });
    }
    // untested traffic no stored gap accounts for (no discovery yet, or noise): one stratum
    const rest = est.untested - inGaps;
    if (rest > 1e-9 && gaps.length === 0) {
      items.push({ kind: 'uncovered', id: '', label: 'untested traffic (run evalgap gaps to split it into gaps)', weight: rest, sigma: 0.5, existing: 0, cases: 0, passRate: null, escalationRate: null });
    }
  }
  const strata: Stratum[] = items.map((x) => ({ weight: x.weight, sigma: x.sigma, existing: x.existing }));
  const a = neymanAllocation(strata, budget);
  items.forEach((x, i) => (x.cases = a.cases[i]));
  return {
    budget,
    scope: coveredOnly ? 'covered' : 'all',
    items,
    seBefore: Math.sqrt(stratifiedVariance(strata)),
    seAfter: Math.sqrt(a.varianceAfter),
  };
}
