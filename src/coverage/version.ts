/**
 * The coverage model's version id (pure): `cm-` and 12 hex digits of a sha256 over what the fit was
 * given (eval set hash, the unique cases' tags, the embedding model's checksum, the parameters and
 * the calibration settings). `evalgap fit` sets it; loading a model recomputes it from the manifest
 * and cases, so that a version id edited by hand (a copy passed off as a new model, or as an
 * existing one whose clusters it would overwrite in the store) is refused.
 */
import { createHash } from 'node:crypto';

export interface VersionInputs {
  evalSetSha256: string;
  /** each unique case's tags, in the cases' order */
  tags: readonly (readonly string[])[];
  embeddingChecksum: string;
  params: {
    k: number;
    kMode: string;
    kCriterion: string;
    kScores: readonly { k: number; silhouette: number }[];
    seed: number;
    restarts: number;
    neighbours: number;
    nprobe: number;
  };
  targetRate: number;
  nearDuplicateCosine: number;
  minClusterCases: number;
  regions: string;
  /**
   * calibration over phrasing families (models since families-v1; absent for older ones, whose ids
   * were hashed without it)
   */
  calibration?: { method: string; newShare: number };
}

/** The calibration method of models whose manifest has `calibration.phrasing`. */
export const CALIBRATION_METHOD = 'families-v1';

export function modelVersion(v: VersionInputs): string {
  const tags = createHash('sha256');
  for (const t of v.tags) tags.update(JSON.stringify(t) + '\n');
  const p = v.params;
  // the fields in a fixed order (the hash is over their JSON)
  const params = {
    k: p.k,
    kMode: p.kMode,
    kCriterion: p.kCriterion,
    kScores: p.kScores.map((s) => ({ k: s.k, silhouette: s.silhouette })),
    seed: p.seed,
    restarts: p.restarts,
    neighbours: p.neighbours,
    nprobe: p.nprobe,
  };
  const key: unknown[] = [v.evalSetSha256, tags.digest('hex'), v.embeddingChecksum, params, v.targetRate, v.nearDuplicateCosine, v.minClusterCases, v.regions];
  if (v.calibration) key.push(v.calibration.method, v.calibration.newShare);
  return 'cm-' + createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 12);
}
