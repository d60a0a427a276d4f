/**
 * Under-tested eval clusters: clusters that production uses far more than the eval set tests
 * them, or where production goes wrong (escalates) far more often than elsewhere.
 *
 * For each eval cluster of a coverage model: production share p = requests in it / all requests
 * (same scope and period), with a 95% Wilson score interval; eval share = its share of the eval
 * set. It is flagged `share` when the interval's lower bound is at least `shareRatio` (2) × the
 * eval share, and `escalation` when the lower bound of its escalation rate's interval exceeds the
 * scope's overall escalation rate by `escalationRatio` (2 ×). Clusters with fewer than
 * `minRequests` requests are not judged.
 */
import { wilson } from '../monitor/stats.js';

export { wilson };

export interface ClusterTraffic {
  model_version: string;
  cluster: number;
  label: string;
  eval_share: number;
  requests: number;
  uncovered: number;
  escalated: number;
  bad: number;
}

export interface UnderTestedCluster extends ClusterTraffic {
  prodShare: number;
  prodShareLow: number;
  prodShareHigh: number;
  /** prodShare / eval_share */
  ratio: number;
  escalationRate: number;
  escalationLow: number;
  escalationHigh: number;
  reasons: ('share' | 'escalation')[];
  priority: number;
}

export interface UnderTestedOptions {
  shareRatio: number;
  escalationRatio: number;
  minRequests: number;
  z: number;
}

export const DEFAULT_UNDER_TESTED: UnderTestedOptions = { shareRatio: 2, escalationRatio: 2, minRequests: 10, z: 1.959964 };


/** All clusters with their intervals, flagged ones first (by priority = requests × (1 + 4 × bad rate)). */
export function underTested(rows: readonly ClusterTraffic[], opts: UnderTestedOptions = DEFAULT_UNDER_TESTED): UnderTestedCluster[] {
  const total = rows.reduce((s, r) => s + r.requests, 0);
  const esc = rows.reduce((s, r) => s + r.escalated, 0);
  const baseEsc = total > 0 ? esc / total : 0;
  const out = rows.map((r) => {
    const [lo, hi] = wilson(r.requests, total, opts.z);
    const [elo, ehi] = wilson(r.escalated, r.requests, opts.z);
    const reasons: UnderTestedCluster['reasons'] = [];
    if (r.requests >= opts.minRequests) {
      if (lo >= opts.shareRatio * r.eval_share) reasons.push('share');
      if (elo > opts.escalationRatio * baseEsc && r.escalated > 0) reasons.push('escalation');
    }
    return {
      ...r,
      prodShare: total > 0 ? r.requests / total : 0,
      prodShareLow: lo,
      prodShareHigh: hi,
      ratio: r.eval_share > 0 ? r.requests / Math.max(1, total) / r.eval_share : Infinity,
      escalationRate: r.requests > 0 ? r.escalated / r.requests : 0,
      escalationLow: elo,
      escalationHigh: ehi,
      reasons,
      priority: r.requests * (1 + 4 * (r.requests > 0 ? r.bad / r.requests : 0)),
    };
  });
  return out.sort((a, b) => Number(b.reasons.length > 0) - Number(a.reasons.length > 0) || b.priority - a.priority);
}
