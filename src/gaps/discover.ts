/**
 * Gap discovery, the pure core: uncovered requests of a period (with their embeddings) in,
 * ranked coverage gaps out. No I/O; `src/gaps/run.ts` reads and writes through `src/store/`.
 *
 * 1. Groups: HDBSCAN (./hdbscan.ts) on a seeded sample of at most `sampleSize` uncovered
 *    embeddings, one per distinct phrasing (`distinctPhrasings`; cosine distance), chooses how many groups there are and leaves sparse queries as
 *    noise; groups whose centroids have cosine ≥ `mergeSimilarity` are then merged, and a group that
 *    holds sub-groups whose centroids are further apart than that is split (`splitGroups`: excess
 *    of mass can keep two topics as one group). The phrasings left as noise that sit in the deep
 *    bands (where a phrasing is more likely on a novel topic than a near miss) are clustered again
 *    on their own (`deepPass`): a diffuse new topic is as sparse as the near misses around it, which
 *    sit mostly just below the threshold. Every uncovered request then joins the group whose centroid is most similar, if that
 *    similarity reaches the group's cutoff (the `memberQuantile` quantile of its sampled members'
 *    similarities) and is at least the request's coverage score (`nearerThanEvalSet`: a request
 *    nearer the eval set than the group is a near miss); otherwise it stays noise. So the pass is O(sample² + n·groups), not O(n²).
 *    With session ids, a phrasing whose sessions' other turns look like a tested intent's (covered
 *    well inside the threshold) rather than like the group's other sessions then leaves its group
 *    (`sessionBayesFactor`, ./sessions.ts).
 * 2. Per group: count, share of all traffic in scope, escalation/refusal/failure rates, first and
 *    last seen, trend (second half of the period against the first), the nearest eval cluster
 *    (most frequent among members), a label (class-based TF-IDF against the other groups and the
 *    noise), representative examples (the medoid, then farthest-first, skipping near-duplicates),
 *    and the eval cases it would need.
 * 3. Stable ids: each group is matched to a previous gap of the same scope whose centroid has
 *    cosine ≥ `matchSimilarity` (best pairs first); unmatched groups get a new id, previous gaps
 *    left unmatched are reported closed.
 * 4. Kind and depth (how far outside the eval set a group sits). `depth`: each distinct phrasing
 *    of the group (normalised text: a retry or a repeat is not new evidence) has a coverage depth
 *    band (src/coverage/bands.ts); depth is the mean log-likelihood ratio of those bands between
 *    the novel-topic profile (eval cases scored with their whole region left out, from the fit)
 *    and the in-scope profile (by construction of the band levels, in-scope phrasings that miss
 *    fall 5/5/10/20/60% in the five bands below the threshold); without the profile, the share of
 *    phrasings deeper than the in-scope 2% level against its in-scope 40%. `kind`: 'thin' (near
 *    misses of a tested cluster, "thin coverage of cluster X") when the group's nearest cluster
 *    misses no more requests than tested clusters typically do (clusterExcess), the group sits
 *    no deeper than in-scope near misses (depth ≤ 0) and, with session ids, its sessions do not say
 *    "new topic" (./sessions.ts sessionsSayNewTopic); else 'topic'. Depth alone does not make a
 *    group thin: a group's phrasings share its topic, so their bands are one piece of evidence,
 *    not one per phrasing, and an untested topic next to a tested one sits just below the
 *    threshold as near misses do; but a group deeper than near misses is never called thin.
 * 5. Priority = members × (1 + 4 × bad-outcome rate) × novelty, the bad-outcome rate being the share
 *    of the gap's requests that escalated, were refused or failed, and novelty = 1 / (1 + e^−depth)
 *    the probability that a phrasing of it is novel rather than a near miss (equal priors): volume
 *    × risk × how far outside. Topics rank before thin groups; each kind by priority.
 */
import { createHash } from 'node:crypto';
import jstatPkg from 'jstat';
import { cosineDistanceMatrix } from '../coverage/cluster.js';
import { BAND_LEVELS } from '../coverage/bands.js';
import { ctfidfTerms } from '../coverage/labels.js';
import { dotAt, gatherRows, normalizeRows, quantile, sampleIndices } from '../coverage/vec.js';
import { hdbscan } from './hdbscan.js';
import { pruneNearMissPhrasings, sessionTurns, sessionsSayNewTopic, typicalTurnProfile } from './sessions.js';
import type { SessionEvidence, UncoveredData } from '../store/gaps.js';

const { jStat } = jstatPkg as unknown as { jStat: { ibeta(x: number, a: number, b: number): number } };

/** One uncovered request as the store reads it for discovery. */
export type UncoveredRow = UncoveredData['rows'][number];

export interface PreviousGap {
  gap_id: string;
  status: GapStatus;
  kind?: GapKind;
  label: string;
  centroid: Float32Array;
}

export type GapStatus = 'new' | 'open' | 'reopened' | 'closed';

/** 'topic': sits as far outside the eval set as untested topics do; 'thin': near misses of a tested cluster */
export type GapKind = 'topic' | 'thin';

export interface Gap {
  gapId: string;
  status: GapStatus;
  kind: GapKind;
  rank: number;
  label: string;
  terms: string[];
  members: number;
  /** members / all requests in scope and period */
  share: number;
  /** members / uncovered requests in scope and period */
  uncoveredShare: number;
  escalationRate: number;
  refusalRate: number;
  failureRate: number;
  /** share of members that escalated, were refused or failed */
  badRate: number;
  firstSeen: number;
  lastSeen: number;
  trend: 'rising' | 'falling' | 'steady';
  /** (members in the later half of the period + 1) / (members in the earlier half + 1) */
  growth: number;
  nearestCluster: number;
  nearestClusterLabel: string;
  /** diverse representatives: medoid first, then farthest-first; texts (hashes when redacted) */
  examples: string[];
  exampleIds: string[];
  /** the share of members whose text is redacted (examples are then hashes) */
  redactedShare: number;
  casesNeeded: number;
  /** distinct phrasings (normalised texts) among the members */
  phrasings: number;
  /** mean log-likelihood ratio per phrasing, novel-topic vs in-scope band profile; null without bands */
  depth: number | null;
  /** share of the phrasings deeper than the in-scope 2% level (bands 0–3); null without bands */
  deepShare: number | null;
  priority: number;
  centroid: Float32Array;
  /** gap ids of the previous run this one continues (empty when new) */
  matchedSimilarity: number;
}

export interface DiscoveryOptions {
  sampleSize: number;
  /** 0 = auto: max(5, ⌈sample / 200⌉) */
  minClusterSize: number;
  /** 0 = auto: min(minClusterSize, 5) */
  minSamples: number;
  memberQuantile: number;
  matchSimilarity: number;
  /** examples kept per gap (export takes prefixes of them) */
  examples: number;
  /** two examples with cosine ≥ this are near-duplicates */
  nearDuplicate: number;
  /**
   * When HDBSCAN finds no split (all uncovered traffic may be one topic plus noise), the denser
   * half of the sample (points leaving the root at λ ≥ its median) is one group if its members'
   * mean cosine to their centroid reaches this; otherwise everything stays noise.
   */
  minCoherence: number;
  /**
   * Groups whose centroids have cosine ≥ this are merged (closest pair first, centroids
   * recomputed after each merge): HDBSCAN splits a topic into its phrasings when each is dense.
   * 1 disables merging.
   */
  mergeSimilarity: number;
  /**
   * a cluster has an excess of uncovered requests when P(its count or more | the typical rate) is
   * below this; groups of a cluster without an excess are thin. 0.5 (default): the cluster misses
   * more than the typical one (the median of the binomial), so a group is called thin only when
   * its cluster misses no more than typical — doubt goes to 'topic', as before kinds existed;
   * 0.01: only a clear excess makes topics (more groups called thin).
   */
  excessAlpha: number;
  /**
   * HDBSCAN groups distinct phrasings (normalised texts), not requests: a phrasing repeated by
   * retries is one point of density, so a handful of repeated near misses does not outweigh a
   * topic asked in many ways. Every request then joins by its vector as before.
   */
  distinctPhrasings: boolean;
  /**
   * Each group of at least 2 × minClusterSize sampled phrasings is clustered again on its own
   * points; when that finds sub-groups whose centroids have cosine < `mergeSimilarity`, they become
   * groups of their own (one level). Excess of mass keeps a parent whose stability outweighs its
   * children's, so one group can hold two topics that the merge rule would keep apart; the merge
   * step can only join. With the split, one rule (centroid cosine against `mergeSimilarity`)
   * decides both ways. false: the groups as HDBSCAN selects them (the code before).
   */
  splitGroups: boolean;
  /**
   * Second pass over the deep noise: the sampled phrasings the first pass left as noise whose band
   * is more likely on a novel topic than on a near miss (novelBands: the bands below the one just
   * under the threshold where the novel-topic profile's share exceeds the in-scope one's, both
   * conditioned on being uncovered) are clustered again by HDBSCAN on their own, with the same
   * minimums. 60% of in-scope misses sit in the band just below the threshold, which is never one
   * of them, so most near misses cannot seed a group there. The new groups are merged neither with
   * each other nor with the first pass's, and one that, with the requests that joined it, sits no
   * deeper than near misses (depth ≤ 0, the rule of `kind`) is dropped. Needs the novel-topic
   * profile; without it nothing changes. false: the first pass only (the code before).
   */
  deepPass: boolean;
  /**
   * After every request has joined, a phrasing leaves its group (its requests go back to noise)
   * when its sessions' other turns say it is a tested intent's near miss rather than part of the
   * group: the Bayes factor of "its siblings' depth bands are those of a typical session turn"
   * against "those of the group's other sessions" reaches this (./sessions.ts; each test sends a
   * phrasing of the group's own topic away with probability ≤ 1 / this). Needs session ids;
   * without them nothing changes. 0 turns it off.
   */
  sessionBayesFactor: number;
  /**
   * A request joins its most similar group only when that group's centroid is at least as similar
   * to it as the eval set is: its coverage score, the mean cosine to its nearest eval cases. A
   * request nearer the tested cases than the group is better described as a near miss of those
   * cases than as a phrasing of the group's topic, so it stays noise. A loose group (a low member
   * cutoff) otherwise draws the near misses of every tested intent around it. No parameter: the
   * two similarities are the ones the coverage model and the join already compute. false: every
   * request that passes the group's cutoff joins (the code before).
   */
  nearerThanEvalSet: boolean;
  seed: number;
}

export const DEFAULT_DISCOVERY: DiscoveryOptions = {
  sampleSize: 2000,
  minClusterSize: 0,
  minSamples: 0,
  memberQuantile: 0.05,
  matchSimilarity: 0.9,
  examples: 25,
  nearDuplicate: 0.9,
  minCoherence: 0.5,
  mergeSimilarity: 0.8,
  distinctPhrasings: true,
  excessAlpha: 0.5,
  splitGroups: true,
  deepPass: true,
  sessionBayesFactor: 20,
  nearerThanEvalSet: true,
  seed: 42,
};

/** Shares of in-scope phrasings per band below the threshold (bands 0–4), by construction of BAND_LEVELS. */
export function inScopeMissShares(): number[] {
  const t = BAND_LEVELS.indexOf('threshold');
  const lv = BAND_LEVELS.slice(0, t) as number[];
  const target = 0.05;
  const edges = [0, ...lv, target];
  return edges.slice(1).map((e, i) => (e - edges[i]) / target);
}

function phrasingKey(r: { query: string; query_redacted: 0 | 1 }): string {
  return r.query_redacted ? `\u0000${r.query}` : normText(r.query);
}

function distinctCount(rows: readonly { query: string; query_redacted: 0 | 1 }[]): number {
  return new Set(rows.map(phrasingKey)).size;
}

/**
 * Per eval cluster: whether it has more uncovered requests than tested clusters typically miss.
 * The baseline rate r0 is the median uncovered rate of the clusters with ≥ 20 requests (most
 * clusters carry no untested topic, so the median is what a tested cluster misses in this traffic,
 * phrasings the eval set did not write included), capped by `promised` (the upper end of the
 * fit's expected rate) when given: when untested topics reach most busy clusters the median is
 * theirs, and a group is called thin only when its cluster misses no more than both. Counts are divided by the design effect
 * deff = uncovered requests per distinct uncovered phrasing (retries and repeats of one phrasing
 * are not independent: Kish's effective sample size). A cluster has an excess when
 * P(Binomial(N/deff, r0) ≥ U/deff) < alpha. No baseline (no cluster with 20 requests): empty map.
 */
export function clusterExcess(
  traffic: readonly { cluster: number; requests: number; uncovered: number }[],
  uncoveredRows: number,
  distinctPhrasings: number,
  alpha: number,
  promised: number | null = null,
): Map<number, boolean> {
  const out = new Map<number, boolean>();
  const rates = traffic.filter((t) => t.requests >= 20).map((t) => t.uncovered / t.requests).sort((a, b) => a - b);
  if (rates.length === 0) return out;
  const median = quantile(rates, 0.5);
  const r0 = Math.max(1e-6, Math.min(1 - 1e-6, promised !== null && promised > 0 ? Math.min(median, promised) : median));
  const deff = distinctPhrasings > 0 ? Math.max(1, uncoveredRows / distinctPhrasings) : 1;
  for (const t of traffic) {
    const n = t.requests / deff;
    const u = t.uncovered / deff;
    // P(X ≥ u) for X ~ Binomial(n, r0), continuous in u and n: the regularised incomplete beta I_r0(u, n − u + 1)
    const p = u <= 0 ? 1 : u > n ? 0 : jStat.ibeta(r0, u, n - u + 1);
    out.set(t.cluster, p < alpha);
  }
  return out;
}

/** Bands below the threshold (0 … THIN_BAND); THIN_BAND is the one just below it. */
const THIN_BAND = BAND_LEVELS.indexOf('threshold');

/**
 * Per band below the threshold: log(novel share / in-scope share), each profile conditioned on
 * being uncovered. `novel`: the model's novel-topic band profile (all BANDS bands).
 */
export function bandLogRatios(novel: readonly number[]): number[] {
  const inS = inScopeMissShares();
  const nv = novel.slice(0, THIN_BAND + 1);
  const z = nv.reduce((a, b) => a + b, 0);
  return inS.map((p, b) => Math.log(nv[b] / z / p));
}

/** depth and deep share of a group from its distinct phrasings' bands (null when none has a band) */
export function groupDepth(bands: readonly number[], logRatios: readonly number[] | null): { depth: number | null; deepShare: number | null } {
  const known = bands.filter((b) => b >= 0 && b <= THIN_BAND);
  if (known.length === 0) return { depth: null, deepShare: null };
  const deep = known.filter((b) => b < THIN_BAND).length / known.length;
  if (logRatios) return { depth: known.reduce((s, b) => s + logRatios[b], 0) / known.length, deepShare: deep };
  // without the novel-topic profile: the deep share's log-odds against its in-scope value
  const p0 = 1 - inScopeMissShares()[THIN_BAND];
  const d = Math.min(0.99, Math.max(0.01, deep));
  return { depth: Math.log(d / (1 - d)) - Math.log(p0 / (1 - p0)), deepShare: deep };
}

export interface DiscoveryInput {
  scope: string;
  rows: UncoveredRow[];
  /** rows.length × dim unit vectors */
  vectors: Float32Array;
  dim: number;
  /** every request (covered or not) in scope and period */
  totalRequests: number;
  since: number;
  until: number;
  previous: PreviousGap[];
  clusterLabels: Map<number, string>;
  /** covered threshold of the coverage score (pairwise proxy for the cases-needed estimate) */
  threshold: number;
  /** eval cases the coverage score averages */
  neighbours: number;
  /** the coverage model's novel-topic band profile (all bands); absent: the deep-share test */
  novelProfile?: readonly number[] | null;
  /**
   * requests and uncovered requests per eval cluster in scope and period (every request, not only
   * the uncovered ones read here); absent or empty: no group is called thin
   */
  clusterTraffic?: readonly { cluster: number; requests: number; uncovered: number }[];
  /** the upper end of the fit's expected uncovered rate (its interval); caps the baseline of clusterExcess */
  promisedRate?: number | null;
  /**
   * the bands of the covered turns of the sessions that hold an uncovered row, and the band profile
   * of all distinct session turns (src/store/gaps.ts readSessionEvidence); absent or empty (no
   * session ids): the session test does nothing
   */
  sessionEvidence?: SessionEvidence | null;
}

export interface DiscoveryResult {
  /** ranked by priority; closed gaps (members 0) last */
  gaps: Gap[];
  /** per row: index into `gaps`, or -1 for noise */
  membership: Int32Array;
  /** per row: cosine similarity to the centroid of its group (or of the nearest group, for noise) */
  similarity: Float32Array;
  params: { sample: number; minClusterSize: number; minSamples: number; groupsFound: number; noise: number };
  /**
   * the session test (`sessionBayesFactor`): whether it ran (false without session ids: the groups
   * are those of the code before it), and the phrasings and requests it sent back to noise
   */
  sessions: { used: boolean; phrasings: number; requests: number };
  /** ms spent: HDBSCAN on the sample, joining every row to a group, describing the groups */
  timings: { cluster: number; join: number; describe: number };
}

export function autoMinClusterSize(sample: number): number {
  return Math.max(5, Math.ceil(sample / 200));
}

export function discover(input: DiscoveryInput, opts: DiscoveryOptions = DEFAULT_DISCOVERY): DiscoveryResult {
  const { rows, vectors, dim } = input;
  const n = rows.length;
  const t0 = performance.now();
  // the points HDBSCAN sees: one per distinct phrasing (its first request), or every request
  const pool: number[] = [];
  if (opts.distinctPhrasings) {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const key = phrasingKey(rows[i]);
      if (seen.has(key)) continue;
      seen.add(key);
      pool.push(i);
    }
  } else for (let i = 0; i < n; i++) pool.push(i);
  const sIdx = pool.length > opts.sampleSize ? Int32Array.from(sampleIndices(pool.length, opts.sampleSize, opts.seed), (j) => pool[j]) : Int32Array.from(pool);
  const sn = sIdx.length;
  const mcs = opts.minClusterSize || autoMinClusterSize(sn);
  const ms = opts.minSamples || Math.min(mcs, 5);
  const membership = new Int32Array(n).fill(-1);
  const similarity = new Float32Array(n);
  let k = 0;
  let centroids = new Float32Array(0);
  let cutoff = new Float64Array(0);
  let deepFrom = Infinity;
  if (sn >= mcs) {
    const sx = gatherRows(vectors, dim, sIdx);
    const dist = cosineDistanceMatrix(sx, sn, dim);
    const h = hdbscan(dist, sn, { minClusterSize: mcs, minSamples: ms, minDistance: 0.01 });
    if (h.k === 0) singleGroupFallback(h, sx, sn, dim, opts.minCoherence);
    k = mergeSimilarGroups(h.labels, h.k, sx, dim, opts.mergeSimilarity);
    if (opts.splitGroups) k = splitDenseSubgroups(h.labels, k, sx, dist, sn, dim, mcs, ms, opts.mergeSimilarity);
    deepFrom = k;
    const novel = opts.deepPass ? novelBands(input.novelProfile) : null;
    if (novel) k = deepNoisePass(h.labels, k, dist, sn, mcs, ms, Uint8Array.from(sIdx, (r) => (novel(rows[r].band ?? -1) ? 1 : 0)));
    centroids = new Float32Array(k * dim);
    for (let i = 0; i < sn; i++) {
      const c = h.labels[i];
      if (c < 0) continue;
      for (let d = 0; d < dim; d++) centroids[c * dim + d] += sx[i * dim + d];
    }
    normalizeRows(centroids, dim);
    const sims: number[][] = Array.from({ length: k }, () => []);
    for (let i = 0; i < sn; i++) {
      const c = h.labels[i];
      if (c >= 0) sims[c].push(dotAt(sx, i * dim, centroids, c * dim, dim));
    }
    cutoff = Float64Array.from(sims, (s) => quantile(s.sort((a, b) => a - b), opts.memberQuantile));
  }
  const t1 = performance.now();
  // every row joins its most similar group if it passes that group's cutoff
  const counts = new Int32Array(k);
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    let bc = -1;
    for (let c = 0; c < k; c++) {
      const s = dotAt(vectors, i * dim, centroids, c * dim, dim);
      if (s > best) {
        best = s;
        bc = c;
      }
    }
    similarity[i] = bc < 0 ? 0 : best;
    // …and, with `nearerThanEvalSet`, only when the group is at least as similar to it as the eval set is
    if (bc >= 0 && best >= cutoff[bc] && !(opts.nearerThanEvalSet && best < rows[i].coverage)) {
      membership[i] = bc;
      counts[bc]++;
    }
  }
  // a group of the deep pass that, with the rows it drew, sits no deeper than near misses is dropped
  if (k > deepFrom) for (const c of dropShallowGroups(membership, rows, deepFrom, k, bandLogRatios(input.novelProfile!))) counts[c] = 0;
  // phrasings whose sessions say "near miss of a tested intent" leave their group
  const pruned = pruneNearMissPhrasings(membership, rows, (i) => phrasingKey(rows[i]), input.sessionEvidence, opts.sessionBayesFactor);
  if (pruned.rows > 0) {
    counts.fill(0);
    for (let i = 0; i < n; i++) if (membership[i] >= 0) counts[membership[i]]++;
  }
  // groups that lost their members to others are dropped; renumber the rest
  const keep: number[] = [];
  const renum = new Int32Array(k).fill(-1);
  for (let c = 0; c < k; c++) {
    if (counts[c] >= Math.min(mcs, 3)) {
      renum[c] = keep.length;
      keep.push(c);
    }
  }
  for (let i = 0; i < n; i++) if (membership[i] >= 0) membership[i] = renum[membership[i]];
  const g = keep.length;
  const t2 = performance.now();
  const groupCentroids = gatherRows(centroids, dim, keep);
  const members: number[][] = Array.from({ length: g }, () => []);
  for (let i = 0; i < n; i++) if (membership[i] >= 0) members[membership[i]].push(i);

  // labels: c-TF-IDF of the groups (and the noise, as one more class) over unredacted texts
  const labelTexts: string[] = [];
  const labelOf: number[] = [];
  for (let c = 0; c <= g; c++) {
    const idx = c < g ? members[c] : Array.from({ length: n }, (_, i) => i).filter((i) => membership[i] < 0);
    const plain = idx.filter((i) => !rows[i].query_redacted);
    const pick = plain.length > 400 ? Array.from(sampleIndices(plain.length, 400, opts.seed + c), (j) => plain[j]) : plain;
    for (const i of pick) {
      labelTexts.push(rows[i].query);
      labelOf.push(c);
    }
  }
  const terms = ctfidfTerms(labelTexts, labelOf, g + 1, 4);

  const half = (input.since + input.until) / 2;
  const excess = clusterExcess(input.clusterTraffic ?? [], n, distinctCount(rows), opts.excessAlpha, input.promisedRate ?? null);
  const logRatios = input.novelProfile && input.novelProfile.length > THIN_BAND ? bandLogRatios(input.novelProfile) : null;
  const ev = opts.sessionBayesFactor > 1 && Array.isArray(input.sessionEvidence?.turnBands) ? input.sessionEvidence! : null;
  const typical = ev ? typicalTurnProfile(ev.turnBands) : null;
  const st = ev && typical ? sessionTurns(rows, (i) => phrasingKey(rows[i]), ev) : null;
  const groups: Omit<Gap, 'gapId' | 'status' | 'rank' | 'matchedSimilarity'>[] = [];
  for (let c = 0; c < g; c++) {
    const idx = members[c];
    let esc = 0;
    let ref = 0;
    let fail = 0;
    let bad = 0;
    let red = 0;
    let early = 0;
    let first = Infinity;
    let last = -Infinity;
    const near = new Map<number, number>();
    for (const i of idx) {
      const r = rows[i];
      const isRef = r.outcome === 'refused';
      const isFail = r.outcome === 'failed';
      esc += r.escalated;
      ref += isRef ? 1 : 0;
      fail += isFail ? 1 : 0;
      bad += r.escalated || isRef || isFail ? 1 : 0;
      red += r.query_redacted;
      if (r.ts < half) early++;
      first = Math.min(first, r.ts);
      last = Math.max(last, r.ts);
      near.set(r.cluster, (near.get(r.cluster) ?? 0) + 1);
    }
    const m = idx.length;
    const late = m - early;
    const growth = (late + 1) / (early + 1);
    const nearest = [...near.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
    const nearestLabel = input.clusterLabels.get(nearest) ?? '';
    const centroid = groupCentroids.subarray(c * dim, c * dim + dim);
    const ex = diverseExamples(vectors, dim, idx, centroid, rows, opts);
    const badRate = bad / m;
    const t = terms[c];
    // one band per distinct phrasing (its first request's)
    const phrasingBand = new Map<string, number>();
    for (const i of idx) {
      const key = phrasingKey(rows[i]);
      if (!phrasingBand.has(key)) phrasingBand.set(key, rows[i].band ?? -1);
    }
    const { depth, deepShare } = groupDepth([...phrasingBand.values()], logRatios);
    // thin: its cluster misses no more than tested clusters typically do (no excess of uncovered
    // requests), and its phrasings sit no deeper than in-scope near misses (depth ≤ 0)
    // …and its sessions do not say "new topic" (./sessions.ts: its siblings sit where new topics do)
    const thin =
      excess.get(nearest) === false &&
      (depth === null || depth <= 0) &&
      !sessionsSayNewTopic(new Set(phrasingBand.keys()), new Set(idx.map((i) => rows[i].session_id ?? '').filter((x) => x)), st, typical, input.novelProfile, opts.sessionBayesFactor);
    const kind: GapKind = thin ? 'thin' : 'topic';
    const novelty = depth === null ? 1 : 1 / (1 + Math.exp(-depth));
    groups.push({
      label: t.length ? t.slice(0, 3).join(' / ') : `(redacted text) near ${nearestLabel || `cluster ${nearest}`}`,
      terms: t,
      members: m,
      share: input.totalRequests > 0 ? m / input.totalRequests : 0,
      uncoveredShare: n > 0 ? m / n : 0,
      escalationRate: esc / m,
      refusalRate: ref / m,
      failureRate: fail / m,
      badRate,
      firstSeen: first,
      lastSeen: last,
      trend: growth >= 1.5 && late >= 5 ? 'rising' : growth <= 1 / 1.5 && early >= 5 ? 'falling' : 'steady',
      growth,
      nearestCluster: nearest,
      nearestClusterLabel: nearestLabel,
      examples: ex.map((i) => rows[i].query),
      exampleIds: ex.map((i) => rows[i].request_id),
      redactedShare: red / m,
      casesNeeded: casesNeeded(vectors, dim, idx, rows, input.threshold, input.neighbours, opts.seed + c),
      phrasings: phrasingBand.size,
      depth,
      deepShare,
      kind,
      priority: m * (1 + 4 * badRate) * novelty,
      centroid: Float32Array.from(centroid),
    });
  }

  // stable ids: best-matching pairs first
  const pairs: { c: number; p: number; s: number }[] = [];
  groups.forEach((gr, c) =>
    input.previous.forEach((pv, p) => {
      if (pv.centroid.length !== dim) return;
      const s = dotAt(gr.centroid, 0, pv.centroid, 0, dim);
      if (s >= opts.matchSimilarity) pairs.push({ c, p, s });
    }),
  );
  pairs.sort((a, b) => b.s - a.s);
  const matchOf = new Int32Array(g).fill(-1);
  const matchSim = new Float64Array(g);
  const prevUsed = new Uint8Array(input.previous.length);
  for (const { c, p, s } of pairs) {
    if (matchOf[c] >= 0 || prevUsed[p]) continue;
    matchOf[c] = p;
    matchSim[c] = s;
    prevUsed[p] = 1;
  }
  const gaps: Gap[] = groups.map((gr, c) => {
    const p = matchOf[c];
    const prev = p >= 0 ? input.previous[p] : null;
    return {
      ...gr,
      gapId: prev ? prev.gap_id : newGapId(input.scope, gr.exampleIds[0] ?? String(c), input.until),
      status: prev ? (prev.status === 'closed' ? 'reopened' : 'open') : 'new',
      rank: 0,
      matchedSimilarity: matchSim[c],
    };
  });
  const kindOrder = (x: Gap) => (x.kind === 'topic' ? 0 : 1);
  gaps.sort((a, b) => kindOrder(a) - kindOrder(b) || b.priority - a.priority || b.members - a.members || (a.gapId < b.gapId ? -1 : 1));
  const order = new Int32Array(g);
  gaps.forEach((gp, r) => {
    gp.rank = r + 1;
    order[groups.findIndex((x) => x.centroid === gp.centroid)] = r;
  });
  for (let i = 0; i < n; i++) if (membership[i] >= 0) membership[i] = order[membership[i]];
  input.previous.forEach((pv, p) => {
    if (prevUsed[p] || pv.status === 'closed') return;
    gaps.push(closedGap(pv));
  });
  let noise = 0;
  for (let i = 0; i < n; i++) if (membership[i] < 0) noise++;
  const t3 = performance.now();
  return {
    gaps,
    membership,
    similarity,
    params: { sample: sn, minClusterSize: mcs, minSamples: ms, groupsFound: k, noise },
    sessions: { used: pruned.used, phrasings: pruned.phrasings.length, requests: pruned.rows },
    timings: { cluster: Math.round(t1 - t0), join: Math.round(t2 - t1), describe: Math.round(t3 - t2) },
  };
}

/**
 * Split groups that hold dense sub-groups of different topics (labels 0..k-1 over the n rows of x,
 * `dist` their n × n cosine distances; updated in place): each group of at least 2 × mcs points is
 * clustered again by HDBSCAN on its own points (whose root is never selected, so any two
 * children of mcs points are candidates) and the sub-groups merged as the groups were
 * (mergeSimilarGroups). Two or more left: the first keeps the group's label, the others get new
 * ones, and the group's points the second run left as noise join the sub-group with the most
 * similar centroid (they were in the group). One level. Returns the new k.
 */
export function splitDenseSubgroups(
  labels: Int32Array,
  k: number,
  x: Float32Array,
  dist: Float32Array,
  n: number,
  dim: number,
  mcs: number,
  ms: number,
  mergeSimilarity: number,
): number {
  const k0 = k;
  for (let c = 0; c < k0; c++) {
    const pts: number[] = [];
    for (let i = 0; i < n; i++) if (labels[i] === c) pts.push(i);
    const m = pts.length;
    if (m < 2 * mcs) continue;
    const sub = new Float32Array(m * m);
    for (let a = 0; a < m; a++) for (let b = 0; b < m; b++) sub[a * m + b] = dist[pts[a] * n + pts[b]];
    const h = hdbscan(sub, m, { minClusterSize: mcs, minSamples: ms, minDistance: 0.01 });
    if (h.k < 2) continue;
    const px = gatherRows(x, dim, Int32Array.from(pts));
    const kk = mergeSimilarGroups(h.labels, h.k, px, dim, mergeSimilarity);
    if (kk < 2) continue;
    const cent = new Float32Array(kk * dim);
    for (let a = 0; a < m; a++) if (h.labels[a] >= 0) for (let d = 0; d < dim; d++) cent[h.labels[a] * dim + d] += px[a * dim + d];
    normalizeRows(cent, dim);
    for (let a = 0; a < m; a++) {
      let sc = h.labels[a];
      if (sc < 0) {
        let best = -Infinity;
        for (let q = 0; q < kk; q++) {
          const s = dotAt(px, a * dim, cent, q * dim, dim);
          if (s > best) {
            best = s;
            sc = q;
          }
        }
      }
      labels[pts[a]] = sc === 0 ? c : k + sc - 1;
    }
    k += kk - 1;
  }
  return k;
}

/**
 * The deep bands of the second pass, as a test on a band: those below the threshold where a
 * phrasing is more likely on a novel topic than a near miss (band log-ratio > 0), never the band
 * just below the threshold (where 60% of in-scope misses fall); null without the novel-topic profile.
 */
export function novelBands(novelProfile: readonly number[] | null | undefined): ((band: number) => boolean) | null {
  if (!novelProfile || novelProfile.length <= THIN_BAND) return null;
  const lr = bandLogRatios(novelProfile);
  return (b) => b >= 0 && b < THIN_BAND && lr[b] > 0;
}

/**
 * Cluster the noise points marked deep on their own (labels 0..k-1 over the n sampled points,
 * `dist` their distances; updated in place), with the same minimums: the new groups get labels
 * k… and are merged neither with each other nor with the first pass's. Returns the new k; the
 * first pass's groups keep labels 0..k-1.
 */
export function deepNoisePass(labels: Int32Array, k: number, dist: Float32Array, n: number, mcs: number, ms: number, deep: Uint8Array): number {
  const pts: number[] = [];
  for (let i = 0; i < n; i++) if (labels[i] < 0 && deep[i]) pts.push(i);
  const m = pts.length;
  if (m < mcs) return k;
  const sub = new Float32Array(m * m);
  for (let a = 0; a < m; a++) for (let b = 0; b < m; b++) sub[a * m + b] = dist[pts[a] * n + pts[b]];
  const h = hdbscan(sub, m, { minClusterSize: mcs, minSamples: ms, minDistance: 0.01 });
  for (let a = 0; a < m; a++) if (h.labels[a] >= 0) labels[pts[a]] = k + h.labels[a];
  return k + h.k;
}

/**
 * Groups `from` … `to` − 1 (the deep pass's) whose depth, over the distinct phrasings of the rows
 * that joined them (`membership`), is ≤ 0 — no deeper than near misses — lose their rows to noise
 * (in place). Returns the groups dropped.
 */
export function dropShallowGroups(
  membership: Int32Array,
  rows: readonly Pick<UncoveredRow, 'query' | 'query_redacted' | 'band'>[],
  from: number,
  to: number,
  logRatios: readonly number[],
): number[] {
  const bands = Array.from({ length: to - from }, () => new Map<string, number>());
  for (let i = 0; i < membership.length; i++) {
    const c = membership[i];
    if (c < from || c >= to) continue;
    const key = phrasingKey(rows[i]);
    if (!bands[c - from].has(key)) bands[c - from].set(key, rows[i].band ?? -1);
  }
  const dropped: number[] = [];
  bands.forEach((b, j) => {
    const { depth } = groupDepth([...b.values()], logRatios);
    if (depth !== null && depth <= 0) dropped.push(from + j);
  });
  for (let i = 0; i < membership.length; i++) if (dropped.includes(membership[i])) membership[i] = -1;
  return dropped;
}

/** Merge groups (labels 0..k-1 over rows of x) whose centroids have cosine ≥ threshold; returns the new k. */
export function mergeSimilarGroups(labels: Int32Array, k: number, x: Float32Array, dim: number, threshold: number): number {
  if (k < 2 || threshold >= 1) return k;
  const sums = new Float64Array(k * dim);
  for (let i = 0; i < labels.length; i++) {
    const c = labels[i];
    if (c < 0) continue;
    for (let d = 0; d < dim; d++) sums[c * dim + d] += x[i * dim + d];
  }
  const alive = new Uint8Array(k).fill(1);
  const unitOf = (c: number) => {
    let n = 0;
    for (let d = 0; d < dim; d++) n += sums[c * dim + d] ** 2;
    n = Math.sqrt(n) || 1;
    return Float64Array.from({ length: dim }, (_, d) => sums[c * dim + d] / n);
  };
  const unit = Array.from({ length: k }, (_, c) => unitOf(c));
  const cos = (a: number, b: number) => {
    let s = 0;
    for (let d = 0; d < dim; d++) s += unit[a][d] * unit[b][d];
    return s;
  };
  const into = Int32Array.from({ length: k }, (_, c) => c);
  for (;;) {
    let best = threshold;
    let pa = -1;
    let pb = -1;
    for (let a = 0; a < k; a++) {
      if (!alive[a]) continue;
      for (let b = a + 1; b < k; b++) {
        if (!alive[b]) continue;
        const s = cos(a, b);
        if (s >= best) {
          best = s;
          pa = a;
          pb = b;
        }
      }
    }
    if (pa < 0) break;
    for (let d = 0; d < dim; d++) sums[pa * dim + d] += sums[pb * dim + d];
    unit[pa] = unitOf(pa);
    alive[pb] = 0;
    for (let c = 0; c < k; c++) if (into[c] === pb) into[c] = pa;
  }
  const renum = new Int32Array(k).fill(-1);
  let m = 0;
  for (let c = 0; c < k; c++) if (alive[c]) renum[c] = m++;
  for (let i = 0; i < labels.length; i++) if (labels[i] >= 0) labels[i] = renum[into[labels[i]]];
  return m;
}

function singleGroupFallback(h: { labels: Int32Array; k: number; lambdas: Float64Array }, sx: Float32Array, sn: number, dim: number, minCoherence: number): void {
  const med = quantile(Float64Array.from(h.lambdas).sort(), 0.5);
  const c = new Float32Array(dim);
  const idx: number[] = [];
  for (let i = 0; i < sn; i++) {
    if (h.lambdas[i] < med) continue;
    idx.push(i);
    for (let d = 0; d < dim; d++) c[d] += sx[i * dim + d];
  }
  normalizeRows(c, dim);
  let mean = 0;
  for (const i of idx) mean += dotAt(sx, i * dim, c, 0, dim);
  mean /= Math.max(1, idx.length);
  if (mean < minCoherence) return;
  for (const i of idx) h.labels[i] = 0;
  h.k = 1;
}

function closedGap(pv: PreviousGap): Gap {
  return {
    gapId: pv.gap_id,
    status: 'closed',
    kind: pv.kind ?? 'topic',
    rank: 0,
    label: pv.label,
    terms: [],
    members: 0,
    share: 0,
    uncoveredShare: 0,
    escalationRate: 0,
    refusalRate: 0,
    failureRate: 0,
    badRate: 0,
    firstSeen: 0,
    lastSeen: 0,
    trend: 'steady',
    growth: 1,
    nearestCluster: -1,
    nearestClusterLabel: '',
    examples: [],
    exampleIds: [],
    redactedShare: 0,
    casesNeeded: 0,
    phrasings: 0,
    depth: null,
    deepShare: null,
    priority: 0,
    centroid: pv.centroid,
    matchedSimilarity: 0,
  };
}

export function newGapId(scope: string, seedRequestId: string, until: number): string {
  return 'gap-' + createHash('sha256').update(`${scope}\u0000${seedRequestId}\u0000${until}`).digest('hex').slice(0, 10);
}

function normText(t: string): string {
  return t.toLowerCase().replace(/\s+/g, ' ').trim();
}

/**
 * Representatives of a group: its medoid (for unit vectors, the member most similar to the
 * centroid maximises the summed cosine to all members), then farthest-first among up to 250
 * members, skipping near-duplicates (cosine ≥ nearDuplicate or the same normalised text).
 */
export function diverseExamples(
  vectors: Float32Array,
  dim: number,
  idx: readonly number[],
  centroid: Float32Array,
  rows: readonly { query: string }[],
  opts: Pick<DiscoveryOptions, 'examples' | 'nearDuplicate' | 'seed'>,
): number[] {
  if (idx.length === 0) return [];
  const cand = idx.length > 250 ? Array.from(sampleIndices(idx.length, 250, opts.seed), (j) => idx[j]) : [...idx];
  let medoid = cand[0];
  let bestSim = -Infinity;
  for (const i of cand) {
    const s = dotAt(vectors, i * dim, centroid, 0, dim);
    if (s > bestSim) {
      bestSim = s;
      medoid = i;
    }
  }
  const chosen = [medoid];
  const texts = new Set([normText(rows[medoid].query)]);
  const maxSim = new Float64Array(cand.length).fill(-Infinity);
  const update = (c: number) => {
    for (let j = 0; j < cand.length; j++) {
      const s = dotAt(vectors, cand[j] * dim, vectors, c * dim, dim);
      if (s > maxSim[j]) maxSim[j] = s;
    }
  };
  update(medoid);
  while (chosen.length < opts.examples) {
    let pick = -1;
    let low = Infinity;
    for (let j = 0; j < cand.length; j++) {
      if (maxSim[j] >= opts.nearDuplicate || texts.has(normText(rows[cand[j]].query))) continue;
      if (maxSim[j] < low) {
        low = maxSim[j];
        pick = j;
      }
    }
    if (pick < 0) break;
    chosen.push(cand[pick]);
    texts.add(normText(rows[cand[pick]].query));
    update(cand[pick]);
  }
  return chosen;
}

/**
 * Eval cases a gap would need: `neighbours` × the centres a greedy cover picks so that 90% of
 * (a sample of up to 150) members have a centre within cosine `threshold`, at most the number of
 * distinct member texts. The coverage score averages the `neighbours` nearest eval cases, so each
 * centre needs about that many cases near it.
 */
export function casesNeeded(
  vectors: Float32Array,
  dim: number,
  idx: readonly number[],
  rows: readonly { query: string }[],
  threshold: number,
  neighbours: number,
  seed: number,
): number {
  if (idx.length === 0) return 0;
  const s = idx.length > 150 ? Array.from(sampleIndices(idx.length, 150, seed), (j) => idx[j]) : [...idx];
  const m = s.length;
  const covers: number[][] = Array.from({ length: m }, () => []);
  for (let a = 0; a < m; a++) {
    for (let b = a; b < m; b++) {
      if (a === b || dotAt(vectors, s[a] * dim, vectors, s[b] * dim, dim) >= threshold) {
        covers[a].push(b);
        if (a !== b) covers[b].push(a);
      }
    }
  }
  const done = new Uint8Array(m);
  let left = m;
  let centres = 0;
  while (left > 0.1 * m) {
    let best = -1;
    let gain = 0;
    for (let a = 0; a < m; a++) {
      let gn = 0;
      for (const b of covers[a]) if (!done[b]) gn++;
      if (gn > gain) {
        gain = gn;
        best = a;
      }
    }
    if (best < 0) break;
    for (const b of covers[best]) {
      if (!done[b]) {
        done[b] = 1;
        left--;
      }
    }
    centres++;
  }
  const distinct = new Set(idx.map((i) => normText(rows[i].query))).size;
  return Math.min(distinct, Math.max(1, centres) * neighbours);
}
