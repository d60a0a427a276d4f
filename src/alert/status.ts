/**
 * `evalgap monitor --status`: the standing eval-set mismatch (each cluster's production share over
 * a recent period against its share of the eval set, with 95% Wilson intervals) and the alerts
 * firing now. A standing fact, printed on demand; it alerts only through the eval_mismatch rule.
 */
import type { MonitorStore } from '../store/monitor.js';
import { wilson } from '../monitor/stats.js';

export interface MismatchRow {
  cluster: number;
  label: string;
  requests: number;
  productionShare: number;
  lo: number;
  hi: number;
  evalShare: number;
  /** production share / eval share (how much more traffic than tests the cluster gets) */
  ratio: number;
  /** the interval's lower bound is at least twice the eval share */
  underTested: boolean;
}


/** `clusters`: the eval clusters of the model in force (id, label, share of the eval set). */
export async function evalMismatch(
  ms: MonitorStore,
  modelVersion: string,
  clusters: { cluster: number; label: string; share: number }[],
  from: string,
  to: string,
): Promise<{ total: number; rows: MismatchRow[] }> {
  const prod = await ms.productionByCluster(from, to, modelVersion);
  const total = prod.reduce((a, p) => a + p.requests, 0);
  const byId = new Map(prod.map((p) => [p.cluster, p]));
  const rows = clusters.map((c) => {
    const k = byId.get(c.cluster)?.requests ?? 0;
    const [lo, hi] = wilson(k, total);
    const share = total ? k / total : 0;
    return {
      cluster: c.cluster,
      label: c.label,
      requests: k,
      productionShare: share,
      lo,
      hi,
      evalShare: c.share,
      ratio: c.share > 0 ? share / c.share : Infinity,
      underTested: total > 0 && lo >= 2 * c.share,
    };
  });
  rows.sort((a, b) => b.ratio - a.ratio);
  return { total, rows };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function formatMismatch(m: { total: number; rows: MismatchRow[] }, since: string): string {
  const lines = [`eval-set mismatch: production share per eval cluster since ${since} (${m.total} requests) vs its share of the eval set`];
  lines.push(`  ${'cluster'.padStart(7)}  ${'production (95% CI)'.padEnd(22)}  ${'eval set'.padStart(8)}  ${'ratio'.padStart(6)}  label`);
  for (const r of m.rows) {
    const prod = `${pct(r.productionShare)} [${pct(r.lo)}, ${pct(r.hi)}]`;
    const ratio = Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : 'inf';
    lines.push(`  ${String(r.cluster).padStart(7)}  ${prod.padEnd(22)}  ${pct(r.evalShare).padStart(8)}  ${ratio.padStart(6)}  ${r.label}${r.underTested ? '  ← under-tested' : ''}`);
  }
  return lines.join('\n');
}
