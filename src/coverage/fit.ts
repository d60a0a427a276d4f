/**
 * `evalgap fit`: eval cases → embeddings → clusters → labels, examples and a calibrated coverage
 * threshold → a versioned coverage model. `buildCoverageModel` is pure (embeddings in, model out);
 * `fitCoverageModel` adds the embedding step, and with `--k auto` chooses k in a worker thread on
 * the embedded sample while the rest of the eval set is embedded.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import type { Embedder } from '../embed/embedder.js';
import { chooseKInWorker, type ChooseKRun } from './choosek-thread.js';
import { CHOOSE_K_SAMPLE, chooseK, chooseKSample, clusterEmbeddings, nearestCentroids, type ClusterResult, type KChoice, type KMeansOptions } from './cluster.js';
import { bestRestartInWorkers } from './kmeans-thread.js';
import type { EvalCase } from './evalset.js';
import {
  calibrateFamilies,
  designInterval,
  looseRegions,
  nearestRow,
  phrasingFamilies,
  robustRate,
  tagCentroids,
  type FamilyCalibration,
  type FamilyRegionCalibration,
} from './calibrate.js';
import { CoverageIndex, type IndexParams } from './index.js';
import { calibrationScoresInWorkers, type CalibrationScores } from './calibrate-thread.js';
import { ctfidfTerms } from './labels.js';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION, type CoverageModel, type ManifestDraft } from './model.js';
import { quantile } from './vec.js';
import { CALIBRATION_METHOD, modelVersion } from './version.js';
import { BAND_LEVELS, bandEdges, bandOf, bandShares, heldOutDeep, leaveRegionOutMargins, sampleByRegion } from './bands.js';
import { sessionReference, sessionReferenceMethod, SESSION_REFERENCE } from './session-reference.js';

export interface FitOptions {
  k: number | 'auto';
  seed: number;
  restarts: number;
  /** nearest eval cases averaged by the coverage score */
  neighbours: number;
  /** clusters searched per query; default: all when k ≤ 16, else max(4, ⌈k/10⌉) */
  nprobe?: number;
  /** share of in-distribution queries allowed to be called uncovered (the calibration target) */
  targetRate: number;
  /** calibration leaves out an eval case's neighbours at cosine ≥ this (near-duplicates), not only itself */
  nearDuplicateCosine: number;
  /** clusters (or tags) with fewer eval cases than this use the pooled threshold instead of their own */
  minClusterCases: number;
  /**
   * calibration regions: one threshold per cluster, or per tag (a query's region is its most
   * similar tag centroid); auto: tags when at least 90% of the distinct cases carry one
   */
  regions: 'auto' | 'clusters' | 'tags';
  /**
   * share of production queries assumed to be phrased in ways the eval set did not write (its
   * phrasing families left out), which the threshold aims the target rate at; the stored
   * interval holds for any share (docs/calibration.md). Default ½.
   */
  newPhrasingShare?: number;
  examples: number;
  source: string;
  textField: string;
  maxK?: number;
}

export const DEFAULT_FIT: Omit<FitOptions, 'source' | 'textField'> = {
  k: 'auto',
  seed: 42,
  restarts: 5,
  neighbours: 5,
  targetRate: 0.05,
  nearDuplicateCosine: 0.95,
  minClusterCases: 80,
  regions: 'auto',
  newPhrasingShare: 0.5,
  examples: 3,
};

/** robust z-score below which a region's threshold is called loose (fit and inspect warn) */
export const LOOSE_THRESHOLD_Z = 2.5;

/** calibration method's tag, part of the model version (a model calibrated otherwise is another model) */

/** level of the expected-rate intervals stored in the model */
export const INTERVAL_LEVEL = 0.9;

export const MIN_CASES = 10;

/** texts per embed call in a fit (progress is reported after each) */
const CHUNK = 512;

export class FitError extends Error {}

export interface FitTimings {
  embedMs: number;
  /** time spent choosing k after embedding (with k auto on more than 1500 cases, only the wait for the worker) */
  chooseKMs: number;
  /** with k auto on more than 1500 cases: chooseK's time in its worker thread, overlapped with embedding */
  chooseKInWorkerMs?: number;
  clusterMs: number;
  calibrateMs: number;
  totalMs: number;
}

export interface FitOutput {
  draft: ManifestDraft;
  arrays: Omit<CoverageModel, 'manifest'>;
  kChoice: KChoice | null;
  duplicates: number;
  timings: FitTimings;
}

/**
 * Drop exact duplicate texts (case and spacing folded): they would inflate calibration scores.
 * The first occurrence is kept, with the tags of all its duplicates.
 */
export function dedupeCases(cases: readonly EvalCase[]): { unique: EvalCase[]; duplicates: number } {
  const seen = new Map<string, EvalCase>();
  const unique: EvalCase[] = [];
  for (const c of cases) {
    const key = c.text.toLowerCase().replace(/\s+/g, ' ').trim();
    const first = seen.get(key);
    if (first) {
      for (const t of c.tags) if (!first.tags.includes(t)) first.tags.push(t);
      continue;
    }
    const kept = { ...c, tags: [...c.tags] };
    seen.set(key, kept);
    unique.push(kept);
  }
  return { unique, duplicates: cases.length - unique.length };
}

export function evalSetHash(cases: readonly EvalCase[]): string {
  const h = createHash('sha256');
  for (const c of cases) h.update(JSON.stringify([c.id, c.text]) + '\n');
  return h.digest('hex');
}

function regionFields(r: FamilyRegionCalibration) {
  return {
    threshold: r.threshold as number | null,
    ownThreshold: r.own,
    calibrationCases: r.n,
    expectedRate: r.expectedRate,
    expectedRateInterval: r.expectedRateInterval,
    rateSeenPhrasing: r.rateSeen,
    rateNewPhrasing: r.rateNew,
    families: r.families,
  };
}

interface TagRegion {
  tag: string;
  threshold: number;
  ownThreshold: boolean;
  calibrationCases: number;
  expectedRate: number;
  expectedRateInterval: [number, number];
  rateSeenPhrasing: number;
  rateNewPhrasing: number;
  families: number;
}

/** The calibration regions of a fit: tags or clusters, each case's region, their centroids. */
export interface CalibrationRegions {
  kind: 'tags' | 'clusters';
  region: Int32Array;
  count: number;
  centroids: Float32Array;
  /** with tags: the tag of each region */
  names?: string[];
}

export function calibrationRegions(
  unique: readonly EvalCase[],
  vectors: Float32Array,
  dim: number,
  clusters: Pick<FitClusters, 'k' | 'labels' | 'centroids'>,
  opts: Pick<FitOptions, 'regions'>,
): CalibrationRegions {
  const n = unique.length;
  const tagged = unique.filter((c) => c.tags.length > 0).length;
  const kind = opts.regions === 'auto' ? (tagged >= 0.9 * n ? 'tags' : 'clusters') : opts.regions;
  if (kind === 'tags' && tagged === 0) throw new FitError('calibration by tags needs tagged eval cases; none has tags');
  if (kind === 'clusters') return { kind, region: clusters.labels, count: clusters.k, centroids: clusters.centroids };
  const tc = tagCentroids(unique.map((c) => c.tags), vectors, dim);
  const region = Int32Array.from({ length: n }, (_, i) => nearestRow(vectors, i, tc.centroids, tc.names.length, dim));
  return { kind, region, count: tc.names.length, centroids: tc.centroids, names: tc.names };
}

/** Phrasing families and both calibration scores, in this thread (fitCoverageModel: in worker threads). */
export function calibrationScoresHere(
  vectors: Float32Array,
  dim: number,
  clusters: Pick<FitClusters, 'k' | 'labels' | 'centroids'>,
  params: IndexParams,
  nearDuplicateCosine: number,
  family: Int32Array,
): CalibrationScores {
  const index = new CoverageIndex(clusters.centroids, clusters.k, vectors, clusters.labels, dim, params);
  return { seen: index.calibrationScores(vectors, nearDuplicateCosine), fresh: index.groupOutScores(vectors, family, nearDuplicateCosine) };
}

export interface EmbeddingInfo {
  model: string;
  checksum: string;
  precision: 'int8' | 'fp32';
  dim: number;
  maxTokens: number;
}

export function defaultNprobe(k: number): number {
  return k <= 16 ? k : Math.max(4, Math.ceil(k / 10));
}

/** eval cases scored with their region left out to estimate the novel-topic band profile */
const NOVEL_PROFILE_CASES = 400;
/** share of traffic on novel topics the deep bands of the held-out profile are chosen for (bands.ts heldOutDeep) */
const HELD_OUT_DESIGN_MIX = 0.05;

/** k, the clusters and each case's similarity to its centroid: the first part of buildCoverageModel. */
export interface FitClusters {
  k: number;
  kChoice: KChoice | null;
  centroids: Float32Array;
  labels: Int32Array;
  sims: Float32Array;
  chooseKMs: number;
  clusterMs: number;
}

/** k-means' settings in a fit. */
export function fitKMeans(opts: FitOptions): KMeansOptions {
  return { seed: opts.seed, restarts: opts.restarts, maxIterations: 60, restartSample: 2000 };
}

/**
 * Choose k (or check the given one) and cluster; k-means' empty clusters are dropped. `restarts`:
 * the best k-means restart for that k when already computed (in worker threads), with its time.
 */
export function clusterForFit(
  n: number,
  vectors: Float32Array,
  dim: number,
  opts: FitOptions,
  precomputedK?: KChoice,
  restarts?: { k: number; best: ClusterResult; ms: number },
): FitClusters {
  if (n < MIN_CASES) {
    throw new FitError(`the eval set has ${n} distinct case(s); at least ${MIN_CASES} are needed to cluster it`);
  }
  let t = performance.now();
  let kChoice: KChoice | null = null;
  let k: number;
  if (opts.k === 'auto') {
    kChoice = precomputedK ?? chooseK(vectors, n, dim, opts.seed, CHOOSE_K_SAMPLE, opts.maxK ?? 150);
    k = kChoice.k;
  } else {
    k = opts.k;
    if (k < 1 || k * 2 > n) {
      throw new FitError(`k=${k} needs at least ${2 * k} distinct eval cases (there are ${n}); lower --k`);
    }
  }
  const chooseKMs = performance.now() - t;
  t = performance.now();
  const pre = restarts?.k === k ? restarts : undefined;
  const cl = clusterEmbeddings(vectors, n, dim, k, fitKMeans(opts), pre?.best);
  // drop clusters that k-means left empty, renumbering the rest
  const sizes = new Int32Array(k);
  for (const l of cl.labels) sizes[l]++;
  const keep = [...sizes.keys()].filter((c) => sizes[c] > 0);
  let centroids = cl.centroids;
  let labels = cl.labels;
  if (keep.length < k) {
    centroids = new Float32Array(keep.length * dim);
    keep.forEach((c, i) => centroids.set(cl.centroids.subarray(c * dim, c * dim + dim), i * dim));
    k = keep.length;
    labels = nearestCentroids(vectors, n, dim, centroids, k).labels;
  }
  const { sims } = nearestCentroids(vectors, n, dim, centroids, k);
  return { k, kChoice, centroids, labels, sims, chooseKMs, clusterMs: performance.now() - t + (pre?.ms ?? 0) };
}

/** The coverage index's search parameters for n cases in k clusters. */
export function indexParams(n: number, k: number, opts: Pick<FitOptions, 'neighbours' | 'nprobe'>): IndexParams {
  return {
    neighbours: Math.max(1, Math.min(opts.neighbours, n - 1)),
    nprobe: Math.min(k, opts.nprobe ?? defaultNprobe(k)),
  };
}

/** Pure part of the fit: from unique cases and their unit embeddings to a model draft. */
export function buildCoverageModel(
  unique: readonly EvalCase[],
  allCases: number,
  evalHash: string,
  vectors: Float32Array,
  emb: EmbeddingInfo,
  opts: FitOptions,
  now = new Date(),
  /** with k auto: a choice already made by chooseK on these vectors (as fitCoverageModel does) */
  precomputedK?: KChoice,
  /**
   * clusters from clusterForFit and the calibration scores of that index (as fitCoverageModel
   * computes them in worker threads); computed here when absent
   */
  pre?: { clusters: FitClusters; regions: CalibrationRegions; family: Int32Array; scores: CalibrationScores; calibrationScoresMs: number },
): Omit<FitOutput, 'duplicates' | 'timings'> & { timings: Omit<FitTimings, 'embedMs' | 'totalMs'> } {
  const n = unique.length;
  const dim = emb.dim;
  const fc = pre?.clusters ?? clusterForFit(n, vectors, dim, opts, precomputedK);
  const { kChoice, centroids, labels, sims, chooseKMs, clusterMs } = fc;
  const k = fc.k;
  let t = performance.now();
  const params = indexParams(n, k, opts);
  const cr = pre?.regions ?? calibrationRegions(unique, vectors, dim, fc, opts);
  const regions = cr.kind;
  const family = pre?.family ?? phrasingFamilies(vectors, n, dim, cr.region, cr.count, opts.seed).family;
  const scores = pre?.scores ?? calibrationScoresHere(vectors, dim, fc, params, opts.nearDuplicateCosine, family);
  const calScores = scores.seen;
  const sorted = Float32Array.from(calScores).sort();
  const tagged = unique.filter((c) => c.tags.length > 0).length;
  const newShare = opts.newPhrasingShare ?? DEFAULT_FIT.newPhrasingShare!;
  if (!(newShare >= 0 && newShare <= 1)) throw new FitError(`the share of new phrasings must be in [0, 1], not ${newShare}`);
  const cal: FamilyCalibration = calibrateFamilies(
    { seen: scores.seen, fresh: scores.fresh, family, region: cr.region, regions: cr.count },
    opts.targetRate,
    { minRegion: opts.minClusterCases, level: INTERVAL_LEVEL, newShare },
  );
  const tagRegions: TagRegion[] | undefined =
    regions === 'tags' ? cr.names!.map((tag, t) => ({ tag, ...regionFields(cal.regions[t]), threshold: cal.regions[t].threshold })) : undefined;
  /** each case's threshold (its region's) */
  const caseThreshold = Float32Array.from(cr.region, (r) => cal.regions[r].threshold);
  const [caseRegion, regionCentroids, regionCount] = [cr.region, cr.centroids, cr.count];
  const loose = looseRegions(
    cal.regions.map((r) => r.threshold),
    cal.regions.map((r) => r.own),
    LOOSE_THRESHOLD_Z,
  );
  // coverage depth bands and the novel-topic profile (src/coverage/bands.ts)
  // in-scope margins: both scores of every case (the seen and the new-phrasing one, the mixture the
  // threshold aims at, with equal weights), so the threshold sits at its target level among them
  const margins = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    margins[i] = scores.seen[i] - caseThreshold[i];
    margins[n + i] = scores.fresh[i] - caseThreshold[i];
  }
  const edges = bandEdges(margins);
  let bands: ManifestDraft['calibration']['bands'];
  if (regionCount >= 2) {
    const sample = sampleByRegion(caseRegion, regionCount, NOVEL_PROFILE_CASES, opts.seed);
    const novel = leaveRegionOutMargins({
      vectors, n, dim, region: caseRegion, regionThreshold: cal.regions.map((r) => r.threshold), regionCentroids, regions: regionCount,
      neighbours: params.neighbours, sample,
    });
    const novelShares = bandShares(novel, edges);
    // the deep-band share of new phrasings of tested intents, with its interval (bands.ts heldOutDeep)
    const ho = heldOutDeep({
      seen: margins.subarray(0, n), fresh: margins.subarray(n), family, region: caseRegion, regions: regionCount, edges, novel: novelShares,
      level: INTERVAL_LEVEL, designMix: HELD_OUT_DESIGN_MIX,
    });
    // how sessions of a tested intent score on the monitor's novel_sessions statistic (session-reference.ts)
    const sr = sessionReference({
      seen: margins.subarray(0, n), fresh: margins.subarray(n), cluster: labels, family, region: caseRegion, regions: regionCount,
      bandOf: (mg) => bandOf(mg, edges), deepBands: ho.deepBands, novel: novelShares, novelSample: sample, novelMargins: novel,
      ...SESSION_REFERENCE, seed: opts.seed,
    });
    bands = {
      levels: BAND_LEVELS.map((l) => (l === 'threshold' ? opts.targetRate : l)),
      edges,
      inScope: bandShares(margins, edges),
      novel: novelShares,
      heldOut: {
        deepBands: ho.deepBands,
        deepShare: ho.deepShare,
        deepShareInterval: ho.deepShareInterval,
        deepShareSeen: ho.deepShareSeen,
        betweenRegionSd: ho.betweenRegionSd,
        novelDeepShare: ho.novelDeepShare,
        profile: ho.profile,
        designMix: HELD_OUT_DESIGN_MIX,
        method:
          `share of the eval cases scored with their phrasing family left out (new phrasings of tested intents) in the ${ho.deepBands} deepest band(s), ` +
          `per ${regions === 'tags' ? 'tag' : 'cluster'}, weighted by its cases; interval from the lower bound of the seen phrasings' share to the upper bound ` +
          `of the new phrasings' (family-clustered variance plus the between-region variance, ${INTERVAL_LEVEL} central); deep bands chosen where ` +
          `${HELD_OUT_DESIGN_MIX} of traffic moving to the novel profile gives the most evidence against that upper end`,
      },
      sessions: { ...sr, method: sessionReferenceMethod(sr, regions === 'tags' ? 'tag' : 'cluster') },
      novelCases: sample.length,
      method:
        `margin = coverage score − the threshold that decided it; band edges at levels ${BAND_LEVELS.join(', ')} of the eval cases' calibration margins (both scores of each case: seen and new phrasing); ` +
        `novel: the bands of ${sample.length} eval cases scored with their whole ${regions === 'tags' ? 'tag' : 'cluster'} left out of the index`,
    };
  }
  const calibrateMs = performance.now() - t + (pre?.calibrationScoresMs ?? 0);

  const texts = unique.map((c) => c.text);
  const terms = ctfidfTerms(texts, labels, k, 3);
  const members: number[][] = Array.from({ length: k }, () => []);
  labels.forEach((l, i) => members[l].push(i));
  const clusters = members.map((rows, c) => {
    const bySim = [...rows].sort((a, b) => sims[b] - sims[a]);
    const medSims = rows.map((r) => sims[r]).sort((a, b) => a - b);
    const examples = bySim.slice(0, opts.examples).map((r) => texts[r]);
    const tagCount = new Map<string, number>();
    for (const r of rows) for (const tg of unique[r].tags) tagCount.set(tg, (tagCount.get(tg) ?? 0) + 1);
    // with cluster regions: the cluster's own calibration; with tag regions: estimated from its cases
    let own: ReturnType<typeof regionFields>;
    if (regions === 'clusters') own = regionFields(cal.regions[c]);
    else {
      const fam = rows.map((r) => family[r]);
      const th = (j: number) => caseThreshold[rows[j]];
      const a = robustRate(rows.map((r) => scores.seen[r]), fam, th);
      const b = robustRate(rows.map((r) => scores.fresh[r]), fam, th);
      const deff = (x: typeof a) => (Number.isFinite(x.deff) ? x.deff : 1);
      own = {
        threshold: null,
        ownThreshold: false,
        calibrationCases: rows.length,
        expectedRate: (1 - newShare) * a.rate + newShare * b.rate,
        expectedRateInterval: [designInterval(a.rate, rows.length, deff(a), INTERVAL_LEVEL)[0], designInterval(b.rate, rows.length, deff(b), INTERVAL_LEVEL)[1]],
        rateSeenPhrasing: a.rate,
        rateNewPhrasing: b.rate,
        families: a.families,
      };
    }
    return {
      id: c,
      label: terms[c].length ? terms[c].join(' / ') : examples[0].slice(0, 60),
      terms: terms[c],
      size: rows.length,
      share: rows.length / n,
      examples,
      medianSimilarity: quantile(medSims, 0.5),
      ...own,
      tags: [...tagCount]
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
        .map(([tag, count]) => ({ tag, count })),
    };
  });

  const paramsAll = {
    k,
    kMode: opts.k === 'auto' ? ('auto' as const) : ('fixed' as const),
    kCriterion: kChoice ? kChoice.criterion : 'given with --k',
    kScores: kChoice ? kChoice.scores : [],
    seed: opts.seed,
    restarts: opts.restarts,
    ...params,
  };
  const version = modelVersion({
    evalSetSha256: evalHash,
    tags: unique.map((c) => c.tags),
    embeddingChecksum: emb.checksum,
    params: paramsAll,
    targetRate: opts.targetRate,
    nearDuplicateCosine: opts.nearDuplicateCosine,
    minClusterCases: opts.minClusterCases,
    regions,
    calibration: { method: CALIBRATION_METHOD, newShare },
  });
  const draft: ManifestDraft = {
    format: MODEL_FORMAT,
    formatVersion: MODEL_FORMAT_VERSION,
    version,
    createdAt: now.toISOString(),
    embedding: emb,
    evalSet: { source: opts.source, sha256: evalHash, cases: allCases, uniqueCases: n, textField: opts.textField },
    params: paramsAll,
    scorer: {
      kind: 'knn',
      description: `mean cosine to the ${params.neighbours} nearest eval cases, searched in the ${params.nprobe} nearest clusters`,
      reason: tagged
        ? `${tagged} of ${n} cases tagged; tags set calibration regions, not the score (docs/coverage-model.md: Tags)`
        : 'no tags in the eval set',
    },
    calibration: {
      method:
        `Mondrian calibration over phrasing families per ${regions === 'tags' ? 'tag (a query\'s tag: its most similar tag centroid)' : 'cluster'} ` +
        `(docs/calibration.md): each region's cases are split into ⌈√n / 2⌉ phrasing families by k-means; each case is scored against the others ` +
        `leaving out its near-duplicates (cosine ≥ ${opts.nearDuplicateCosine}): a new phrasing of a family the eval set has; and with its whole family ` +
        `left out: a phrasing the eval set did not write. A region's threshold puts the target rate ${opts.targetRate} on the mixture with ` +
        `${newShare} new phrasings ((n+1)/n-corrected, interpolated); regions under ${opts.minClusterCases} cases use the pooled threshold. ` +
        `Interval: from the lower bound of the rate of seen phrasings to the upper bound of the rate of new ones (family-clustered ` +
        `variance; overall: plus the between-region variance), so it holds whatever the share of new phrasings`,
      regions,
      ...(tagRegions ? { tagRegions } : {}),
      threshold: cal.threshold,
      targetFalseUncoveredRate: opts.targetRate,
      nearDuplicateCosine: opts.nearDuplicateCosine,
      minClusterCases: opts.minClusterCases,
      expectedRate: cal.expectedRate,
      expectedRateInterval: cal.expectedRateInterval,
      intervalLevel: INTERVAL_LEVEL,
      phrasing: {
        families: cal.families,
        newShare,
        rateSeen: cal.rateSeen,
        rateNew: cal.rateNew,
        betweenRegionSd: cal.betweenRegionSd,
      },
      looseRegions: loose.map((l) => ({
        region: regions === 'tags' ? cr.names![l.index] : String(l.index),
        threshold: l.threshold,
        z: l.z,
      })),
      scoreQuantiles: Object.fromEntries([0.01, 0.05, 0.1, 0.25, 0.5].map((q) => [`p${Math.round(q * 100)}`, quantile(sorted, q)])),
      ...(bands ? { bands } : {}),
    },
    clusters,
  };
  return {
    draft,
    arrays: { centroids, embeddings: vectors, labels, cases: unique.map((c) => ({ id: c.id, text: c.text, tags: c.tags })) },
    kChoice,
    timings: { chooseKMs, clusterMs, calibrateMs },
  };
}

/**
 * Worker threads for choosing k and for the calibration scores: as many as the embedder's pool
 * has (EVALGAP_EMBED_THREADS), else one per core; at most 4.
 */
function fitThreads(embedder: Embedder): number {
  const w = (embedder as { workers?: number }).workers;
  return Math.max(1, Math.min(4, w && w > 0 ? w : os.availableParallelism()));
}

export async function fitCoverageModel(
  cases: readonly EvalCase[],
  embedder: Embedder,
  opts: FitOptions,
  progress?: (done: number, total: number) => void,
): Promise<FitOutput> {
  const t0 = performance.now();
  const { unique, duplicates } = dedupeCases(cases);
  if (unique.length < MIN_CASES) {
    throw new FitError(
      `the eval set has ${unique.length} distinct case(s); at least ${MIN_CASES} are needed to cluster it`,
    );
  }
  const n = unique.length;
  const dim = embedder.dim;
  const vectors = new Float32Array(n * dim);
  let done = 0;
  const embedRows = async (rows: ArrayLike<number>) => {
    const { vectors: v } = await embedder.embed(Array.from(rows, (r) => unique[r].text));
    for (let i = 0; i < rows.length; i++) vectors.set(v.subarray(i * dim, i * dim + dim), rows[i] * dim);
    done += rows.length;
    progress?.(done, n);
  };
  // With k auto, embed chooseK's sample first and choose k on it in a worker thread meanwhile.
  const sample = opts.k === 'auto' ? chooseKSample(n, opts.seed) : new Int32Array(0);
  let kChoice: ChooseKRun | undefined;
  if (sample.length > 0 && sample.length < n) {
    for (let i = 0; i < sample.length; i += CHUNK) await embedRows(sample.subarray(i, i + CHUNK));
    const sx = new Float32Array(sample.length * dim);
    sample.forEach((r, i) => sx.set(vectors.subarray(r * dim, r * dim + dim), i * dim));
    kChoice = chooseKInWorker({ sx, sn: sample.length, dim, seed: opts.seed, maxK: opts.maxK ?? 150 }, fitThreads(embedder));
  }
  // the rest in length order, so each sub-batch pads to texts of similar length
  const inSample = new Uint8Array(n);
  if (kChoice) for (const r of sample) inSample[r] = 1;
  const rest = [...Array(n).keys()].filter((r) => !inSample[r]).sort((a, b) => unique[a].text.length - unique[b].text.length);
  try {
    for (let i = 0; i < rest.length; i += CHUNK) await embedRows(rest.slice(i, i + CHUNK));
  } catch (e) {
    kChoice?.cancel();
    throw e;
  }
  const embedMs = performance.now() - t0;
  const tk = performance.now();
  const chosen = kChoice ? await kChoice.result : undefined;
  const waitMs = performance.now() - tk;
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim: embedder.dim, maxTokens: embedder.maxTokens };
  // k known (given, or chosen meanwhile): k-means' restarts run in worker threads, the same
  // restarts with the same seeds as in one thread, so the same clusters
  const knownK = chosen?.choice.k ?? (opts.k === 'auto' ? undefined : opts.k);
  let restarts: { k: number; best: ClusterResult; ms: number } | undefined;
  if (knownK !== undefined && knownK >= 1 && knownK * 2 <= n && Math.max(1, opts.restarts) > 1) {
    const tr = performance.now();
    const best = await bestRestartInWorkers(vectors, n, dim, knownK, fitKMeans(opts), fitThreads(embedder));
    restarts = { k: knownK, best, ms: performance.now() - tr };
  }
  const clusters = clusterForFit(n, vectors, dim, opts, chosen?.choice, restarts);
  // the embedding pool is idle now: the phrasing families, then the calibration scores (every
  // case against the others, and without its family) in worker threads, a share of the cases each
  const tc = performance.now();
  const regions = calibrationRegions(unique, vectors, dim, clusters, opts);
  const { family } = phrasingFamilies(vectors, n, dim, regions.region, regions.count, opts.seed);
  const scores = await calibrationScoresInWorkers(
    {
      centroids: clusters.centroids, k: clusters.k, embeddings: vectors, labels: clusters.labels, dim,
      params: indexParams(n, clusters.k, opts), nearDuplicateCosine: opts.nearDuplicateCosine, family,
    },
    fitThreads(embedder),
  );
  const built = buildCoverageModel(unique, cases.length, evalSetHash(cases), vectors, emb, opts, new Date(), chosen?.choice, {
    clusters,
    regions,
    family,
    scores,
    calibrationScoresMs: performance.now() - tc,
  });
  return {
    ...built,
    duplicates,
    timings: {
      ...built.timings,
      ...(chosen ? { chooseKMs: waitMs, chooseKInWorkerMs: chosen.ms } : {}),
      embedMs,
      totalMs: performance.now() - t0,
    },
  };
}
