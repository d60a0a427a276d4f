/**
 * Spherical k-means on unit vectors: a seeded k-means++ initialisation, Lloyd iterations (as
 * ml-kmeans 7 ran them, on typed arrays), several restarts (best inertia wins), centroids re-normalised to the unit sphere.
 * `chooseK` picks k by mean silhouette (cosine distance) on a seeded sample over a grid of k.
 */
import { dotRows, gatherRows, normalizeRows, rng, sampleIndices } from './vec.js';

export interface ClusterResult {
  k: number;
  /** k × dim, unit rows. */
  centroids: Float32Array;
  /** cluster of each point. */
  labels: Int32Array;
  /** sum over points of (1 - cosine to own centroid). */
  inertia: number;
  iterations: number;
}

export interface KMeansOptions {
  seed: number;
  restarts: number;
  maxIterations: number;
  /** restarts run on a sample of at most this many points; the winner is refined on all points */
  restartSample: number;
}

export const DEFAULT_KMEANS: KMeansOptions = { seed: 42, restarts: 5, maxIterations: 60, restartSample: 3000 };

/** k-means++ seeding (D² sampling) on unit vectors, seeded. */
export function kmeansPlusPlus(x: Float32Array, n: number, dim: number, k: number, seed: number): Float32Array {
  const r = rng(seed);
  const centers = new Float32Array(k * dim);
  const d2 = new Float64Array(n).fill(Infinity);
  let pick = Math.floor(r() * n);
  for (let c = 0; c < k; c++) {
    centers.set(x.subarray(pick * dim, pick * dim + dim), c * dim);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const dist = Math.max(0, 2 - 2 * dotRows(x, i, centers, c, dim));
      if (dist < d2[i]) d2[i] = dist;
      total += d2[i];
    }
    if (c === k - 1) break;
    let u = r() * total;
    pick = n - 1;
    for (let i = 0; i < n; i++) {
      u -= d2[i];
      if (u <= 0) {
        pick = i;
        break;
      }
    }
  }
  return centers;
}

/** Assign each point to its most similar centroid; returns labels and inertia. */
export function nearestCentroids(
  x: Float32Array,
  n: number,
  dim: number,
  centroids: Float32Array,
  k: number,
): { labels: Int32Array; sims: Float32Array; inertia: number } {
  const labels = new Int32Array(n);
  const sims = new Float32Array(n);
  let inertia = 0;
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    let bi = 0;
    for (let c = 0; c < k; c++) {
      const s = dotRows(x, i, centroids, c, dim);
      if (s > best) {
        best = s;
        bi = c;
      }
    }
    labels[i] = bi;
    sims[i] = best;
    inertia += 1 - best;
  }
  return { labels, sims, inertia };
}

/**
 * Lloyd's iterations as ml-kmeans 7 runs them (what this module used before): each point goes to
 * the centre at the least squared euclidean distance (the first on ties), each centre becomes the
 * mean of its points (an empty cluster keeps its centre), and it stops once no centre moved by
 * more than `tolerance` (squared distance) or after `maxIterations`.
 *
 * Here on typed arrays with Hamerly's bounds (G. Hamerly, "Making k-means even faster", SDM 2010):
 * each point keeps an upper bound on the distance to its centre and a lower bound on the distance
 * to any other, moved by how far the centres moved; a point whose bounds prove its centre is
 * still the nearest is not measured again. The assignments are those of the plain algorithm (the
 * bounds are exact inequalities; a small slack covers float rounding); after the first iterations
 * few points are measured, so it is several times faster. Checked against ml-kmeans in
 * test/unit/cluster.test.ts.
 */
export function lloyd(
  x: Float32Array,
  n: number,
  dim: number,
  init: Float32Array,
  k: number,
  maxIterations: number,
  tolerance = 1e-4,
): ClusterResult {
  let centers = Float64Array.from(init);
  let next = new Float64Array(k * dim);
  const assigned = new Int32Array(n);
  const upper = new Float64Array(n);
  const lower = new Float64Array(n);
  const counts = new Int32Array(k);
  const cNorm = new Float64Array(k);
  const cDots = new Float64Array(k);
  const moved = new Float64Array(k);
  const half = new Float64Array(k);
  const xNorm = new Float64Array(n);
  for (let i = 0; i < n; i++) xNorm[i] = dotRows(x, i, x, i, dim);
  const dist = (i: number, c: number) => Math.sqrt(Math.max(0, xNorm[i] - 2 * dotXC(x, i * dim, centers, c * dim, dim) + cNorm[c]));
  const SLACK = 1e-9;
  let iterations = 0;
  let converged = false;
  while (!converged && iterations < maxIterations) {
    iterations++;
    for (let c = 0; c < k; c++) cNorm[c] = sumSquares(centers, c * dim, dim);
    if (iterations > 1) {
      // half the distance from each centre to its nearest other centre
      half.fill(Infinity);
      for (let a = 0; a < k; a++) {
        for (let b = a + 1; b < k; b++) {
          const d = 0.5 * Math.sqrt(Math.max(0, cNorm[a] + cNorm[b] - 2 * dot64(centers, a * dim, centers, b * dim, dim)));
          if (d < half[a]) half[a] = d;
          if (d < half[b]) half[b] = d;
        }
      }
    }
    for (let i = 0; i < n; i++) {
      if (iterations > 1) {
        const m = Math.max(half[assigned[i]], lower[i]);
        if (upper[i] + SLACK < m) continue;
        upper[i] = dist(i, assigned[i]);
        if (upper[i] + SLACK < m) continue;
      }
      // measure every centre: nearest (first on ties) and second nearest
      let best = Infinity;
      let second = Infinity;
      let bi = 0;
      const xo = i * dim;
      dotsXC(x, xo, centers, k, dim, cDots);
      for (let c = 0; c < k; c++) {
        const d = xNorm[i] - 2 * cDots[c] + cNorm[c];
        if (d < best) {
          second = best;
          best = d;
          bi = c;
        } else if (d < second) second = d;
      }
      assigned[i] = bi;
      upper[i] = Math.sqrt(Math.max(0, best));
      lower[i] = Math.sqrt(Math.max(0, second));
    }
    next.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const co = assigned[i] * dim;
      const xo = i * dim;
      counts[assigned[i]]++;
      for (let d = 0; d < dim; d++) next[co + d] += x[xo + d];
    }
    converged = true;
    let max1 = 0;
    let max2 = 0;
    let maxC = -1;
    for (let c = 0; c < k; c++) {
      const co = c * dim;
      let m2 = 0;
      for (let d = 0; d < dim; d++) {
        const v = counts[c] ? next[co + d] / counts[c] : centers[co + d];
        next[co + d] = v;
        m2 += (v - centers[co + d]) ** 2;
      }
      if (m2 > tolerance) converged = false;
      moved[c] = Math.sqrt(m2);
      if (moved[c] > max1) {
        max2 = max1;
        max1 = moved[c];
        maxC = c;
      } else if (moved[c] > max2) max2 = moved[c];
    }
    for (let i = 0; i < n; i++) {
      upper[i] += moved[assigned[i]];
      lower[i] -= assigned[i] === maxC ? max2 : max1;
    }
    [centers, next] = [next, centers];
  }
  const centroids = normalizeRows(Float32Array.from(centers), dim);
  const { labels, inertia } = nearestCentroids(x, n, dim, centroids, k);
  return { k, centroids, labels, inertia, iterations };
}

function dot64(a: Float64Array, ao: number, b: Float64Array, bo: number, dim: number): number {
  let s = 0;
  for (let d = 0; d < dim; d++) s += a[ao + d] * b[bo + d];
  return s;
}

/** Dot product of a Float32 row and a Float64 row (monomorphic: V8 keeps it fast), four accumulators. */
function dotXC(a: Float32Array, ao: number, b: Float64Array, bo: number, dim: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let d = 0;
  for (; d + 3 < dim; d += 4) {
    s0 += a[ao + d] * b[bo + d];
    s1 += a[ao + d + 1] * b[bo + d + 1];
    s2 += a[ao + d + 2] * b[bo + d + 2];
    s3 += a[ao + d + 3] * b[bo + d + 3];
  }
  for (; d < dim; d++) s0 += a[ao + d] * b[bo + d];
  return s0 + s1 + s2 + s3;
}

/** x[xo..xo+dim) · each of the k rows of c, into out: four rows per pass (x read once for four). */
function dotsXC(x: Float32Array, xo: number, c: Float64Array, k: number, dim: number, out: Float64Array): void {
  let r = 0;
  for (; r + 3 < k; r += 4) {
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    const b0 = r * dim;
    const b1 = b0 + dim;
    const b2 = b1 + dim;
    const b3 = b2 + dim;
    for (let d = 0; d < dim; d++) {
      const v = x[xo + d];
      s0 += v * c[b0 + d];
      s1 += v * c[b1 + d];
      s2 += v * c[b2 + d];
      s3 += v * c[b3 + d];
    }
    out[r] = s0;
    out[r + 1] = s1;
    out[r + 2] = s2;
    out[r + 3] = s3;
  }
  for (; r < k; r++) out[r] = dotXC(x, xo, c, r * dim, dim);
}

function sumSquares(a: Float64Array, ao: number, dim: number): number {
  let s = 0;
  for (let d = 0; d < dim; d++) s += a[ao + d] * a[ao + d];
  return s;
}

/** The points k-means' restarts run on: a seeded sample of at most `restartSample`, or all. */
export interface RestartSample {
  sx: Float32Array;
  sn: number;
  /** true when sx is a sample (the winner is then refined on all points) */
  sampled: boolean;
}

export function restartSample(x: Float32Array, n: number, dim: number, opts: KMeansOptions): RestartSample {
  const sampled = n > opts.restartSample; // clusterEmbeddings tests the same
  const sIdx = sampled ? sampleIndices(n, opts.restartSample, opts.seed) : null;
  return { sx: sIdx ? gatherRows(x, dim, sIdx) : x, sn: sIdx ? sIdx.length : n, sampled };
}

/**
 * The restarts numbered `which` (each seeded by its number), run on the sample; the one of least
 * inertia wins, the lowest number on a tie (as running them in order and keeping a strictly
 * better one does).
 */
export function bestRestart(s: RestartSample, dim: number, k: number, opts: KMeansOptions, which: readonly number[]): { result: ClusterResult; restart: number } {
  let best: { result: ClusterResult; restart: number } | null = null;
  for (const r of [...which].sort((a, b) => a - b)) {
    const init = kmeansPlusPlus(s.sx, s.sn, dim, k, opts.seed + 7919 * r);
    const res = lloyd(s.sx, s.sn, dim, init, k, s.sampled ? 15 : opts.maxIterations);
    if (!best || res.inertia < best.result.inertia) best = { result: res, restart: r };
  }
  if (!best) throw new Error('k-means produced no result');
  return best;
}

/** The restart numbers 0 … restarts − 1. */
export function restartNumbers(opts: KMeansOptions): number[] {
  return Array.from({ length: Math.max(1, opts.restarts) }, (_, r) => r);
}

/**
 * k-means with restarts: each on the restart sample, the best refined on all points. `best`: the
 * best restart when already computed (kmeans-thread.ts runs the restarts in worker threads).
 */
export function clusterEmbeddings(
  x: Float32Array,
  n: number,
  dim: number,
  k: number,
  opts: KMeansOptions = DEFAULT_KMEANS,
  best?: ClusterResult,
): ClusterResult {
  if (k < 1 || k > n) throw new Error(`cannot make ${k} clusters from ${n} points`);
  // the sample is gathered only when the restarts run here
  const b = best ?? bestRestart(restartSample(x, n, dim, opts), dim, k, opts, restartNumbers(opts)).result;
  // refine the best restart on all points; it starts close to a fixed point, so few iterations do
  return n > opts.restartSample ? lloyd(x, n, dim, b.centroids, k, Math.min(opts.maxIterations, 15)) : b;
}

/** Pairwise cosine distances of n unit rows (n × n, Float32). */
export function cosineDistanceMatrix(x: Float32Array, n: number, dim: number): Float32Array {
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const d = 1 - dotRows(x, i, x, j, dim);
      m[i * n + j] = d;
      m[j * n + i] = d;
    }
  }
  return m;
}

/** Mean silhouette given a precomputed distance matrix (cosine distance); singletons count 0. */
export function silhouette(dist: Float32Array, n: number, labels: Int32Array, k: number): number {
  const sums = new Float64Array(k);
  const sizes = new Int32Array(k);
  for (let i = 0; i < n; i++) sizes[labels[i]]++;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const own = labels[i];
    if (sizes[own] <= 1) continue;
    sums.fill(0);
    const row = i * n;
    for (let j = 0; j < n; j++) sums[labels[j]] += dist[row + j];
    const a = sums[own] / (sizes[own] - 1);
    let b = Infinity;
    for (let c = 0; c < k; c++) if (c !== own && sizes[c] > 0) b = Math.min(b, sums[c] / sizes[c]);
    if (Number.isFinite(b)) total += (b - a) / Math.max(a, b);
  }
  return total / n;
}

export interface KChoice {
  k: number;
  criterion: string;
  scores: { k: number; silhouette: number }[];
}

/** Candidate k values: a roughly geometric grid from 2 up to n/5 (clusters of ≥5 cases on average). */
export function kGrid(n: number, maxK = 200): number[] {
  const hi = Math.max(2, Math.min(maxK, Math.floor(n / 5)));
  const ks = new Set<number>();
  for (let k = 2; k <= hi; k = Math.max(k + 1, Math.round(k * 1.4))) ks.add(k);
  ks.add(hi);
  return [...ks].sort((a, b) => a - b);
}

export const CHOOSE_K_SAMPLE = 1500;

/** Cases that `chooseK` scores: a seeded sample of at most `sample` row indices, ascending. */
export function chooseKSample(n: number, seed: number, sample = CHOOSE_K_SAMPLE): Int32Array {
  return sampleIndices(n, Math.min(n, sample), seed);
}

/**
 * Choose k by the mean cosine silhouette of k-means (best of 2 restarts) on a seeded sample (≤ 1500 cases).
 * The largest silhouette wins; ties within 0.005 go to the smaller k.
 */
export function chooseK(x: Float32Array, n: number, dim: number, seed: number, sample = CHOOSE_K_SAMPLE, maxK = 150): KChoice {
  const idx = chooseKSample(n, seed, sample);
  return chooseKOnSample(gatherRows(x, dim, idx), idx.length, dim, seed, maxK);
}

/** `chooseK` on rows already sampled (sx: sn × dim): what a fit runs in worker threads while it embeds the rest. */
export function chooseKOnSample(sx: Float32Array, sn: number, dim: number, seed: number, maxK = 150): KChoice {
  return pickK(silhouettesOnSample(sx, sn, dim, seed, kGrid(sn, maxK)), sn);
}

/** Mean silhouette of the clustering at each k of `ks` (one part of the grid; each k independent of the others). */
export function silhouettesOnSample(sx: Float32Array, sn: number, dim: number, seed: number, ks: readonly number[]): { k: number; silhouette: number }[] {
  const dist = cosineDistanceMatrix(sx, sn, dim);
  return ks.map((k) => {
    const res = clusterEmbeddings(sx, sn, dim, k, { seed, restarts: 2, maxIterations: 15, restartSample: sn });
    return { k, silhouette: silhouette(dist, sn, res.labels, k) };
  });
}

/** The largest silhouette wins; ties within 0.005 go to the smaller k (scores in any order). */
export function pickK(parts: readonly { k: number; silhouette: number }[], sn: number): KChoice {
  const scores = [...parts].sort((a, b) => a.k - b.k);
  let best = scores[0];
  for (const s of scores) if (s.silhouette > best.silhouette + 0.005) best = s;
  return {
    k: best.k,
    criterion: `max mean cosine silhouette (within 0.005: the smaller k) over k in [${scores[0].k}, ${scores[scores.length - 1].k}] on a seeded sample of ${sn} cases`,
    scores,
  };
}
