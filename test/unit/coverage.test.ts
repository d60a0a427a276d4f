import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { kmeans } from 'ml-kmeans';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chooseK,
  clusterEmbeddings,
  lloyd,
  cosineDistanceMatrix,
  kGrid,
  kmeansPlusPlus,
  nearestCentroids,
  silhouette,
} from '../../src/coverage/cluster.js';
import { bestRestartInWorkers } from '../../src/coverage/kmeans-thread.js';
import type { EvalCase } from '../../src/coverage/evalset.js';
import {
  DEFAULT_FIT,
  FitError,
  MIN_CASES,
  buildCoverageModel,
  dedupeCases,
  defaultNprobe,
  evalSetHash,
  fitCoverageModel,
  type EmbeddingInfo,
  type FitOptions,
} from '../../src/coverage/fit.js';
import { conformalThreshold, mixtureThreshold, nearestRow, phrasingFamilies, tagCentroids } from '../../src/coverage/calibrate.js';
import { CoverageIndex } from '../../src/coverage/index.js';
import { BANDS, bandOf } from '../../src/coverage/bands.js';
import { contextFromManifest } from '../../src/alert/runner.js';
import { adjustedRandIndex } from '../../src/coverage/metrics.js';
import {
  CoverageAssigner,
  MODEL_FORMAT,
  MODEL_FORMAT_VERSION,
  ModelLoadError,
  loadCoverageModel,
  saveCoverageModel,
} from '../../src/coverage/model.js';
import { dotAt, dotRows, gatherRows, normalizeRows, quantile, rng, sampleIndices } from '../../src/coverage/vec.js';

// ---------------------------------------------------------------- synthetic data

function gaussian(r: () => number): () => number {
  return () => {
    const u = Math.max(r(), 1e-12);
    const v = r();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** `k` mutually orthogonal unit directions in `dim` (Gram-Schmidt on seeded Gaussians). */
function orthoCenters(k: number, dim: number, seed: number): Float32Array {
  const g = gaussian(rng(seed));
  const c = new Float64Array(k * dim);
  for (let i = 0; i < k; i++) {
    for (let d = 0; d < dim; d++) c[i * dim + d] = g();
    for (let j = 0; j < i; j++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += c[i * dim + d] * c[j * dim + d];
      for (let d = 0; d < dim; d++) c[i * dim + d] -= dot * c[j * dim + d];
    }
    let n = 0;
    for (let d = 0; d < dim; d++) n += c[i * dim + d] ** 2;
    n = Math.sqrt(n);
    for (let d = 0; d < dim; d++) c[i * dim + d] /= n;
  }
  return Float32Array.from(c);
}

/** `perBlob` unit vectors around each of the given centres (isotropic noise, then normalised). */
function sampleBlobs(
  centers: Float32Array,
  dim: number,
  perBlob: number,
  sigma: number,
  seed: number,
): { x: Float32Array; labels: Int32Array; n: number } {
  const k = centers.length / dim;
  const g = gaussian(rng(seed));
  const n = k * perBlob;
  const x = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  // interleave blobs so that row order carries no cluster information
  for (let i = 0; i < n; i++) {
    const c = i % k;
    labels[i] = c;
    for (let d = 0; d < dim; d++) x[i * dim + d] = centers[c * dim + d] + sigma * g();
  }
  normalizeRows(x, dim);
  return { x, labels, n };
}

const TOPICS = ['refund', 'password', 'shipping', 'invoice', 'upgrade', 'delivery', 'warranty', 'discount'];

function casesFor(labels: Int32Array): EvalCase[] {
  return Array.from(labels, (l, i) => ({ id: `c${i}`, text: `${TOPICS[l]} question${i}`, tags: [TOPICS[l]] }));
}

const EMB: EmbeddingInfo = { model: 'fake-embedder', checksum: 'a'.repeat(64), precision: 'int8', dim: 24, maxTokens: 128 };

function fitOpts(over: Partial<FitOptions> = {}): FitOptions {
  return { ...DEFAULT_FIT, source: 'synthetic.jsonl', textField: 'query', ...over };
}

function bruteForceCoverage(q: Float32Array, qi: number, e: Float32Array, n: number, dim: number, m: number, exclude = -1): number {
  const sims: number[] = [];
  for (let j = 0; j < n; j++) if (j !== exclude) sims.push(dotRows(q, qi, e, j, dim));
  sims.sort((a, b) => b - a);
  const top = sims.slice(0, m);
  return top.reduce((a, b) => a + b, 0) / top.length;
}

function naiveDot(a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, dim: number): number {
  let s = 0;
  for (let d = 0; d < dim; d++) s += a[ao + d] * b[bo + d];
  return s;
}

// ---------------------------------------------------------------- vec

describe('vec helpers', () => {
  it('dotAt matches a naive dot product for every remainder of the 4-way unroll', () => {
    const r = rng(1);
    for (let dim = 1; dim <= 11; dim++) {
      const a = Float32Array.from({ length: dim * 3 }, () => r() - 0.5);
      const b = Float32Array.from({ length: dim * 2 }, () => r() - 0.5);
      expect(dotAt(a, dim, b, dim, dim)).toBeCloseTo(naiveDot(a, dim, b, dim, dim), 6);
      expect(dotRows(a, 2, b, 0, dim)).toBeCloseTo(naiveDot(a, 2 * dim, b, 0, dim), 6);
    }
  });

  it('normalizeRows makes rows unit length and leaves a zero row at zero', () => {
    const m = Float32Array.from([3, 4, 0, 0, 0, 0, 1, 1, 1]);
    normalizeRows(m, 3);
    expect(Array.from(m.subarray(0, 3))).toEqual([0.6000000238418579, 0.800000011920929, 0]);
    expect(Array.from(m.subarray(3, 6))).toEqual([0, 0, 0]);
    expect(naiveDot(m, 6, m, 6, 3)).toBeCloseTo(1, 6);
  });

  it('rng is deterministic per seed and uniform on [0, 1)', () => {
    const a = rng(42);
    const b = rng(42);
    const c = rng(43);
    const xa = Array.from({ length: 1000 }, () => a());
    const xb = Array.from({ length: 1000 }, () => b());
    const xc = Array.from({ length: 1000 }, () => c());
    expect(xa).toEqual(xb);
    expect(xa).not.toEqual(xc);
    expect(Math.min(...xa)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xa)).toBeLessThan(1);
    const mean = xa.reduce((s, v) => s + v, 0) / xa.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
  });

  it('sampleIndices returns m distinct sorted indices, deterministic per seed', () => {
    const s = sampleIndices(100, 20, 7);
    expect(s.length).toBe(20);
    expect(new Set(s).size).toBe(20);
    expect(Array.from(s)).toEqual([...s].sort((a, b) => a - b));
    expect(Math.max(...s)).toBeLessThan(100);
    expect(Array.from(sampleIndices(100, 20, 7))).toEqual(Array.from(s));
    expect(Array.from(sampleIndices(100, 20, 8))).not.toEqual(Array.from(s));
    expect(Array.from(sampleIndices(5, 10, 1))).toEqual([0, 1, 2, 3, 4]);
    // numeric, not lexicographic, order
    const big = sampleIndices(1000, 50, 3);
    for (let i = 1; i < big.length; i++) expect(big[i]).toBeGreaterThan(big[i - 1]);
  });

  it('gatherRows copies the requested rows in order', () => {
    const m = Float32Array.from([0, 1, 10, 11, 20, 21]);
    expect(Array.from(gatherRows(m, 2, [2, 0, 2]))).toEqual([20, 21, 0, 1, 20, 21]);
  });

  it('quantile interpolates linearly between order statistics', () => {
    const s = [1, 2, 3, 4, 5];
    expect(quantile(s, 0)).toBe(1);
    expect(quantile(s, 1)).toBe(5);
    expect(quantile(s, 0.5)).toBe(3);
    expect(quantile(s, 0.1)).toBeCloseTo(1.4, 12);
    expect(quantile([10, 20], 0.25)).toBeCloseTo(12.5, 12);
    expect(quantile([7], 0.3)).toBe(7);
    expect(quantile([], 0.5)).toBeNaN();
  });
});

// ---------------------------------------------------------------- clustering

describe('clustering', () => {
  const dim = 24;
  const K = 5;
  const centers = orthoCenters(K, dim, 100);
  const { x, labels: truth, n } = sampleBlobs(centers, dim, 40, 0.08, 101);

  it('kmeansPlusPlus is deterministic per seed and picks data rows', () => {
    const a = kmeansPlusPlus(x, n, dim, K, 9);
    expect(Array.from(kmeansPlusPlus(x, n, dim, K, 9))).toEqual(Array.from(a));
    expect(Array.from(kmeansPlusPlus(x, n, dim, K, 10))).not.toEqual(Array.from(a));
    for (let c = 0; c < K; c++) {
      let found = false;
      for (let i = 0; i < n && !found; i++) found = naiveDot(a, c * dim, x, i * dim, dim) > 0.99999;
      expect(found).toBe(true);
    }
  });

  it('is deterministic for a seed: identical centroids and labels on two runs', () => {
    const a = clusterEmbeddings(x, n, dim, K);
    const b = clusterEmbeddings(x, n, dim, K);
    expect(Array.from(b.centroids)).toEqual(Array.from(a.centroids));
    expect(Array.from(b.labels)).toEqual(Array.from(a.labels));
    expect(b.inertia).toBe(a.inertia);
  });

  it('recovers well-separated blobs (ARI = 1) with unit centroids near the true centres', () => {
    const res = clusterEmbeddings(x, n, dim, K);
    expect(res.k).toBe(K);
    expect(adjustedRandIndex(res.labels, truth)).toBeCloseTo(1, 10);
    for (let c = 0; c < K; c++) {
      expect(naiveDot(res.centroids, c * dim, res.centroids, c * dim, dim)).toBeCloseTo(1, 5);
      let best = -1;
      for (let t = 0; t < K; t++) best = Math.max(best, naiveDot(res.centroids, c * dim, centers, t * dim, dim));
      expect(best).toBeGreaterThan(0.98);
    }
    // inertia is the sum of (1 - cosine to own centroid)
    const nc = nearestCentroids(x, n, dim, res.centroids, K);
    expect(Array.from(nc.labels)).toEqual(Array.from(res.labels));
    expect(res.inertia).toBeCloseTo(nc.inertia, 6);
    let manual = 0;
    for (let i = 0; i < n; i++) manual += 1 - naiveDot(x, i * dim, res.centroids, res.labels[i] * dim, dim);
    expect(res.inertia).toBeCloseTo(manual, 4);
  });

  it('recovers the blobs through the sampled-restart path too', () => {
    const res = clusterEmbeddings(x, n, dim, K, { seed: 5, restarts: 3, maxIterations: 60, restartSample: 60 });
    expect(adjustedRandIndex(res.labels, truth)).toBeCloseTo(1, 10);
    const again = clusterEmbeddings(x, n, dim, K, { seed: 5, restarts: 3, maxIterations: 60, restartSample: 60 });
    expect(Array.from(again.centroids)).toEqual(Array.from(res.centroids));
  });

  it("Lloyd's iterations (typed arrays, Hamerly's bounds) give ml-kmeans 7's clustering on overlapping data", () => {
    // overlapping blobs (noise 0.6), so points change cluster for several iterations
    const o = sampleBlobs(orthoCenters(12, 32, 7), 32, 50, 0.6, 8);
    for (const seed of [1, 2, 3]) {
      const init = kmeansPlusPlus(o.x, o.n, 32, 12, seed);
      const rows = (m: Float32Array, count: number) => Array.from({ length: count }, (_, i) => Array.from(m.subarray(i * 32, i * 32 + 32)));
      const ref = kmeans(rows(o.x, o.n), 12, { initialization: rows(init, 12), maxIterations: 30, tolerance: 1e-4 });
      const ours = lloyd(o.x, o.n, 32, init, 12, 30);
      expect(ours.iterations).toBe(ref.iterations);
      expect(ours.iterations).toBeGreaterThan(2);
      const refCentroids = normalizeRows(Float32Array.from(ref.centroids.flat()), 32);
      for (let i = 0; i < refCentroids.length; i++) expect(ours.centroids[i]).toBeCloseTo(refCentroids[i], 5);
      expect(Array.from(ours.labels)).toEqual(Array.from(nearestCentroids(o.x, o.n, 32, refCentroids, 12).labels));
    }
  });

  it('refuses impossible k', () => {
    expect(() => clusterEmbeddings(x, n, dim, 0)).toThrow('cannot make 0 clusters from 200 points');
    expect(() => clusterEmbeddings(x, 3, dim, 4)).toThrow('cannot make 4 clusters from 3 points');
  });

  it('cosineDistanceMatrix is symmetric with a zero diagonal', () => {
    const m = 6;
    const d = cosineDistanceMatrix(x, m, dim);
    for (let i = 0; i < m; i++) {
      expect(d[i * m + i]).toBe(0);
      for (let j = 0; j < m; j++) {
        expect(d[i * m + j]).toBe(d[j * m + i]);
        if (i !== j) expect(d[i * m + j]).toBeCloseTo(1 - naiveDot(x, i * dim, x, j * dim, dim), 5);
      }
    }
  });

  it('silhouette matches a hand-computed case', () => {
    // points on a line at 0, 1, 5, 6 with |a-b| distances; clusters {0,1} and {5,6}
    const pos = [0, 1, 5, 6];
    const dist = new Float32Array(16);
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) dist[i * 4 + j] = Math.abs(pos[i] - pos[j]);
    // s(0) = (5.5-1)/5.5, s(1) = (4.5-1)/4.5, symmetric for the other two
    const expected = ((4.5 / 5.5 + 3.5 / 4.5) * 2) / 4;
    expect(silhouette(dist, 4, Int32Array.from([0, 0, 1, 1]), 2)).toBeCloseTo(expected, 6);
    // a singleton contributes 0 but still counts in the mean
    const s1 = silhouette(dist, 4, Int32Array.from([0, 0, 0, 1]), 2);
    const a0 = (1 + 5) / 2;
    const a1 = (1 + 4) / 2;
    const a2 = (5 + 4) / 2;
    const exp1 = ((6 - a0) / 6 + (5 - a1) / 5 + (1 - a2) / a2) / 4;
    expect(s1).toBeCloseTo(exp1, 6);
  });

  it('kGrid is a geometric grid from 2 to n/5', () => {
    expect(kGrid(100)).toEqual([2, 3, 4, 6, 8, 11, 15, 20]);
    expect(kGrid(10)).toEqual([2]);
    expect(kGrid(3)).toEqual([2]);
    expect(kGrid(10_000, 50)).toEqual([2, 3, 4, 6, 8, 11, 15, 21, 29, 41, 50]);
  });

  it('chooseK picks the true k on clear blobs', () => {
    // k on the grid for n = 30k: 2, 3, 4, 6, 8, …
    for (const k of [3, 6, 8]) {
      const b = sampleBlobs(orthoCenters(k, dim, 200), dim, 30, 0.08, 201);
      const choice = chooseK(b.x, b.n, dim, 42);
      expect(choice.k).toBe(k);
      expect(choice.scores.map((s) => s.k)).toEqual(kGrid(b.n, 150));
      const best = choice.scores.find((s) => s.k === k)!.silhouette;
      expect(best).toBeGreaterThan(0.7);
      for (const s of choice.scores) expect(s.silhouette).toBeLessThanOrEqual(best + 0.005);
      expect(choice.criterion).toContain(`on a seeded sample of ${b.n} cases`);
      expect(chooseK(b.x, b.n, dim, 42)).toEqual(choice);
    }
  });

  it('chooseK respects maxK and the sample size', () => {
    const b = sampleBlobs(orthoCenters(3, dim, 210), dim, 30, 0.08, 211);
    const choice = chooseK(b.x, b.n, dim, 42, 50, 4);
    expect(choice.scores.map((s) => s.k)).toEqual([2, 3, 4]);
    expect(choice.criterion).toBe('max mean cosine silhouette (within 0.005: the smaller k) over k in [2, 4] on a seeded sample of 50 cases');
    expect(choice.k).toBe(3);
  });

  // Suspected weakness: chooseK runs ONE k-means restart per candidate k, so an unlucky k-means++
  // seeding (two seeds in one blob) gives the true k a low silhouette and another k wins, even on
  // orthogonal, well-separated blobs. With the default seed 42 these pick 8 and 3.
  it('chooseK picks k = 6 on 6 orthogonal blobs (n = 240, seed 42)', () => {
    const b = sampleBlobs(orthoCenters(6, dim, 200), dim, 40, 0.08, 201);
    expect(chooseK(b.x, b.n, dim, 42).k).toBe(6);
  });

  it('chooseK picks k = 4 on 4 orthogonal blobs (n = 120, seed 42)', () => {
    const b = sampleBlobs(orthoCenters(4, dim, 500), dim, 30, 0.08, 501);
    expect(chooseK(b.x, b.n, dim, 42).k).toBe(4);
  });
});

// ---------------------------------------------------------------- index

describe('k-means restarts in worker threads', () => {
  it('pick the restart the single-threaded loop picks: the same clusters, sampled or not', async () => {
    // overlapping blobs, so that restarts end in different local optima
    const dim = 16;
    const b = sampleBlobs(orthoCenters(12, dim, 5), dim, 60, 0.45, 6);
    for (const restartSample of [300, 5000]) {
      const opts = { seed: 11, restarts: 5, maxIterations: 60, restartSample };
      const one = clusterEmbeddings(b.x, b.n, dim, 12, opts);
      for (const threads of [1, 2, 3]) {
        const best = await bestRestartInWorkers(b.x, b.n, dim, 12, opts, threads);
        const two = clusterEmbeddings(b.x, b.n, dim, 12, opts, best);
        expect(two.inertia).toBe(one.inertia);
        expect(Array.from(two.labels)).toEqual(Array.from(one.labels));
        expect(Array.from(two.centroids)).toEqual(Array.from(one.centroids));
      }
    }
    // the restarts do differ here, so picking the wrong one would show
    const inertias = [0, 1, 2, 3, 4].map((r) => lloyd(b.x, b.n, dim, kmeansPlusPlus(b.x, b.n, dim, 12, 11 + 7919 * r), 12, 60).inertia);
    expect(new Set(inertias).size).toBeGreaterThan(1);
  });
});

describe('CoverageIndex', () => {
  const dim = 24;
  const K = 6;
  const centers = orthoCenters(K, dim, 300);
  const fit = sampleBlobs(centers, dim, 30, 0.1, 301);
  const cl = clusterEmbeddings(fit.x, fit.n, dim, K);
  // queries: some from the blobs, some random directions
  const qIn = sampleBlobs(centers, dim, 5, 0.12, 302);
  const g = gaussian(rng(303));
  const qRand = normalizeRows(Float32Array.from({ length: 20 * dim }, () => g()), dim);
  const queries = new Float32Array((qIn.n + 20) * dim);
  queries.set(qIn.x);
  queries.set(qRand, qIn.x.length);
  const nq = qIn.n + 20;

  it('with nprobe = k scores exactly the brute-force mean of the top-m cosines', () => {
    for (const m of [1, 3, 5]) {
      const index = new CoverageIndex(cl.centroids, K, fit.x, cl.labels, dim, { neighbours: m, nprobe: K });
      for (let i = 0; i < nq; i++) {
        expect(index.score(queries, i)).toBeCloseTo(bruteForceCoverage(queries, i, fit.x, fit.n, dim, m), 5);
      }
    }
  });

  it('with fewer probes never finds better neighbours than brute force, and equals it for in-blob queries', () => {
    const index = new CoverageIndex(cl.centroids, K, fit.x, cl.labels, dim, { neighbours: 5, nprobe: 2 });
    for (let i = 0; i < nq; i++) {
      const bf = bruteForceCoverage(queries, i, fit.x, fit.n, dim, 5);
      const s = index.score(queries, i);
      expect(s).toBeLessThanOrEqual(bf + 1e-6);
      if (i < qIn.n) expect(s).toBeCloseTo(bf, 5);
    }
  });

  it('leave-one-out excludes the row itself', () => {
    const index = new CoverageIndex(cl.centroids, K, fit.x, cl.labels, dim, { neighbours: 3, nprobe: K });
    const loo = index.leaveOneOutScores(fit.x);
    expect(loo.length).toBe(fit.n);
    for (let i = 0; i < fit.n; i++) {
      expect(loo[i]).toBeCloseTo(bruteForceCoverage(fit.x, i, fit.x, fit.n, dim, 3, i), 5);
      expect(loo[i]).toBeLessThan(0.999); // with itself included the top-1 would be 1
    }
    // without exclusion, neighbours = 1 scores a fit row at exactly its self-similarity
    const one = new CoverageIndex(cl.centroids, K, fit.x, cl.labels, dim, { neighbours: 1, nprobe: K });
    expect(one.score(fit.x, 0)).toBeCloseTo(1, 5);
    expect(one.score(fit.x, 0, 0)).toBeLessThan(0.999);
  });

  it('assign reports the nearest centroid, its cosine, the score and the threshold decision', () => {
    const index = new CoverageIndex(cl.centroids, K, fit.x, cl.labels, dim, { neighbours: 5, nprobe: K });
    const threshold = 0.6;
    const r = index.assign(queries, nq, threshold);
    for (let i = 0; i < nq; i++) {
      const bySim = Array.from({ length: K }, (_, c) => [c, naiveDot(queries, i * dim, cl.centroids, c * dim, dim)] as const).sort(
        (a, b) => b[1] - a[1],
      );
      expect(r.cluster[i]).toBe(bySim[0][0]);
      expect(r.similarity[i]).toBeCloseTo(bySim[0][1], 5);
      expect(r.runnerUp[i]).toBe(bySim[1][0]);
      expect(r.runnerUpSimilarity[i]).toBeCloseTo(bySim[1][1], 5);
      expect(r.coverage[i]).toBeCloseTo(bruteForceCoverage(queries, i, fit.x, fit.n, dim, 5), 5);
      expect(r.covered[i]).toBe(r.coverage[i] >= threshold ? 1 : 0);
    }
    // in-blob queries are covered and land in the cluster of their blob; random directions are not covered
    for (let i = 0; i < qIn.n; i++) expect(r.covered[i]).toBe(1);
    for (let i = qIn.n; i < nq; i++) expect(r.covered[i]).toBe(0);
    const blobToCluster = new Map<number, number>();
    for (let i = 0; i < fit.n; i++) blobToCluster.set(fit.labels[i], cl.labels[i]);
    for (let i = 0; i < qIn.n; i++) expect(r.cluster[i]).toBe(blobToCluster.get(qIn.labels[i]));
  });

  it('assign reuses a given output buffer', () => {
    const index = new CoverageIndex(cl.centroids, K, fit.x, cl.labels, dim, { neighbours: 5, nprobe: K });
    const out = {
      cluster: new Int32Array(nq),
      similarity: new Float32Array(nq),
      runnerUp: new Int32Array(nq),
      runnerUpSimilarity: new Float32Array(nq),
      coverage: new Float32Array(nq),
      covered: new Uint8Array(nq),
    };
    const r = index.assign(queries, nq, 0.5, out);
    expect(r).toBe(out);
    expect(Array.from(out.coverage)).toEqual(Array.from(index.assign(queries, nq, 0.5).coverage));
  });

  it('averages over what it finds when a cluster holds fewer than m cases, and scores 0 when none', () => {
    const e = normalizeRows(Float32Array.from([1, 0, 0.9, 0.1]), 2);
    const c = Float32Array.from([1, 0]);
    const index = new CoverageIndex(c, 1, e, Int32Array.from([0, 0]), 2, { neighbours: 5, nprobe: 1 });
    const q = Float32Array.from([1, 0]);
    expect(index.score(q, 0)).toBeCloseTo((1 + e[2]) / 2, 6);
    // one cluster: no runner-up
    const r1 = index.assign(q, 1, 0.5);
    expect(r1.cluster[0]).toBe(0);
    expect(r1.runnerUp[0]).toBe(-1);
    expect(r1.runnerUpSimilarity[0]).toBe(-1);
    const single = new CoverageIndex(c, 1, Float32Array.from([1, 0]), Int32Array.from([0]), 2, { neighbours: 3, nprobe: 1 });
    expect(Array.from(single.leaveOneOutScores(Float32Array.from([1, 0])))).toEqual([0]);
  });
});

// ---------------------------------------------------------------- fit

describe('buildCoverageModel', () => {
  const dim = EMB.dim;
  const K = 6;
  const centers = orthoCenters(K + 1, dim, 400); // the last direction is kept away from the eval set
  const evalCenters = centers.slice(0, K * dim);
  const farCenter = centers.slice(K * dim);
  const fit = sampleBlobs(evalCenters, dim, 50, 0.1, 401);
  const cases = casesFor(fit.labels);
  const target = 0.1;
  const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), fit.x, EMB, fitOpts({ k: K, targetRate: target, regions: 'clusters', minClusterCases: 30 }), new Date('2024-05-06T00:00:00Z'));
  const m = built.draft;

  it('records the parameters, the embedding and the eval set', () => {
    expect(m.format).toBe(MODEL_FORMAT);
    expect(m.formatVersion).toBe(MODEL_FORMAT_VERSION);
    expect(m.version).toMatch(/^cm-[0-9a-f]{12}$/);
    expect(m.createdAt).toBe('2024-05-06T00:00:00.000Z');
    expect(m.embedding).toEqual(EMB);
    expect(m.evalSet).toEqual({ source: 'synthetic.jsonl', sha256: evalSetHash(cases), cases: 300, uniqueCases: 300, textField: 'query' });
    expect(m.params).toMatchObject({ k: K, kMode: 'fixed', kCriterion: 'given with --k', kScores: [], seed: 42, restarts: 5, neighbours: 5, nprobe: K });
    expect(built.kChoice).toBeNull();
    expect(built.arrays.embeddings).toBe(fit.x);
    expect(built.arrays.cases).toEqual(cases.map((c) => ({ id: c.id, text: c.text, tags: c.tags })));
    expect(built.arrays.centroids.length).toBe(K * dim);
    expect(built.arrays.labels.length).toBe(fit.n);
  });

  it('recovers the blobs and labels clusters by their topic words', () => {
    expect(adjustedRandIndex(built.arrays.labels, fit.labels)).toBeCloseTo(1, 10);
    expect(m.clusters.map((c) => c.id)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(m.clusters.reduce((s, c) => s + c.size, 0)).toBe(fit.n);
    expect(m.clusters.reduce((s, c) => s + c.share, 0)).toBeCloseTo(1, 10);
    for (const c of m.clusters) {
      expect(c.size).toBe(50);
      expect(c.examples.length).toBe(3);
      const topic = c.examples[0].split(' ')[0];
      for (const ex of c.examples) expect(ex.startsWith(topic + ' ')).toBe(true);
      expect(c.terms[0]).toBe(topic);
      expect(c.label.split(' / ')[0]).toBe(topic);
      expect(c.medianSimilarity).toBeGreaterThan(0.8);
      expect(c.medianSimilarity).toBeLessThanOrEqual(1);
    }
  });

  it('is deterministic: same inputs, same version and arrays', () => {
    const again = buildCoverageModel(cases, cases.length, evalSetHash(cases), fit.x, EMB, fitOpts({ k: K, targetRate: target, regions: 'clusters', minClusterCases: 30 }), new Date('2024-05-06T00:00:00Z'));
    expect(again.draft).toEqual(m);
    expect(Array.from(again.arrays.centroids)).toEqual(Array.from(built.arrays.centroids));
    const other = buildCoverageModel(cases, cases.length, evalSetHash(cases), fit.x, EMB, fitOpts({ k: K, targetRate: 0.05 }));
    expect(other.draft.version).not.toBe(m.version);
  });

  it('calibrates per cluster: each threshold puts the target on the mixture of its cases\' seen and new-phrasing scores; with no share of new phrasings, the conformal order statistic', () => {
    const c = m.calibration;
    expect(c.targetFalseUncoveredRate).toBe(target);
    expect(c.nearDuplicateCosine).toBe(DEFAULT_FIT.nearDuplicateCosine);
    // recompute with the same scorer: near-duplicates left out; and each case's phrasing family left out
    const index = new CoverageIndex(built.arrays.centroids, K, fit.x, built.arrays.labels, dim, m.params);
    const cal = index.calibrationScores(fit.x, c.nearDuplicateCosine);
    const { family } = phrasingFamilies(fit.x, fit.n, dim, built.arrays.labels, K, DEFAULT_FIT.seed);
    const fresh = index.groupOutScores(fit.x, family, c.nearDuplicateCosine);
    expect(c.phrasing!.newShare).toBe(0.5);
    for (const cl of m.clusters) {
      const rows = [...Array(fit.n).keys()].filter((i) => built.arrays.labels[i] === cl.id);
      expect(cl.calibrationCases).toBe(50);
      expect(cl.ownThreshold).toBe(true);
      expect(cl.threshold).toBeCloseTo(mixtureThreshold(rows.map((i) => cal[i]), rows.map((i) => fresh[i]), 0.5, target), 12);
      expect(cl.rateSeenPhrasing).toBe(rows.filter((i) => cal[i] < cl.threshold!).length / 50);
      expect(cl.rateNewPhrasing).toBe(rows.filter((i) => fresh[i] < cl.threshold!).length / 50);
      expect(cl.expectedRate).toBeCloseTo((cl.rateSeenPhrasing! + cl.rateNewPhrasing!) / 2, 12);
      expect(cl.expectedRateInterval[0]).toBeLessThanOrEqual(cl.rateSeenPhrasing!);
      expect(cl.expectedRateInterval[1]).toBeGreaterThan(cl.rateNewPhrasing!);
      expect(cl.tags).toEqual([{ tag: TOPICS[fit.labels[built.arrays.labels.indexOf(cl.id)]], count: 50 }]);
    }
    // no share of new phrasings: the Mondrian conformal threshold of the near-duplicate-free scores
    const m0 = buildCoverageModel(cases, cases.length, evalSetHash(cases), fit.x, EMB, fitOpts({ k: K, targetRate: target, regions: 'clusters', minClusterCases: 30, newPhrasingShare: 0 })).draft;
    expect(m0.version).not.toBe(m.version);
    const pos = (50 + 1) * target; // 5.1: between the 5th and 6th smallest
    const l = Math.floor(pos);
    for (const cl of m0.clusters) {
      const own = Array.from(cal)
        .filter((_, i) => built.arrays.labels[i] === cl.id)
        .sort((a, b) => a - b);
      expect(cl.threshold!).toBeCloseTo(own[l - 1] + (pos - l) * (own[l] - own[l - 1]), 12);
      expect(own.filter((s) => s < cl.threshold!).length).toBe(l);
    }
    expect(c.expectedRate).toBeGreaterThan(target - 0.02);
    expect(c.expectedRate).toBeLessThanOrEqual(target + 1e-12);
    // the pooled interval is narrower than one cluster's (6 independent clusters)
    const w = (x: readonly [number, number]) => x[1] - x[0];
    expect(w(c.expectedRateInterval)).toBeLessThan(w(m.clusters[0].expectedRateInterval));
    expect(c.expectedRateInterval[0]).toBeLessThan(c.expectedRate);
    expect(c.expectedRateInterval[1]).toBeGreaterThan(c.expectedRate);
    const sorted = Float32Array.from(cal).sort();
    expect(c.scoreQuantiles.p10).toBeCloseTo(quantile(sorted, 0.1), 6);
    expect(c.scoreQuantiles.p1).toBeLessThanOrEqual(c.scoreQuantiles.p5);
    expect(c.scoreQuantiles.p25).toBeLessThanOrEqual(c.scoreQuantiles.p50);
  });

  it('calibrates per tag when the cases are tagged: a region per tag centroid, used the same way for queries', () => {
    // regions auto: every case is tagged, so the regions are the tags; tags differ from the clusters here
    // (two tags per blob, alternating within it), so the tag thresholds are not the cluster ones
    const twoPerBlob = cases.map((c, i) => ({ ...c, tags: [`${c.tags[0]}-${Math.floor(i / K) % 2}`] }));
    const bt = buildCoverageModel(twoPerBlob, twoPerBlob.length, evalSetHash(twoPerBlob), fit.x, EMB, fitOpts({ k: K, targetRate: target }));
    const c = bt.draft.calibration;
    expect(c.regions).toBe('tags');
    expect(c.tagRegions!.map((t) => t.tag)).toEqual([...new Set(twoPerBlob.map((x) => x.tags[0]))].sort());
    for (const cl of bt.draft.clusters) {
      expect(cl.threshold).toBeNull();
      expect(cl.tags.length).toBe(2);
      expect(cl.calibrationCases).toBe(cl.size);
    }
    // recompute: region = most similar tag centroid; threshold = conformal position in the region's scores
    const index = new CoverageIndex(bt.arrays.centroids, K, fit.x, bt.arrays.labels, dim, bt.draft.params);
    const cal = index.calibrationScores(fit.x, c.nearDuplicateCosine);
    const tc = tagCentroids(twoPerBlob.map((x) => x.tags), fit.x, dim);
    const region = Array.from({ length: fit.n }, (_, i) => nearestRow(fit.x, i, tc.centroids, tc.names.length, dim));
    c.tagRegions!.forEach((t, r) => {
      const own = Array.from(cal).filter((_, i) => region[i] === r).sort((a, b) => a - b);
      expect(t.calibrationCases).toBe(own.length);
      if (t.ownThreshold) expect(t.threshold).toBeCloseTo(conformalThreshold(own, target), 6);
      else expect(t.threshold).toBe(c.threshold);
    });
    const assigner = new CoverageAssigner({ manifest: { ...bt.draft, files: {} as never }, ...bt.arrays });
    const q = sampleBlobs(evalCenters, dim, 40, 0.1, 404);
    const r = assigner.assign(q.x, q.n);
    for (let i = 0; i < q.n; i++) {
      const thr = c.tagRegions![nearestRow(q.x, i, tc.centroids, tc.names.length, dim)].threshold;
      expect(r.covered[i]).toBe(r.coverage[i] >= thr ? 1 : 0);
      expect(assigner.thresholdOf(q.x, i, r.cluster[i])).toBe(Math.fround(thr));
    }
    // and an explicit --regions clusters ignores the tags for calibration
    const bc = buildCoverageModel(twoPerBlob, twoPerBlob.length, evalSetHash(twoPerBlob), fit.x, EMB, fitOpts({ k: K, targetRate: target, regions: 'clusters' }));
    expect(bc.draft.calibration.regions).toBe('clusters');
    expect(bc.draft.calibration.tagRegions).toBeUndefined();
    expect(bc.draft.version).not.toBe(bt.draft.version);
  });

  it('leaves near-duplicates out of calibration: a case with a paraphrase in the set scores as if it had none', () => {
    const index = new CoverageIndex(built.arrays.centroids, K, fit.x, built.arrays.labels, dim, m.params);
    // add an exact copy of row 0 under another id: leave-one-out would score row 0 at ≥ its copy's cosine 1
    const x2 = new Float32Array(fit.x.length + dim);
    x2.set(fit.x);
    x2.set(fit.x.subarray(0, dim), fit.x.length);
    const labels2 = Int32Array.from([...built.arrays.labels, built.arrays.labels[0]]);
    const idx2 = new CoverageIndex(built.arrays.centroids, K, x2, labels2, dim, m.params);
    const loo = idx2.leaveOneOutScores(x2);
    const nd = idx2.calibrationScores(x2, 0.999);
    expect(loo[0]).toBeGreaterThan(index.leaveOneOutScores(fit.x)[0]);
    expect(nd[0]).toBeCloseTo(index.calibrationScores(fit.x, 0.999)[0], 6);
  });

  it('held-out points from the same blobs are uncovered at about the target rate; a far blob is all uncovered', () => {
    const assigner = new CoverageAssigner({ manifest: { ...m, files: {} as never }, ...built.arrays });
    const held = sampleBlobs(evalCenters, dim, 200, 0.1, 402); // 1200 fresh points
    const r = assigner.assign(held.x, held.n);
    const rate = r.covered.reduce((s, v) => s + (v ? 0 : 1), 0) / held.n;
    expect(rate).toBeGreaterThan(target / 3);
    expect(rate).toBeLessThan(target * 2);
    const far = sampleBlobs(farCenter, dim, 100, 0.1, 403);
    const rf = assigner.assign(far.x, far.n);
    expect(Array.from(rf.covered).every((v) => v === 0)).toBe(true);
    expect(Math.max(...rf.coverage)).toBeLessThan(m.calibration.threshold - 0.3);
  });

  it('chooses k automatically on clear blobs', () => {
    const b = sampleBlobs(orthoCenters(4, dim, 500), dim, 25, 0.08, 501);
    const cs = casesFor(b.labels);
    const auto = buildCoverageModel(cs, cs.length, evalSetHash(cs), b.x, EMB, fitOpts({ k: 'auto' }));
    expect(auto.draft.params.k).toBe(4);
    expect(auto.draft.params.kMode).toBe('auto');
    expect(auto.kChoice?.k).toBe(4);
    expect(auto.draft.params.kScores).toEqual(auto.kChoice!.scores);
    expect(auto.draft.params.kCriterion).toMatch(/silhouette/);
    expect(adjustedRandIndex(auto.arrays.labels, b.labels)).toBeCloseTo(1, 10);
  });

  it('clamps neighbours to n - 1 and nprobe to k, and defaults nprobe by k', () => {
    const b = sampleBlobs(orthoCenters(2, dim, 600), dim, 6, 0.1, 601);
    const cs = casesFor(b.labels);
    const r = buildCoverageModel(cs, cs.length, evalSetHash(cs), b.x, EMB, fitOpts({ k: 2, neighbours: 50, nprobe: 9 }));
    expect(r.draft.params.neighbours).toBe(11);
    expect(r.draft.params.nprobe).toBe(2);
    expect(defaultNprobe(1)).toBe(1);
    expect(defaultNprobe(16)).toBe(16);
    expect(defaultNprobe(17)).toBe(4);
    expect(defaultNprobe(100)).toBe(10);
  });

  it('drops clusters k-means leaves empty and renumbers the rest', () => {
    // 12 distinct texts but only 2 distinct vectors: k = 5 cannot fill 5 clusters
    const v = orthoCenters(2, dim, 700);
    const x = new Float32Array(12 * dim);
    for (let i = 0; i < 12; i++) x.set(v.subarray((i % 2) * dim, (i % 2) * dim + dim), i * dim);
    const cs = Array.from({ length: 12 }, (_, i) => ({ id: String(i), text: `text ${i}`, tags: [] }));
    const r = buildCoverageModel(cs, 12, evalSetHash(cs), x, EMB, fitOpts({ k: 5 }));
    expect(r.draft.params.k).toBe(2);
    expect(r.arrays.centroids.length).toBe(2 * dim);
    expect(r.draft.clusters.map((c) => c.size)).toEqual([6, 6]);
    expect(Math.max(...r.arrays.labels)).toBe(1);
    expect(adjustedRandIndex(r.arrays.labels, Array.from({ length: 12 }, (_, i) => i % 2))).toBe(1);
  });

  it('refuses fewer than MIN_CASES distinct cases', () => {
    expect(MIN_CASES).toBe(10);
    const b = sampleBlobs(orthoCenters(1, dim, 800), dim, 9, 0.1, 801);
    const cs = casesFor(b.labels);
    const call = () => buildCoverageModel(cs, 9, evalSetHash(cs), b.x, EMB, fitOpts({ k: 2 }));
    expect(call).toThrow(FitError);
    expect(call).toThrow('the eval set has 9 distinct case(s); at least 10 are needed to cluster it');
  });

  it('refuses k with fewer than 2k cases, and k < 1', () => {
    const b = sampleBlobs(orthoCenters(1, dim, 900), dim, 11, 0.1, 901);
    const cs = casesFor(b.labels);
    const call = (k: number) => () => buildCoverageModel(cs, 11, evalSetHash(cs), b.x, EMB, fitOpts({ k }));
    expect(call(6)).toThrow(FitError);
    expect(call(6)).toThrow('k=6 needs at least 12 distinct eval cases (there are 11); lower --k');
    expect(call(0)).toThrow(FitError);
    expect(call(5)).not.toThrow();
  });
});

describe('fitCoverageModel', () => {
  // A fake embedder that returns fixed vectors by text, whatever order or batches it is asked in.
  const b = sampleBlobs(orthoCenters(5, EMB.dim, 700), EMB.dim, 360, 0.1, 701); // 1800 cases > chooseK's sample
  const cs = casesFor(b.labels);
  const row = new Map(cs.map((c, i) => [c.text, i]));
  const calls: number[] = [];
  const embedder = {
    modelName: EMB.model,
    modelChecksum: EMB.checksum,
    precision: EMB.precision,
    dim: EMB.dim,
    maxTokens: EMB.maxTokens,
    async embed(texts: readonly string[]) {
      calls.push(texts.length);
      const vectors = new Float32Array(texts.length * EMB.dim);
      texts.forEach((t, i) => vectors.set(b.x.subarray(row.get(t)! * EMB.dim, (row.get(t)! + 1) * EMB.dim), i * EMB.dim));
      return { vectors, truncated: new Uint8Array(texts.length) };
    },
  };

  it('with k auto, chooses k in a worker thread and gives the model the pure build gives', async () => {
    const progress: number[] = [];
    const out = await fitCoverageModel(cs, embedder, fitOpts({ k: 'auto' }), (done) => progress.push(done));
    const pure = buildCoverageModel(cs, cs.length, evalSetHash(cs), b.x, EMB, fitOpts({ k: 'auto' }));
    expect(out.kChoice).toEqual(pure.kChoice);
    expect(out.draft.params).toEqual(pure.draft.params);
    expect(out.draft.version).toBe(pure.draft.version);
    expect(out.arrays.embeddings).toEqual(b.x);
    expect(out.arrays.labels).toEqual(pure.arrays.labels);
    expect(out.draft.calibration.threshold).toBe(pure.draft.calibration.threshold);
    expect(out.timings.chooseKInWorkerMs).toBeGreaterThan(0);
    // the sample first (1500 rows in chunks of at most 512), then the other 300
    expect(calls.reduce((a, c) => a + c, 0)).toBe(cs.length);
    expect(calls.every((c) => c <= 512)).toBe(true);
    expect(progress[progress.length - 1]).toBe(cs.length);
    expect(progress).toEqual([...progress].sort((x, y) => x - y));
  });

  it('fails with the embedder\'s error when embedding fails after the sample (the chooseK worker is stopped)', async () => {
    let calls = 0;
    const failing = {
      ...embedder,
      async embed(texts: readonly string[]) {
        if (++calls > 3) throw new Error('embedding model crashed');
        return embedder.embed(texts);
      },
    };
    await expect(fitCoverageModel(cs, failing, fitOpts({ k: 'auto' }))).rejects.toThrow('embedding model crashed');
    expect(calls).toBe(4); // the 1500-case sample in 3 chunks, then the first chunk of the rest
  });

  it('with a fixed k, runs no worker', async () => {
    const out = await fitCoverageModel(cs, embedder, fitOpts({ k: 5 }));
    expect(out.kChoice).toBeNull();
    expect(out.timings.chooseKInWorkerMs).toBeUndefined();
    expect(out.draft.params.k).toBe(5);
  });
});

describe('dedupeCases and evalSetHash', () => {
  it('folds case and whitespace, keeping the first occurrence', () => {
    const cs: EvalCase[] = [
      { id: '1', text: 'Reset my  PIN', tags: [] },
      { id: '2', text: 'reset my pin', tags: [] },
      { id: '3', text: 'RESET\tMY\nPIN ', tags: [] },
      { id: '4', text: 'reset my card', tags: [] },
      { id: '5', text: 'resetmypin', tags: [] },
    ];
    const r = dedupeCases(cs);
    expect(r.duplicates).toBe(2);
    expect(r.unique.map((c) => c.id)).toEqual(['1', '4', '5']);
    expect(r.unique[0]).toEqual(cs[0]);
    expect(dedupeCases([])).toEqual({ unique: [], duplicates: 0 });
  });

  it('keeps the tags of all duplicates on the case it keeps, without changing the input', () => {
    const cs: EvalCase[] = [
      { id: '1', text: 'reset my pin', tags: ['pin'] },
      { id: '2', text: 'Reset my PIN', tags: ['pin', 'security'] },
      { id: '3', text: 'reset  my pin', tags: ['card'] },
    ];
    const r = dedupeCases(cs);
    expect(r.unique).toEqual([{ id: '1', text: 'reset my pin', tags: ['pin', 'security', 'card'] }]);
    expect(cs[0].tags).toEqual(['pin']);
  });

  it('hashes ids and texts in order', () => {
    const a = [
      { id: '1', text: 'x', tags: [] },
      { id: '2', text: 'y', tags: ['t'] },
    ];
    const h = evalSetHash(a);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(evalSetHash(a.map((c) => ({ ...c, tags: [] })))).toBe(h); // tags are not part of the hash
    expect(evalSetHash([a[1], a[0]])).not.toBe(h);
    expect(evalSetHash([{ ...a[0], text: 'x ' }, a[1]])).not.toBe(h);
    // field boundaries are unambiguous
    expect(evalSetHash([{ id: 'a', text: 'bc', tags: [] }])).not.toBe(evalSetHash([{ id: 'ab', text: 'c', tags: [] }]));
  });
});

// ---------------------------------------------------------------- model files

describe('coverage model on disk', () => {
  const dim = EMB.dim;
  const b = sampleBlobs(orthoCenters(3, dim, 1000), dim, 10, 0.1, 1001);
  const cases = casesFor(b.labels);
  cases[0] = { ...cases[0], text: 'line one\nline two "quoted" \u2028 ünïcödé' };
  const built = buildCoverageModel(cases, 31, evalSetHash(cases), b.x, EMB, fitOpts({ k: 3 }));
  let root: string;
  let n = 0;
  const fresh = () => path.join(root, `m${n++}`);
  const save = (dir = fresh()) => {
    saveCoverageModel(dir, built.draft, built.arrays);
    return dir;
  };

  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-unit-'));
  });
  afterAll(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('round-trips the manifest and arrays exactly', () => {
    const dir = fresh();
    const manifest = saveCoverageModel(dir, built.draft, built.arrays);
    expect(fs.readdirSync(dir).sort()).toEqual(['cases.jsonl', 'centroids.f32', 'embeddings.f32', 'labels.i32', 'manifest.json']);
    expect(manifest.files['embeddings.f32'].bytes).toBe(30 * dim * 4);
    expect(manifest.files['labels.i32'].bytes).toBe(30 * 4);
    const loaded = loadCoverageModel(dir);
    expect(loaded.manifest).toEqual(manifest);
    expect(loaded.manifest).toEqual({ ...built.draft, files: manifest.files });
    expect(loaded.centroids).toBeInstanceOf(Float32Array);
    expect(Array.from(loaded.centroids)).toEqual(Array.from(built.arrays.centroids));
    expect(Array.from(loaded.embeddings)).toEqual(Array.from(built.arrays.embeddings));
    expect(loaded.labels).toBeInstanceOf(Int32Array);
    expect(Array.from(loaded.labels)).toEqual(Array.from(built.arrays.labels));
    expect(loaded.cases).toEqual(built.arrays.cases);
    expect(loaded.cases[0].text).toBe('line one\nline two "quoted" \u2028 ünïcödé');
  });

  it('saves typed-array views (non-zero byteOffset) correctly', () => {
    const big = new Float32Array(b.x.length + 5 * dim);
    big.set(b.x, 5 * dim);
    const view = big.subarray(5 * dim);
    const dir = fresh();
    saveCoverageModel(dir, built.draft, { ...built.arrays, embeddings: view });
    expect(Array.from(loadCoverageModel(dir).embeddings)).toEqual(Array.from(b.x));
  });

  it('a loaded model assigns exactly like the in-memory one', () => {
    const loaded = new CoverageAssigner(loadCoverageModel(save()));
    const mem = new CoverageIndex(built.arrays.centroids, 3, b.x, built.arrays.labels, dim, built.draft.params);
    const q = sampleBlobs(orthoCenters(4, dim, 1000), dim, 5, 0.15, 1002); // 3 known blobs + 1 new one
    const r1 = loaded.assign(q.x, q.n);
    const r2 = mem.assign(q.x, q.n, built.draft.calibration.threshold);
    const { band, ...rest } = r1;
    expect(rest).toEqual(r2);
    // every row has a coverage depth band, and the band agrees with the verdict: covered exactly
    // from the threshold's band (5) up
    expect(band).toHaveLength(q.n);
    for (let i = 0; i < q.n; i++) expect(band![i] >= 5 ? 1 : 0).toBe(r1.covered[i]);
    // the new blob falls deep: its queries sit in the lowest bands
    const deep = [...band!].filter((b, i) => q.labels[i] === 3 && b <= 1).length;
    expect(deep).toBeGreaterThan(0.8 * [...q.labels].filter((l) => l === 3).length);
    expect(loaded.version).toBe(built.draft.version);
    expect(loaded.threshold).toBe(built.draft.calibration.threshold);
    for (let i = 0; i < q.n; i++) if (q.labels[i] === 3) expect(r1.covered[i]).toBe(0);
  });

  it('records the deep-band share of new phrasings of tested intents, with an interval, far below the novel profile\'s', () => {
    const bands = built.draft.calibration.bands!;
    const h = bands.heldOut!;
    expect(h.deepBands).toBeGreaterThanOrEqual(1);
    expect(h.deepBands).toBeLessThanOrEqual(4);
    const [lo, hi] = h.deepShareInterval;
    expect(lo).toBeLessThanOrEqual(h.deepShare);
    expect(h.deepShare).toBeLessThanOrEqual(hi);
    // new phrasings (family left out) fall deep at least as often as seen ones
    expect(h.deepShare).toBeGreaterThanOrEqual(h.deepShareSeen);
    expect(h.novelDeepShare).toBeCloseTo(bands.novel.slice(0, h.deepBands).reduce((a, b) => a + b, 0), 9);
    expect(h.novelDeepShare).toBeGreaterThan(hi);
    expect(h.profile.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
  });

  it('records coverage depth bands and a novel-topic profile deeper than the eval set', () => {
    const bands = built.draft.calibration.bands!;
    expect(bands.edges).toHaveLength(BANDS - 1);
    for (let i = 1; i < bands.edges.length; i++) expect(bands.edges[i]).toBeGreaterThanOrEqual(bands.edges[i - 1]);
    expect(bands.edges[4]).toBe(0); // the threshold
    const below = (s: number[]) => s.slice(0, 5).reduce((a, b) => a + b, 0);
    expect(below(bands.inScope)).toBeLessThan(0.15);
    // cases of a region left out of the index fall below the threshold far more often
    expect(below(bands.novel)).toBeGreaterThan(2 * below(bands.inScope));
    expect(bandOf(-1, bands.edges)).toBe(0);
    expect(bandOf(0, bands.edges)).toBe(5);
    expect(bandOf(1, bands.edges)).toBe(BANDS - 1);
  });

  it('refuses a tampered binary file with a checksum error', () => {
    const dir = save();
    const f = path.join(dir, 'embeddings.f32');
    const bytes = fs.readFileSync(f);
    bytes[17] ^= 0x01;
    fs.writeFileSync(f, bytes);
    expect(() => loadCoverageModel(dir)).toThrow(ModelLoadError);
    expect(() => loadCoverageModel(dir)).toThrow(/embeddings\.f32 does not match its checksum/);
  });

  it('refuses a tampered cases file', () => {
    const dir = save();
    fs.appendFileSync(path.join(dir, 'cases.jsonl'), '{"id":"x","text":"injected"}\n');
    expect(() => loadCoverageModel(dir)).toThrow(/cases\.jsonl does not match its checksum/);
  });

  it('refuses a folder without a manifest', () => {
    const dir = save();
    fs.rmSync(path.join(dir, 'manifest.json'));
    expect(() => loadCoverageModel(dir)).toThrow(ModelLoadError);
    expect(() => loadCoverageModel(dir)).toThrow(`no coverage model in ${dir} (missing manifest.json; run evalgap fit)`);
    expect(() => loadCoverageModel(path.join(root, 'does-not-exist'))).toThrow(ModelLoadError);
  });

  it('refuses a missing array file', () => {
    const dir = save();
    fs.rmSync(path.join(dir, 'labels.i32'));
    expect(() => loadCoverageModel(dir)).toThrow(`coverage model ${dir} is missing labels.i32`);
  });

  const editManifest = (dir: string, edit: (m: Record<string, any>) => void) => {
    const f = path.join(dir, 'manifest.json');
    const m = JSON.parse(fs.readFileSync(f, 'utf8'));
    edit(m);
    fs.writeFileSync(f, JSON.stringify(m));
  };

  it('refuses another format version with a clear message', () => {
    const dir = save();
    editManifest(dir, (m) => (m.formatVersion = 1));
    expect(() => loadCoverageModel(dir)).toThrow(ModelLoadError);
    expect(() => loadCoverageModel(dir)).toThrow(`${dir} is coverage-model format 1; this evalgap reads format 2: refit it`);
    editManifest(dir, (m) => (m.formatVersion = 3));
    expect(() => loadCoverageModel(dir)).toThrow(`${dir} is coverage-model format 3; this evalgap reads format 2: refit it`);
  });

  it('refuses a manifest that is not JSON or not a manifest', () => {
    const dir = save();
    fs.writeFileSync(path.join(dir, 'manifest.json'), '{ nope');
    expect(() => loadCoverageModel(dir)).toThrow(/manifest\.json is not valid JSON/);
    const dir2 = save();
    editManifest(dir2, (m) => {
      m.format = 'something-else';
      delete m.calibration;
    });
    expect(() => loadCoverageModel(dir2)).toThrow(ModelLoadError);
    expect(() => loadCoverageModel(dir2)).toThrow(/not a valid coverage model manifest:[\s\S]*format[\s\S]*calibration/);
  });

  it('refuses a manifest whose sizes disagree with the arrays', () => {
    const dir = save();
    editManifest(dir, (m) => (m.evalSet.uniqueCases = 29));
    expect(() => loadCoverageModel(dir)).toThrow(/arrays whose sizes do not match its manifest/);
    const dir2 = save();
    editManifest(dir2, (m) => (m.clusters = m.clusters.slice(0, 2)));
    expect(() => loadCoverageModel(dir2)).toThrow(/lists 2 clusters for k=3/);
  });

  it('refuses a model fitted with another embedding model, and accepts the same one', () => {
    const dir = save();
    const mismatch = () => loadCoverageModel(dir, { expectEmbedding: { model: EMB.model, checksum: 'b'.repeat(64) } });
    expect(mismatch).toThrow(ModelLoadError);
    expect(mismatch).toThrow(/fitted with embedding model fake-embedder \(sha256 aaaaaaaaaaaa…\) but the installed one is fake-embedder \(sha256 bbbbbbbbbbbb…\).*run evalgap fit again/);
    const otherPrecision = () => loadCoverageModel(dir, { expectEmbedding: { model: EMB.model, checksum: 'b'.repeat(64), precision: 'fp32' } });
    expect(otherPrecision).toThrow(/fitted with int8 embeddings, these are fp32: or set EVALGAP_EMBED_PRECISION=int8/);
    expect(loadCoverageModel(dir).manifest.embedding.precision).toBe('int8');
    expect(() => loadCoverageModel(dir, { expectEmbedding: { model: 'other', checksum: EMB.checksum } })).toThrow(/fit/);
    expect(loadCoverageModel(dir, { expectEmbedding: { model: EMB.model, checksum: EMB.checksum } }).manifest.version).toBe(
      built.draft.version,
    );
  });

  it('refuses a model fitted with texts cut at another token length (EVALGAP_EMBED_MAX_TOKENS), and accepts the same one', () => {
    const dir = save();
    const same = { model: EMB.model, checksum: EMB.checksum, precision: 'int8' };
    expect(() => loadCoverageModel(dir, { expectEmbedding: { ...same, maxTokens: 256 } })).toThrow(
      /fitted with texts cut at 128 tokens but this process cuts them at 256.*set EVALGAP_EMBED_MAX_TOKENS=128 or run evalgap fit again/,
    );
    expect(loadCoverageModel(dir, { expectEmbedding: { ...same, maxTokens: 128 } }).manifest.version).toBe(built.draft.version);
  });

  describe('hostile values whose checksums agree', () => {
    /** rewrite an array file and record its new checksum, as a hostile model would */
    const rewrite = (dir: string, name: string, edit: (buf: Buffer) => void) => {
      const f = path.join(dir, name);
      const buf = fs.readFileSync(f);
      edit(buf);
      fs.writeFileSync(f, buf);
      editManifest(dir, (m) => (m.files[name].sha256 = createHash('sha256').update(buf).digest('hex')));
    };
    const f32 = (buf: Buffer) => new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const i32 = (buf: Buffer) => new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const refused = (dir: string, why: RegExp) => {
      expect(() => loadCoverageModel(dir)).toThrow(ModelLoadError);
      expect(() => loadCoverageModel(dir)).toThrow(/holds values no fit produces; refused/);
      expect(() => loadCoverageModel(dir)).toThrow(why);
    };

    it('a sound model passes every value check', () => {
      expect(loadCoverageModel(save()).manifest.version).toBe(built.draft.version);
    });

    it('refuses NaN, infinite, zero and non-unit vectors', () => {
      let dir = save();
      rewrite(dir, 'centroids.f32', (b) => f32(b).fill(NaN, 0, dim));
      refused(dir, /centroids\.f32: 1 of 3 vectors hold NaN or infinite values \(first: row 0\)/);
      dir = save();
      rewrite(dir, 'centroids.f32', (b) => f32(b).fill(0, dim, 2 * dim));
      refused(dir, /centroids\.f32: 1 of 3 vectors are not unit length within 0\.001 \(first: row 1, length 0\.000/);
      dir = save();
      rewrite(dir, 'embeddings.f32', (b) => f32(b)[5 * dim + 3] = Infinity);
      refused(dir, /embeddings\.f32: 1 of 30 vectors hold NaN or infinite values \(first: row 5\)/);
      dir = save();
      rewrite(dir, 'embeddings.f32', (b) => f32(b).forEach((v, i, a) => (a[i] = v * 2)));
      refused(dir, /embeddings\.f32: 30 of 30 vectors are not unit length/);
    });

    it('refuses labels outside the clusters, and labels that disagree with the cluster sizes', () => {
      let dir = save();
      rewrite(dir, 'labels.i32', (b) => {
        i32(b)[4] = 7;
        i32(b)[9] = -1;
      });
      refused(dir, /labels\.i32: 2 of 30 labels are outside 0\.\.2 \(first: row 4 = 7\)/);
      dir = save();
      rewrite(dir, 'labels.i32', (b) => (i32(b)[0] = (i32(b)[0] + 1) % 3));
      refused(dir, /clusters\[\d\]\.size is 10 but (9|11) cases carry its label/);
    });

    it('refuses thresholds and similarities outside the cosine range, and numbers that are not finite', () => {
      let dir = save();
      editManifest(dir, (m) => (m.calibration.threshold = 2));
      refused(dir, /calibration\.threshold 2 is outside \[-1, 1\]/);
      dir = save();
      fs.writeFileSync(path.join(dir, 'manifest.json'), fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8').replace(/"threshold": -?[0-9.e-]+/, '"threshold": -1e999'));
      refused(dir, /manifest: 1 number\(s\) are not finite \(calibration\.(tagRegions\[0\]\.)?threshold\)/);
      dir = save();
      editManifest(dir, (m) => {
        if (m.calibration.tagRegions) m.calibration.tagRegions[1].threshold = -3;
        else m.clusters[1].threshold = -3;
      });
      refused(dir, /(tagRegions|clusters)\[1\]\.threshold -3 is outside \[-1, 1\]/);
      dir = save();
      editManifest(dir, (m) => (m.clusters[2].medianSimilarity = 1.5));
      refused(dir, /clusters\[2\]\.medianSimilarity 1\.5 is outside/);
    });

    it('refuses counts that disagree: ids, sizes, shares, tags, calibration cases, k and nprobe', () => {
      let dir = save();
      editManifest(dir, (m) => {
        [m.clusters[0].id, m.clusters[1].id] = [m.clusters[1].id, m.clusters[0].id];
      });
      refused(dir, /clusters\[0\]\.id is 1, not 0/);
      dir = save();
      editManifest(dir, (m) => (m.clusters[1].share = 0.9));
      refused(dir, /clusters\[1\]\.share 0\.9 is not size\/cases/);
      dir = save();
      editManifest(dir, (m) => (m.clusters[0].tags = [{ tag: 'refund', count: 99 }]));
      refused(dir, /clusters\[0\]\.tags do not match the tags of its cases/);
      dir = save();
      editManifest(dir, (m) => (m.clusters[0].calibrationCases = 11));
      refused(dir, /clusters\[0\]\.calibrationCases 11 exceeds its size 10/);
      dir = save();
      editManifest(dir, (m) => (m.params.nprobe = 4));
      refused(dir, /params\.nprobe = 4 exceeds k = 3/);
      dir = save();
      editManifest(dir, (m) => (m.evalSet.cases = 29));
      refused(dir, /evalSet: 30 unique cases of 29/);
    });

    it('refuses inconsistent coverage depth bands', () => {
      let dir = save();
      editManifest(dir, (m) => (m.calibration.bands.inScope[0] += 0.5));
      refused(dir, /calibration\.bands\.inScope shares sum to 1\.5/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.edges[4] = 0.1));
      refused(dir, /calibration\.bands\.edges must not decrease/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.novelCases = 31));
      refused(dir, /novelCases 31 exceeds the 30 cases/);
    });

    it('refuses an inconsistent held-out deep-band share; a model without one (fitted before it) loads', () => {
      let dir = save();
      editManifest(dir, (m) => (m.calibration.bands.heldOut.profile[0] += 0.5));
      refused(dir, /calibration\.bands\.heldOut\.profile shares sum to 1\.5/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.heldOut.deepShare = m.calibration.bands.heldOut.deepShareInterval[1] + 0.01));
      refused(dir, /calibration\.bands\.heldOut\.deepShare .* lies outside its interval/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.heldOut.novelDeepShare = 0.999));
      refused(dir, /calibration\.bands\.heldOut\.novelDeepShare 0\.999 is not the novel profile's share/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.heldOut.deepBands = 5));
      refused(dir, /calibration\.bands\.heldOut\.deepBands 5 reaches above the threshold's band/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.heldOut.deepShareInterval[1] = 1.5));
      expect(() => loadCoverageModel(dir)).toThrow(/deepShareInterval/);
      dir = save();
      editManifest(dir, (m) => delete m.calibration.bands.heldOut);
      const old = loadCoverageModel(dir);
      expect(old.manifest.calibration.bands!.heldOut).toBeUndefined();
      // the monitor's context then has no fixed deep-band reference: novel_vs_calibrated is off
      expect(contextFromManifest(old.manifest).heldOutDeep).toBeUndefined();
      expect(contextFromManifest(loadCoverageModel(save()).manifest).heldOutDeep).toBeDefined();
    });

    it('refuses an inconsistent session reference; a model without one (fitted before it) loads, and the monitor has no fit reference', () => {
      let dir = save();
      editManifest(dir, (m) => (m.calibration.bands.sessions.groupShares[0] += 0.5));
      refused(dir, /calibration\.bands\.sessions\.groupShares sum to 1\.(5|49)/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.sessions.novelShares[0] += 0.01));
      refused(dir, /calibration\.bands\.sessions\.novelShares are not the novel profile summed/);
      dir = save();
      editManifest(dir, (m) => (m.calibration.bands.sessions.shape[0] = 1e-6));
      refused(dir, /calibration\.bands\.sessions\.shape has a value below 1\/cap/);
      dir = save();
      editManifest(dir, (m) => delete m.calibration.bands.sessions);
      const old = loadCoverageModel(dir);
      expect(old.manifest.calibration.bands!.sessions).toBeUndefined();
      expect(contextFromManifest(old.manifest).sessionReference).toBeUndefined();
      expect(contextFromManifest(loadCoverageModel(save()).manifest).sessionReference?.bound).toBeGreaterThan(0);
    });

    it('refuses a version id edited by hand (a copy passed off as a new model)', () => {
      const dir = save();
      editManifest(dir, (m) => (m.version = 'cm-000000000bad'));
      refused(dir, new RegExp(`version cm-000000000bad is not the one its fit inputs give \\(${built.draft.version}\\)`));
      // the same with the tags of the cases changed (cases.jsonl rewritten, its checksum recorded)
      const dir2 = save();
      const f = path.join(dir2, 'cases.jsonl');
      const text = Buffer.from(fs.readFileSync(f, 'utf8').replace(/"tags":\["[a-z]+"\]/, '"tags":["zzz"]'));
      fs.writeFileSync(f, text);
      editManifest(dir2, (m) => (m.files['cases.jsonl'] = { sha256: createHash('sha256').update(text).digest('hex'), bytes: text.length }));
      expect(() => loadCoverageModel(dir2)).toThrow(/is not the one its fit inputs give/);
      // a cases file that is not JSON lines is refused as such
      const dir3 = save();
      rewrite(dir3, 'cases.jsonl', (b) => b.write('}', 0, 'utf8'));
      expect(() => loadCoverageModel(dir3)).toThrow(/coverage model .* cases\.jsonl line 1 is not JSON/);
    });
  });

  it('refuses to save an invalid draft and writes no manifest', () => {
    const dir = fresh();
    expect(() => saveCoverageModel(dir, { ...built.draft, version: 'v1' }, built.arrays)).toThrow();
    expect(fs.existsSync(path.join(dir, 'manifest.json'))).toBe(false);
    expect(() => loadCoverageModel(dir)).toThrow(/missing manifest\.json/);
  });
});
