/**
 * Spherical k-means on unit vectors: a seeded k-means++ initialisation, Lloyd iterations by
 * ml-kmeans, several restarts (best inertia wins), centroids re-normalised to the unit sphere.
 * `chooseK` picks k by mean silhouette (cosine distance) on a seeded sample over a grid of k.
 */
import { kmeans } from 'ml-kmeans';
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

function toRows(x: Float32Array, n: number, dim: number): number[][] {
  const rows = new Array<number[]>(n);
  for (let i = 0; i < n; i++) rows[i] = Array.from(x.subarray(i * dim, i * dim + dim));
  return rows;
}

function fromRows(rows: number[][], dim: number): Float32Array {
  const out = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => out.set(r, i * dim));
  return out;
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

function lloyd(
  x: Float32Array,
  n: number,
  dim: number,
  init: Float32Array,
  k: number,
  maxIterations: number,
): ClusterResult {
  const res = kmeans(toRows(x, n, dim), k, {
    initialization: toRows(init, k, dim),
    maxIterations,
    tolerance: 1e-4,
  });
  const centroids = normalizeRows(fromRows(res.centroids, dim), dim);
  const { labels, inertia } = nearestCentroids(x, n, dim, centroids, k);
  return { k, centroids, labels, inertia, iterations: res.iterations };
}

export function clusterEmbeddings(
  x: Float32Array,
  n: number,
  dim: number,
  k: number,
  opts: KMeansOptions = DEFAULT_KMEANS,
): ClusterResult {
  if (k < 1 || k > n) throw new Error(`cannot make ${k} clusters from ${n} points`);
  const sampled = n > opts.restartSample;
  const sIdx = sampled ? sampleIndices(n, opts.restartSample, opts.seed) : null;
  const sx = sIdx ? gatherRows(x, dim, sIdx) : x;
  const sn = sIdx ? sIdx.length : n;
  let best: ClusterResult | null = null;
  for (let r = 0; r < Math.max(1, opts.restarts); r++) {
    const init = kmeansPlusPlus(sx, sn, dim, k, opts.seed + 7919 * r);
    const res = lloyd(sx, sn, dim, init, k, sampled ? 15 : opts.maxIterations);
    if (!best || res.inertia < best.inertia) best = res;
  }
  if (!best) throw new Error('k-means produced no result');
  // refine the best restart on all points; it starts close to a fixed point, so few iterations do
  return sampled ? lloyd(x, n, dim, best.centroids, k, Math.min(opts.maxIterations, 15)) : best;
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

/** `chooseK` on rows already sampled (sx: sn × dim): what a fit runs in a worker thread while it embeds the rest. */
export function chooseKOnSample(sx: Float32Array, sn: number, dim: number, seed: number, maxK = 150): KChoice {
  const dist = cosineDistanceMatrix(sx, sn, dim);
  const scores: { k: number; silhouette: number }[] = [];
  for (const k of kGrid(sn, maxK)) {
    const res = clusterEmbeddings(sx, sn, dim, k, { seed, restarts: 2, maxIterations: 15, restartSample: sn });
    scores.push({ k, silhouette: silhouette(dist, sn, res.labels, k) });
  }
  let best = scores[0];
  for (const s of scores) if (s.silhouette > best.silhouette + 0.005) best = s;
  return {
    k: best.k,
    criterion: `max mean cosine silhouette over k in [${scores[0].k}, ${scores[scores.length - 1].k}] on a seeded sample of ${sn} cases`,
    scores,
  };
}
