/**
 * Value checks of a coverage model (pure), run by `loadCoverageModel` after the checksums: a model
 * whose files agree with its manifest can still hold values that would silently mark every query
 * uncovered (NaN or zero vectors, labels naming no cluster, thresholds outside the cosine range) or
 * a version id edited by hand. Each rule is listed in docs/operations.md.
 */
import { BAND_LEVELS, BANDS } from './bands.js';
import { groupShares } from './session-reference.js';
import type { CoverageModel } from './model.js';
import { CALIBRATION_METHOD, modelVersion } from './version.js';

/** how far from 1 a stored unit vector's length may be (float32 rounding is ~1e-7) */
export const UNIT_NORM_TOLERANCE = 1e-3;
/** slack on the cosine range [-1, 1] for scores, thresholds and similarities */
const COSINE_SLACK = 1e-3;
/** slack on sums of shares that should be 1 */
const SUM_TOLERANCE = 1e-6;

const inCosineRange = (x: number) => Number.isFinite(x) && x >= -1 - COSINE_SLACK && x <= 1 + COSINE_SLACK;

/** Rows of `a` (n × dim) with a non-finite value, and rows whose length is not 1 within the tolerance. */
function checkUnitRows(a: Float32Array, n: number, dim: number, name: string, out: string[]): void {
  let nonFinite = 0;
  let firstNonFinite = -1;
  let offNorm = 0;
  let firstOff = -1;
  let firstNorm = 0;
  for (let r = 0; r < n; r++) {
    // a NaN or infinite value makes the row's sum of squares NaN or infinite (float32 squares cannot overflow a double)
    let s = 0;
    for (let d = r * dim, e = d + dim; d < e; d++) s += a[d] * a[d];
    if (!Number.isFinite(s)) {
      if (nonFinite++ === 0) firstNonFinite = r;
      continue;
    }
    const norm = Math.sqrt(s);
    if (Math.abs(norm - 1) > UNIT_NORM_TOLERANCE) {
      if (offNorm++ === 0) [firstOff, firstNorm] = [r, norm];
    }
  }
  if (nonFinite) out.push(`${name}: ${nonFinite} of ${n} vectors hold NaN or infinite values (first: row ${firstNonFinite})`);
  if (offNorm) {
    out.push(`${name}: ${offNorm} of ${n} vectors are not unit length within ${UNIT_NORM_TOLERANCE} (first: row ${firstOff}, length ${firstNorm.toPrecision(4)})`);
  }
}

/** Paths of numbers in the manifest that are not finite (JSON cannot hold NaN, but 1e999 parses as Infinity). */
function nonFiniteNumbers(x: unknown, at: string, out: string[]): void {
  if (typeof x === 'number') {
    if (!Number.isFinite(x)) out.push(at || '(root)');
  } else if (Array.isArray(x)) x.forEach((v, i) => nonFiniteNumbers(v, `${at}[${i}]`, out));
  else if (x && typeof x === 'object') for (const [k, v] of Object.entries(x)) nonFiniteNumbers(v, at ? `${at}.${k}` : k, out);
}

/**
 * The problems found in a model's values (empty: the model is sound). The arrays' sizes are
 * already known to match the manifest (k × dim centroids, n × dim embeddings, n labels and cases).
 */
export function modelValueProblems(m: CoverageModel): string[] {
  const out: string[] = [];
  const { manifest: mf } = m;
  const { dim } = mf.embedding;
  const { k } = mf.params;
  const n = mf.evalSet.uniqueCases;

  const inf: string[] = [];
  nonFiniteNumbers(mf, '', inf);
  if (inf.length) out.push(`manifest: ${inf.length} number(s) are not finite (${inf.slice(0, 3).join(', ')}${inf.length > 3 ? ', …' : ''})`);

  checkUnitRows(m.centroids, k, dim, 'centroids.f32', out);
  checkUnitRows(m.embeddings, n, dim, 'embeddings.f32', out);

  // labels name a cluster; each cluster's size, share and tag counts are its cases'
  const size = new Array<number>(k).fill(0);
  const tagCount = Array.from({ length: k }, () => new Map<string, number>());
  let badLabels = 0;
  let firstBad = -1;
  for (let i = 0; i < n; i++) {
    const l = m.labels[i];
    if (l < 0 || l >= k) {
      if (badLabels++ === 0) firstBad = i;
      continue;
    }
    size[l]++;
    for (const t of m.cases[i].tags) tagCount[l].set(t, (tagCount[l].get(t) ?? 0) + 1);
  }
  if (badLabels) out.push(`labels.i32: ${badLabels} of ${n} labels are outside 0..${k - 1} (first: row ${firstBad} = ${m.labels[firstBad]})`);

  if (mf.evalSet.uniqueCases > mf.evalSet.cases) out.push(`evalSet: ${mf.evalSet.uniqueCases} unique cases of ${mf.evalSet.cases}`);
  if (k > n) out.push(`params.k = ${k} exceeds the ${n} cases`);
  if (mf.params.neighbours > n) out.push(`params.neighbours = ${mf.params.neighbours} exceeds the ${n} cases`);
  if (mf.params.nprobe > k) out.push(`params.nprobe = ${mf.params.nprobe} exceeds k = ${k}`);

  const clusterProblems: string[] = [];
  mf.clusters.forEach((c, i) => {
    const at = `clusters[${i}]`;
    if (c.id !== i) clusterProblems.push(`${at}.id is ${c.id}, not ${i}`);
    if (!badLabels && c.size !== size[i]) clusterProblems.push(`${at}.size is ${c.size} but ${size[i]} cases carry its label`);
    if (Math.abs(c.share - c.size / n) > 1e-9) clusterProblems.push(`${at}.share ${c.share} is not size/cases = ${c.size / n}`);
    if (c.calibrationCases > c.size) clusterProblems.push(`${at}.calibrationCases ${c.calibrationCases} exceeds its size ${c.size}`);
    if (!inCosineRange(c.medianSimilarity)) clusterProblems.push(`${at}.medianSimilarity ${c.medianSimilarity} is outside [-1, 1]`);
    if (c.threshold !== null && !inCosineRange(c.threshold)) clusterProblems.push(`${at}.threshold ${c.threshold} is outside [-1, 1]`);
    if (c.expectedRateInterval[0] > c.expectedRateInterval[1]) clusterProblems.push(`${at}.expectedRateInterval is reversed`);
    if (!badLabels) {
      const listed = new Map(c.tags.map((t) => [t.tag, t.count]));
      const same = listed.size === tagCount[i].size && [...tagCount[i]].every(([t, v]) => listed.get(t) === v);
      if (!same) clusterProblems.push(`${at}.tags do not match the tags of its cases in cases.jsonl`);
    }
  });
  if (clusterProblems.length) out.push(...clusterProblems.slice(0, 5), ...(clusterProblems.length > 5 ? [`… and ${clusterProblems.length - 5} more cluster problem(s)`] : []));

  const cal = mf.calibration;
  if (!inCosineRange(cal.threshold)) out.push(`calibration.threshold ${cal.threshold} is outside [-1, 1]`);
  if (!inCosineRange(cal.nearDuplicateCosine)) out.push(`calibration.nearDuplicateCosine ${cal.nearDuplicateCosine} is outside [-1, 1]`);
  if (cal.expectedRateInterval[0] > cal.expectedRateInterval[1]) out.push('calibration.expectedRateInterval is reversed');
  for (const [q, v] of Object.entries(cal.scoreQuantiles)) if (!inCosineRange(v)) out.push(`calibration.scoreQuantiles.${q} ${v} is outside [-1, 1]`);
  if (cal.regions === 'tags') {
    const regions = cal.tagRegions ?? [];
    if (regions.length === 0) out.push('calibration.regions is "tags" but tagRegions is missing or empty');
    regions.forEach((r, i) => {
      if (!inCosineRange(r.threshold)) out.push(`calibration.tagRegions[${i}].threshold ${r.threshold} is outside [-1, 1]`);
      if (r.calibrationCases > n) out.push(`calibration.tagRegions[${i}].calibrationCases ${r.calibrationCases} exceeds the ${n} cases`);
      if (r.expectedRateInterval[0] > r.expectedRateInterval[1]) out.push(`calibration.tagRegions[${i}].expectedRateInterval is reversed`);
    });
  }
  const b = cal.bands;
  if (b) {
    const thr = BAND_LEVELS.indexOf('threshold');
    const e = b.edges;
    const ordered = e.every((x, i) => i === 0 || x >= e[i - 1]);
    const sides = e.every((x, i) => (i < thr ? x <= 0 : i > thr ? x >= 0 : x === 0));
    if (!ordered || !sides) out.push(`calibration.bands.edges must not decrease and must be ≤ 0 below the threshold's edge (${thr}), 0 at it and ≥ 0 above`);
    if (b.levels.some((l) => !(l > 0 && l < 1))) out.push('calibration.bands.levels must lie in (0, 1)');
    for (const name of ['inScope', 'novel'] as const) {
      const s = b[name].reduce((a, x) => a + x, 0);
      if (b[name].length !== BANDS || Math.abs(s - 1) > SUM_TOLERANCE) out.push(`calibration.bands.${name} shares sum to ${s}, not 1`);
    }
    if (b.novelCases > n) out.push(`calibration.bands.novelCases ${b.novelCases} exceeds the ${n} cases`);
    const h = b.heldOut;
    if (h) {
      const at = 'calibration.bands.heldOut';
      const s = h.profile.reduce((a, x) => a + x, 0);
      if (Math.abs(s - 1) > SUM_TOLERANCE) out.push(`${at}.profile shares sum to ${s}, not 1`);
      if (h.deepBands > thr) out.push(`${at}.deepBands ${h.deepBands} reaches above the threshold's band (${thr})`);
      const [lo, hi] = h.deepShareInterval;
      if (!(lo <= h.deepShare && h.deepShare <= hi)) out.push(`${at}.deepShare ${h.deepShare} lies outside its interval [${lo}, ${hi}]`);
      if (!(hi < 1)) out.push(`${at}.deepShareInterval's upper end ${hi} leaves no room for a rise`);
      let novelDeep = 0;
      for (let i = 0; i < Math.min(h.deepBands, BANDS); i++) novelDeep += b.novel[i];
      if (Math.abs(novelDeep - h.novelDeepShare) > 1e-6) out.push(`${at}.novelDeepShare ${h.novelDeepShare} is not the novel profile's share in its ${h.deepBands} deep band(s) (${novelDeep})`);
    }
    const ss = b.sessions;
    if (ss) {
      // the fit's session reference (session-reference.ts): the rule divides by bound · f(k)
      const at = 'calibration.bands.sessions';
      const sp = ss.groupShares.reduce((a, x) => a + x, 0);
      if (Math.abs(sp - 1) > SUM_TOLERANCE) out.push(`${at}.groupShares sum to ${sp}, not 1`);
      const q = groupShares(b.novel, ss.deepBands);
      if (ss.novelShares.length !== q.length || ss.novelShares.some((x, g) => Math.abs(x - q[g]) > 1e-6)) out.push(`${at}.novelShares are not the novel profile summed over the band groups`);
      if (ss.deepBands > thr) out.push(`${at}.deepBands ${ss.deepBands} reaches above the threshold's band (${thr})`);
      if (h && ss.deepBands !== h.deepBands) out.push(`${at}.deepBands ${ss.deepBands} is not heldOut's (${h.deepBands})`);
      if (ss.caps.length !== ss.groupShares.length) out.push(`${at}.caps and groupShares differ in length`);
      if (ss.shape.some((x) => x < 1 / ss.cap)) out.push(`${at}.shape has a value below 1/cap (a normaliser no fit produces)`);
    }
  }

  // the version id is the hash of the fit's inputs: one edited by hand is not this model's
  const expected = modelVersion({
    evalSetSha256: mf.evalSet.sha256,
    tags: m.cases.map((c) => c.tags),
    embeddingChecksum: mf.embedding.checksum,
    params: mf.params,
    targetRate: cal.targetFalseUncoveredRate,
    nearDuplicateCosine: cal.nearDuplicateCosine,
    minClusterCases: cal.minClusterCases,
    regions: cal.regions,
    ...(cal.phrasing ? { calibration: { method: CALIBRATION_METHOD, newShare: cal.phrasing.newShare } } : {}),
  });
  if (mf.version !== expected) out.push(`version ${mf.version} is not the one its fit inputs give (${expected}): the id was edited`);
  return out;
}
