/**
 * STAND-IN for issue 11 part A's `exportGapCases` (evalgap export-gaps), used by the demo and the
 * loop-closing test until the branches merge.
 * TODO(lead, issue 11 part A): replace every call of `exportUncoveredCases` with part A's export
 * (gap-tagged, near-duplicates removed by embedding, stratified across gaps by priority).
 * This one: the distinct uncovered queries of a model version, exact duplicates (case, spacing)
 * removed, most seen first, in the format `evalgap fit` reads, with the production context kept.
 */
import type { Store } from '../store/store.js';
import { uncoveredQueries } from '../store/report.js';

export interface ExportedCase {
  id: string;
  query: string;
  tags: string[];
  agent: string;
  outcome: string;
  escalated: boolean;
  first_seen: string;
  seen: number;
}

export async function exportUncoveredCases(
  store: Store,
  o: { modelVersion: string; since: Date; budget: number; idPrefix: string },
): Promise<ExportedCase[]> {
  const rows = await uncoveredQueries(store, o.modelVersion, o.since, o.budget * 4);
  const seen = new Set<string>();
  const out: ExportedCase[] = [];
  for (const r of rows) {
    const key = r.query.toLowerCase().replace(/\s+/g, ' ').trim();
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({
      id: `${o.idPrefix}-${out.length + 1}`,
      query: r.query,
      tags: [`gap:near-${r.cluster}`],
      agent: r.agent,
      outcome: r.outcome,
      escalated: r.escalated > 0,
      first_seen: r.first_seen,
      seen: r.seen,
    });
    if (out.length >= o.budget) break;
  }
  return out;
}
