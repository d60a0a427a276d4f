/**
 * The coverage index: eval embeddings grouped by cluster (an inverted file), so that the k nearest
 * eval cases of a query are searched in its `nprobe` most similar clusters instead of the whole
 * eval set. The same scorer serves fit-time calibration (leave-one-out) and stream assignment, so
 * the calibrated threshold holds for exactly the scores the stream computes.
 *
 * coverage score = mean cosine similarity to the `neighbours` nearest eval cases.
 */
import { dotMany } from './vec.js';
export interface IndexParams {
  /** how many nearest eval cases the coverage score averages */
  neighbours: number;
  /** how many of the most similar clusters are searched for them */
  nprobe: number;
}

export interface AssignResult {
  /** nearest cluster (by centroid cosine), also for uncovered queries */
  cluster: Int32Array;
  /** cosine similarity to that centroid */
  similarity: Float32Array;
  /** coverage score */
  coverage: Float32Array;
  /** 1 when coverage ≥ threshold */
  covered: Uint8Array;
  /** second most similar cluster (by centroid cosine); -1 when the model has one cluster */
  runnerUp: Int32Array;
  /** cosine similarity to the runner-up centroid (-1 when there is none) */
  runnerUpSimilarity: Float32Array;
  /** coverage depth band (src/coverage/bands.ts), set by a model that has bands */
  band?: Int8Array;
}

export class CoverageIndex {
  readonly n: number;
  private readonly offsets: Int32Array;
  private readonly grouped: Float32Array;
  private readonly groupedRow: Int32Array;
  // scratch, reused by every call: no allocation per query
  private readonly cSims: Float32Array;
  private readonly probe: Int32Array;
  private readonly top: Float32Array;
  private readonly rowSims: Float64Array;
  private lastCluster = 0;
  private lastSim = 0;
  private lastRunnerUp = -1;
  private lastRunnerUpSim = -1;

  constructor(
    readonly centroids: Float32Array,
    readonly k: number,
    embeddings: Float32Array,
    labels: Int32Array,
    readonly dim: number,
    readonly params: IndexParams,
  ) {
    this.n = labels.length;
    this.offsets = new Int32Array(k + 1);
    for (let i = 0; i < this.n; i++) this.offsets[labels[i] + 1]++;
    for (let c = 0; c < k; c++) this.offsets[c + 1] += this.offsets[c];
    const fill = this.offsets.slice(0, k);
    this.grouped = new Float32Array(this.n * dim);
    this.groupedRow = new Int32Array(this.n);
    for (let i = 0; i < this.n; i++) {
      const pos = fill[labels[i]]++;
      this.grouped.set(embeddings.subarray(i * dim, i * dim + dim), pos * dim);
      this.groupedRow[pos] = i;
    }
    this.cSims = new Float32Array(k);
    let largest = k;
    for (let c = 0; c < k; c++) largest = Math.max(largest, this.offsets[c + 1] - this.offsets[c]);
    this.rowSims = new Float64Array(largest);
    this.probe = new Int32Array(Math.min(k, Math.max(1, params.nprobe)));
    this.top = new Float32Array(Math.max(1, params.neighbours));
  }

  /**
   * Score row `qi` of `q`; `excludeRow` (an eval row index) is skipped, for leave-one-out; eval
   * rows at cosine ≥ `excludeAbove` too (near-duplicates); with `rowGroup`, every eval row `j` with
   * rowGroup[j] === excludeGroup too (leave-group-out calibration).
   */
  score(q: Float32Array, qi: number, excludeRow = -1, excludeAbove = Infinity, rowGroup?: Int32Array, excludeGroup = -1): number {
    const { dim, k } = this;
    const qo = qi * dim;
    const cs = this.cSims;
    const C = this.centroids;
    let best = -Infinity;
    let bestC = 0;
    let second = -Infinity;
    let secondC = -1;
    const rs = this.rowSims;
    dotMany(q, qo, C, 0, k, dim, rs);
    for (let c = 0; c < k; c++) {
      const s = rs[c];
      cs[c] = s;
      if (s > best) {
        second = best;
        secondC = c === 0 ? -1 : bestC;
        best = s;
        bestC = c;
      } else if (s > second) {
        second = s;
        secondC = c;
      }
    }
    this.lastCluster = bestC;
    this.lastSim = best;
    this.lastRunnerUp = secondC;
    this.lastRunnerUpSim = secondC < 0 ? -1 : second;
    // the nprobe most similar clusters (selection; nprobe and k are small)
    const P = this.probe;
    for (let p = 0; p < P.length; p++) {
      let bi = -1;
      let bv = -Infinity;
      for (let c = 0; c < k; c++) {
        if (cs[c] > bv) {
          bv = cs[c];
          bi = c;
        }
      }
      P[p] = bi;
      cs[bi] = -Infinity;
    }
    // top-m similarities among the probed clusters' members
    const T = this.top;
    const m = T.length;
    T.fill(-Infinity);
    let found = 0;
    const G = this.grouped;
    for (let p = 0; p < P.length; p++) {
      const c = P[p];
      const from = this.offsets[c];
      dotMany(q, qo, G, from, this.offsets[c + 1], dim, rs);
      for (let pos = from; pos < this.offsets[c + 1]; pos++) {
        const row = this.groupedRow[pos];
        if (row === excludeRow || (rowGroup !== undefined && rowGroup[row] === excludeGroup)) continue;
        const s = rs[pos - from];
        if (s >= excludeAbove) continue;
        found++;
        if (s <= T[m - 1]) continue;
        let j = m - 1;
        while (j > 0 && T[j - 1] < s) {
          T[j] = T[j - 1];
          j--;
        }
        T[j] = s;
      }
    }
    const use = Math.min(m, found);
    if (use === 0) return 0;
    let sum = 0;
    for (let j = 0; j < use; j++) sum += T[j];
    return sum / use;
  }

  /**
   * Assign a batch of unit vectors (count × dim, row-major). `threshold`: one for all queries, or
   * one per cluster (a query is covered when its score reaches its nearest cluster's threshold).
   */
  assign(vectors: Float32Array, count: number, threshold: number | ArrayLike<number>, out?: AssignResult): AssignResult {
    const r = out ?? {
      cluster: new Int32Array(count),
      similarity: new Float32Array(count),
      runnerUp: new Int32Array(count),
      runnerUpSimilarity: new Float32Array(count),
      coverage: new Float32Array(count),
      covered: new Uint8Array(count),
    };
    for (let i = 0; i < count; i++) {
      const s = this.score(vectors, i);
      r.cluster[i] = this.lastCluster;
      r.similarity[i] = this.lastSim;
      r.runnerUp[i] = this.lastRunnerUp;
      r.runnerUpSimilarity[i] = this.lastRunnerUpSim;
      r.coverage[i] = s;
      r.covered[i] = s >= (typeof threshold === 'number' ? threshold : threshold[this.lastCluster]) ? 1 : 0;
    }
    return r;
  }

  /**
   * Calibration score of every eval case: scored against the others, leaving out itself and its
   * near-duplicates (cases at cosine ≥ `nearDuplicateCosine`), so that it stands for an unseen
   * query of its intent rather than a paraphrase of a case in the eval set. Rows [from, to).
   */
  calibrationScores(embeddings: Float32Array, nearDuplicateCosine: number, from = 0, to = this.n): Float32Array {
    const out = new Float32Array(to - from);
    for (let i = from; i < to; i++) out[i - from] = this.score(embeddings, i, i, nearDuplicateCosine);
    return out;
  }

  /**
   * Leave-group-out calibration score of every eval case, rows [from, to): scored against the
   * cases outside its group (`group[i]`: the case's family of related phrasings), its
   * near-duplicates left out too. It stands for an unseen query phrased in a way the eval set did
   * not write at all.
   */
  groupOutScores(embeddings: Float32Array, group: Int32Array, nearDuplicateCosine: number, from = 0, to = this.n): Float32Array {
    const out = new Float32Array(to - from);
    for (let i = from; i < to; i++) out[i - from] = this.score(embeddings, i, i, nearDuplicateCosine, group, group[i]);
    return out;
  }

  /** Leave-one-out coverage score of every eval case (its own row excluded). */
  leaveOneOutScores(embeddings: Float32Array): Float32Array {
    const out = new Float32Array(this.n);
    for (let i = 0; i < this.n; i++) out[i] = this.score(embeddings, i, i);
    return out;
  }
}
