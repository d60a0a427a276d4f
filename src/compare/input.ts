/**
 * From the per-version evidence rows (one per coverage model and segment, as the store's
 * `version_comparison` view gives them) to the comparison's input. Pure: the caller reads the rows
 * and the coverage model's registered clusters.
 */
import { ALL, UNCOVERED, emptyArm, type CompareInput, type SegmentArm, type SegmentCounts } from './detector.js';

/** One coverage model's segment: both versions' evidence (the store's rows have this shape). */
export interface EvidenceRow {
  model_version: string;
  /** eval cluster, -1 uncovered, -2 all traffic */
  segment: number;
  baseline: SegmentArm;
  candidate: SegmentArm;
}

function toSegment(cluster: number, row: EvidenceRow | undefined, label?: string): SegmentCounts {
  return { cluster, label, baseline: row ? { ...row.baseline } : emptyArm(), candidate: row ? { ...row.candidate } : emptyArm() };
}

/** The coverage model holding most of the candidate's units (or the one wanted), or null when the rows hold none. */
export function chooseModel(rows: readonly EvidenceRow[], wanted?: string): string | null {
  if (wanted !== undefined) return rows.some((r) => r.model_version === wanted) ? wanted : null;
  let best: { mv: string; units: number } | null = null;
  for (const r of rows) if (r.segment === ALL && (!best || r.candidate.units > best.units)) best = { mv: r.model_version, units: r.candidate.units };
  return best?.mv ?? null;
}

/**
 * One coverage model's input: every registered cluster (traffic or not: the number of tests is
 * fixed before the data), the uncovered traffic, all traffic, and each version's units. Without
 * registered clusters, the clusters with rows.
 */
export function compareInput(rows: readonly EvidenceRow[], modelVersion: string, registered: readonly { cluster: number; label: string }[]): { input: CompareInput; clusters: number[] } {
  const mine = rows.filter((r) => r.model_version === modelVersion);
  const bySegment = new Map(mine.map((r) => [r.segment, r]));
  const clusters = registered.length > 0 ? registered : mine.filter((r) => r.segment >= 0).map((r) => ({ cluster: r.segment, label: '' }));
  const overall = bySegment.get(ALL);
  return {
    input: {
      segments: [...clusters.map((c) => toSegment(c.cluster, bySegment.get(c.cluster), c.label)), toSegment(UNCOVERED, bySegment.get(UNCOVERED), 'uncovered')],
      overall: toSegment(ALL, overall, 'all traffic'),
      units: { baseline: overall?.baseline.units ?? 0, candidate: overall?.candidate.units ?? 0 },
    },
    clusters: clusters.map((c) => c.cluster),
  };
}
