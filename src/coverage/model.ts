/**
 * The coverage model on disk: a folder with manifest.json (validated with zod on load) and the
 * arrays as little-endian binary files whose sha256 the manifest records.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { nearestRow, tagCentroids } from './calibrate.js';
import { CoverageIndex, type AssignResult } from './index.js';
import { BANDS, bandOf } from './bands.js';
import { modelValueProblems } from './model-check.js';

export const MODEL_FORMAT = 'evalgap.coverage-model';
export const MODEL_FORMAT_VERSION = 2;

/**
 * A region's rates under its threshold for a new phrasing of a family the eval set has (seen) and
 * for a phrasing the eval set did not write (new), and its phrasing families (docs/calibration.md).
 * Absent in models calibrated before phrasing families.
 */
const PhrasingRates = {
  rateSeenPhrasing: z.number().min(0).max(1).optional(),
  rateNewPhrasing: z.number().min(0).max(1).optional(),
  families: z.number().int().nonnegative().optional(),
};

const ClusterSchema = z.object({
  id: z.number().int().nonnegative(),
  label: z.string(),
  terms: z.array(z.string()),
  size: z.number().int().positive(),
  share: z.number().min(0).max(1),
  examples: z.array(z.string()),
  medianSimilarity: z.number(),
  /** covered threshold for queries whose nearest cluster this is (null when calibrated by tag) */
  threshold: z.number().nullable(),
  /** whether the threshold is the cluster's own (Mondrian) or the pooled one (too few cases) */
  ownThreshold: z.boolean(),
  /** calibration scores the threshold was set from */
  calibrationCases: z.number().int().nonnegative(),
  /** expected uncovered rate of this cluster's queries under no shift, and its interval */
  expectedRate: z.number().min(0).max(1),
  expectedRateInterval: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]),
  ...PhrasingRates,
  /** eval-set tags of the cluster's cases, most frequent first */
  // (with tag regions, expectedRate/Interval are estimated from the cluster's cases against their tags' thresholds)
  tags: z.array(z.object({ tag: z.string(), count: z.number().int().positive() })),
});

const FileSchema = z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number().int().nonnegative() });

export const ManifestSchema = z.object({
  format: z.literal(MODEL_FORMAT),
  formatVersion: z.literal(MODEL_FORMAT_VERSION),
  version: z.string().regex(/^cm-[0-9a-f]{12}$/),
  createdAt: z.string().datetime(),
  embedding: z.object({
    model: z.string(),
    checksum: z.string().regex(/^[0-9a-f]{64}$/),
    /** the embedding graph's arithmetic (EVALGAP_EMBED_PRECISION); its checksum differs per precision */
    precision: z.enum(['int8', 'fp32']),
    dim: z.number().int().positive(),
    maxTokens: z.number().int().positive(),
  }),
  evalSet: z.object({
    source: z.string(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    cases: z.number().int().positive(),
    uniqueCases: z.number().int().positive(),
    textField: z.string(),
  }),
  params: z.object({
    k: z.number().int().positive(),
    kMode: z.enum(['auto', 'fixed']),
    kCriterion: z.string(),
    kScores: z.array(z.object({ k: z.number().int(), silhouette: z.number() })),
    seed: z.number().int(),
    restarts: z.number().int().positive(),
    neighbours: z.number().int().positive(),
    nprobe: z.number().int().positive(),
  }),
  /** how the coverage score of a query is computed */
  scorer: z.object({
    kind: z.enum(['knn']),
    description: z.string(),
    /** why this scorer: e.g. tags present or not */
    reason: z.string(),
  }),
  calibration: z.object({
    method: z.string(),
    /** threshold shared by the regions under minClusterCases (from their scores pooled; from all scores when those are too few) */
    threshold: z.number(),
    targetFalseUncoveredRate: z.number().gt(0).lt(1),
    /** an eval case's neighbours at cosine ≥ this are left out when it is scored for calibration */
    nearDuplicateCosine: z.number(),
    /** clusters with fewer calibration cases than this use the pooled threshold */
    minClusterCases: z.number().int().positive(),
    /** expected uncovered rate of production queries under no shift (clusters weighted by eval share) */
    expectedRate: z.number().min(0).max(1),
    expectedRateInterval: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]),
    /** one threshold per cluster, or per tag (a query's tag region: its most similar tag centroid) */
    regions: z.enum(['clusters', 'tags']),
    tagRegions: z
      .array(
        z.object({
          tag: z.string(),
          threshold: z.number(),
          ownThreshold: z.boolean(),
          calibrationCases: z.number().int().nonnegative(),
          expectedRate: z.number().min(0).max(1),
          expectedRateInterval: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]),
          ...PhrasingRates,
        }),
      )
      .optional(),
    /**
     * calibration over phrasing families (docs/calibration.md): how many, the share of new
     * phrasings the threshold aims at, the overall rates of seen and new phrasings, and the
     * between-region standard deviations of those. Absent in models calibrated before them (their
     * interval counts only sampling error).
     */
    phrasing: z
      .object({
        families: z.number().int().nonnegative(),
        newShare: z.number().min(0).max(1),
        rateSeen: z.number().min(0).max(1),
        rateNew: z.number().min(0).max(1),
        betweenRegionSd: z.tuple([z.number().nonnegative(), z.number().nonnegative()]),
      })
      .optional(),
    /** regions whose own threshold sits far below the others' (robust z-score); fit and inspect warn */
    looseRegions: z.array(z.object({ region: z.string(), threshold: z.number(), z: z.number() })).optional(),
    /** coverage level of the intervals */
    intervalLevel: z.number().gt(0).lt(1),
    scoreQuantiles: z.record(z.number()),
    /**
     * coverage depth bands (src/coverage/bands.ts): edges of the margin (score − threshold), the
     * eval cases' share per band, and the novel-topic profile. Absent in models fitted before them:
     * the monitor's novel-topic detector is then off.
     */
    bands: z
      .object({
        levels: z.array(z.number()).length(BANDS - 1),
        edges: z.array(z.number()).length(BANDS - 1),
        inScope: z.array(z.number().positive()).length(BANDS),
        novel: z.array(z.number().positive()).length(BANDS),
        novelCases: z.number().int().nonnegative(),
        method: z.string(),
        /**
         * the deep-band share of new phrasings of tested intents (src/coverage/bands.ts
         * `heldOutDeep`) with its interval: the reference of the monitor's novel_vs_calibrated
         * rule. Absent in models fitted before it: that rule is then off.
         */
        heldOut: z
          .object({
            deepBands: z.number().int().positive().lt(BANDS),
            deepShare: z.number().min(0).max(1),
            deepShareInterval: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]),
            deepShareSeen: z.number().min(0).max(1),
            betweenRegionSd: z.number().nonnegative(),
            novelDeepShare: z.number().min(0).max(1),
            profile: z.array(z.number().positive()).length(BANDS),
            designMix: z.number().gt(0).lt(1),
            method: z.string(),
          })
          .optional(),
        /**
         * how closed sessions of tested intents score on the monitor's novel_sessions statistic
         * (src/coverage/session-reference.ts): the fit-time reference of that rule until production's
         * own is ready. Absent in models fitted before it: the rule then waits for production history.
         */
        sessions: z
          .object({
            caps: z.array(z.number().int().positive()).min(1).max(16),
            deepBands: z.number().int().positive().lt(BANDS),
            groupShares: z.array(z.number().positive().max(1)).min(1).max(16),
            novelShares: z.array(z.number().nonnegative().max(1)).min(1).max(16),
            cap: z.number().gt(1),
            shape: z.array(z.number().positive()).min(1).max(64),
            bound: z.number().positive(),
            delta: z.number().gt(0).lt(0.5),
            byPhrasings: z.array(z.object({ m: z.number().int().positive(), mean: z.number().nonnegative(), upper: z.number().nonnegative() })).max(1000),
            novelMean: z.number().nonnegative(),
            regions: z.number().int().nonnegative(),
            draws: z.number().int().positive(),
            method: z.string(),
          })
          .optional(),
      })
      .optional(),
  }),
  clusters: z.array(ClusterSchema).min(1),
  files: z.object({
    'centroids.f32': FileSchema,
    'embeddings.f32': FileSchema,
    'labels.i32': FileSchema,
    'cases.jsonl': FileSchema,
  }),
});

export type Manifest = z.infer<typeof ManifestSchema>;
export type ClusterInfo = z.infer<typeof ClusterSchema>;

export interface CoverageModel {
  manifest: Manifest;
  centroids: Float32Array;
  embeddings: Float32Array;
  labels: Int32Array;
  cases: ModelCase[];
}

/** One eval case as kept in cases.jsonl (the eval set the model was fitted on, deduplicated). */
export interface ModelCase {
  id: string;
  text: string;
  tags: string[];
}

const CaseLineSchema = z.object({ id: z.string(), text: z.string(), tags: z.array(z.string()).default([]) });

export class ModelLoadError extends Error {}

function sha256(b: Uint8Array | string): string {
  return createHash('sha256').update(b).digest('hex');
}

function bytesOf(a: Float32Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export type ManifestDraft = Omit<Manifest, 'files'>;

export function saveCoverageModel(dir: string, draft: ManifestDraft, m: Omit<CoverageModel, 'manifest'>): Manifest {
  fs.mkdirSync(dir, { recursive: true });
  const blobs: Record<keyof Manifest['files'], Buffer> = {
    'centroids.f32': bytesOf(m.centroids),
    'embeddings.f32': bytesOf(m.embeddings),
    'labels.i32': bytesOf(m.labels),
    'cases.jsonl': Buffer.from(m.cases.map((c) => JSON.stringify(c)).join('\n') + '\n'),
  };
  const files = {} as Manifest['files'];
  for (const [name, buf] of Object.entries(blobs) as [keyof Manifest['files'], Buffer][]) {
    fs.writeFileSync(path.join(dir, name), buf);
    files[name] = { sha256: sha256(buf), bytes: buf.length };
  }
  const manifest = ManifestSchema.parse({ ...draft, files });
  // the manifest is written last: a folder without one is not a model
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

export interface LoadOptions {
  /** refuse a model fitted with another embedding model */
  expectEmbedding?: { model: string; checksum: string; precision?: string; maxTokens?: number };
}

export function loadCoverageModel(dir: string, opts: LoadOptions = {}): CoverageModel {
  const mf = path.join(dir, 'manifest.json');
  if (!fs.existsSync(mf)) throw new ModelLoadError(`no coverage model in ${dir} (missing manifest.json; run evalgap fit)`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(mf, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(`${mf} is not valid JSON: ${(e as Error).message}`);
  }
  if (raw && typeof raw === 'object' && (raw as { formatVersion?: unknown }).formatVersion !== MODEL_FORMAT_VERSION &&
    (raw as { format?: unknown }).format === MODEL_FORMAT) {
    throw new ModelLoadError(
      `${dir} is coverage-model format ${(raw as { formatVersion?: unknown }).formatVersion}; this evalgap reads format ${MODEL_FORMAT_VERSION}: refit it`,
    );
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ModelLoadError(
      `${mf} is not a valid coverage model manifest:\n` +
        parsed.error.issues.map((i) => `  - ${i.path.join('.')}: ${i.message}`).join('\n'),
    );
  }
  const manifest = parsed.data;
  const read = (name: keyof Manifest['files']): Buffer => {
    const p = path.join(dir, name);
    if (!fs.existsSync(p)) throw new ModelLoadError(`coverage model ${dir} is missing ${name}`);
    const buf = fs.readFileSync(p);
    if (sha256(buf) !== manifest.files[name].sha256) {
      throw new ModelLoadError(`coverage model file ${p} does not match its checksum (corrupt or edited)`);
    }
    return buf;
  };
  const f32 = (b: Buffer) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const centroids = f32(read('centroids.f32'));
  const embeddings = f32(read('embeddings.f32'));
  const lb = read('labels.i32');
  const labels = new Int32Array(lb.buffer.slice(lb.byteOffset, lb.byteOffset + lb.byteLength));
  const cases = read('cases.jsonl')
    .toString('utf8')
    .split('\n')
    .filter(Boolean)
    .map((l, i) => {
      let json: unknown;
      try {
        json = JSON.parse(l);
      } catch {
        throw new ModelLoadError(`coverage model ${dir}: cases.jsonl line ${i + 1} is not JSON`);
      }
      const c = CaseLineSchema.safeParse(json);
      if (!c.success) throw new ModelLoadError(`coverage model ${dir}: cases.jsonl line ${i + 1} is not a case (${c.error.issues[0]?.message})`);
      return c.data;
    });
  const { dim } = manifest.embedding;
  const { k } = manifest.params;
  const n = manifest.evalSet.uniqueCases;
  if (centroids.length !== k * dim || embeddings.length !== n * dim || labels.length !== n || cases.length !== n) {
    throw new ModelLoadError(`coverage model ${dir} has arrays whose sizes do not match its manifest`);
  }
  if (manifest.clusters.length !== k) throw new ModelLoadError(`coverage model ${dir} lists ${manifest.clusters.length} clusters for k=${k}`);
  const e = opts.expectEmbedding;
  if (e && (e.model !== manifest.embedding.model || e.checksum !== manifest.embedding.checksum)) {
    throw new ModelLoadError(
      `coverage model ${manifest.version} was fitted with embedding model ${manifest.embedding.model} ` +
        `(sha256 ${manifest.embedding.checksum.slice(0, 12)}…) but the installed one is ${e.model} ` +
        `(sha256 ${e.checksum.slice(0, 12)}…): its vectors are not comparable; run evalgap fit again` +
        (e.precision && e.precision !== manifest.embedding.precision
          ? ` (it was fitted with ${manifest.embedding.precision} embeddings, these are ${e.precision}: or set EVALGAP_EMBED_PRECISION=${manifest.embedding.precision})`
          : ''),
    );
  }
  // the same graph truncating texts elsewhere embeds long queries otherwise than the fit did
  if (e?.maxTokens !== undefined && e.maxTokens !== manifest.embedding.maxTokens) {
    throw new ModelLoadError(
      `coverage model ${manifest.version} was fitted with texts cut at ${manifest.embedding.maxTokens} tokens but this process cuts them at ${e.maxTokens}: ` +
        `long queries would be embedded otherwise than its eval cases were; set EVALGAP_EMBED_MAX_TOKENS=${manifest.embedding.maxTokens} or run evalgap fit again`,
    );
  }
  const model = { manifest, centroids, embeddings, labels, cases };
  const problems = modelValueProblems(model);
  if (problems.length) {
    throw new ModelLoadError(
      `coverage model ${dir} (${manifest.version}) holds values no fit produces; refused:\n` + problems.map((p) => `  - ${p}`).join('\n'),
    );
  }
  return model;
}

/** A loaded model ready to assign query embeddings. */
export class CoverageAssigner {
  readonly index: CoverageIndex;
  /** covered threshold per cluster (Mondrian calibration) */
  readonly thresholds: Float32Array;
  constructor(readonly model: CoverageModel) {
    const { manifest } = model;
    this.index = new CoverageIndex(model.centroids, manifest.params.k, model.embeddings, model.labels, manifest.embedding.dim, {
      neighbours: manifest.params.neighbours,
      nprobe: manifest.params.nprobe,
    });
    const c = manifest.calibration;
    this.thresholds = Float32Array.from(manifest.clusters, (cl) => cl.threshold ?? c.threshold);
    this.edges = c.bands ? Float64Array.from(c.bands.edges) : null;
    if (c.regions === 'tags') {
      const tc = tagCentroids(model.cases.map((x) => x.tags), model.embeddings, manifest.embedding.dim);
      const regions = c.tagRegions ?? [];
      if (tc.names.length !== regions.length || tc.names.some((t, i) => regions[i].tag !== t)) {
        throw new ModelLoadError(`coverage model ${manifest.version}: the tags in cases.jsonl do not match the manifest's tag regions`);
      }
      this.tags = { names: tc.names, centroids: tc.centroids, thresholds: Float32Array.from(regions, (r) => r.threshold) };
    }
  }
  /** with tag regions: the tags' centroids and thresholds */
  readonly tags?: { names: string[]; centroids: Float32Array; thresholds: Float32Array };
  /** coverage depth band edges (null: a model fitted before bands) */
  readonly edges: Float64Array | null;
  get version(): string {
    return this.model.manifest.version;
  }
  /** the pooled threshold (each cluster's own is in `thresholds`) */
  get threshold(): number {
    return this.model.manifest.calibration.threshold;
  }
  assign(vectors: Float32Array, count: number, out?: AssignResult): AssignResult {
    const r = this.index.assign(vectors, count, this.thresholds, out);
    const t = this.tags;
    const edges = this.edges;
    if (edges) r.band = r.band && r.band.length >= count ? r.band : new Int8Array(count);
    const dim = this.model.manifest.embedding.dim;
    for (let i = 0; i < count; i++) {
      let thr: number;
      if (t) {
        thr = t.thresholds[nearestRow(vectors, i, t.centroids, t.names.length, dim)];
        r.covered[i] = r.coverage[i] >= thr ? 1 : 0;
      } else thr = this.thresholds[r.cluster[i]];
      // the margin's sign is the covered verdict: band ≥ the threshold's band exactly when covered
      if (edges) r.band![i] = bandOf(r.coverage[i] - thr, edges);
    }
    return r;
  }

  /** The threshold that decided row `i` of `vectors` (its tag region's, or its cluster's). */
  thresholdOf(vectors: Float32Array, i: number, cluster: number): number {
    const t = this.tags;
    if (!t) return this.thresholds[cluster];
    return t.thresholds[nearestRow(vectors, i, t.centroids, t.names.length, this.model.manifest.embedding.dim)];
  }
}
