/** Small dense-vector helpers over row-major Float32Arrays (no per-row allocations). */

/** Dot product of a[ao..ao+dim) and b[bo..bo+dim), unrolled by four (the hot loop of the index). */
export function dotAt(a: Float32Array, ao: number, b: Float32Array, bo: number, dim: number): number {
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

/**
 * Dot products of a[ao..ao+dim) with four rows of b (at bo, bo + dim, bo + 2·dim, bo + 3·dim) in
 * one pass, into out[0..3]: each element of a is read once for four products (~1.6× dotAt's speed
 * per product in V8). Each sum runs over d in order, in float64.
 */
export function dot4(a: Float32Array, ao: number, b: Float32Array, bo: number, dim: number, out: Float64Array): void {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const b1 = bo + dim;
  const b2 = b1 + dim;
  const b3 = b2 + dim;
  for (let d = 0; d < dim; d++) {
    const v = a[ao + d];
    s0 += v * b[bo + d];
    s1 += v * b[b1 + d];
    s2 += v * b[b2 + d];
    s3 += v * b[b3 + d];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

/**
 * Dot products of a[ao..ao+dim) with rows `from` … `to − 1` of b into out[outAt …]: dot4 over groups
 * of four rows, the rest one by one, every sum in float64 over d in order (the same value for a
 * row wherever it falls).
 */
export function dotMany(a: Float32Array, ao: number, b: Float32Array, from: number, to: number, dim: number, out: Float64Array, outAt = 0): void {
  const four = SCRATCH4;
  let r = from;
  for (; r + 3 < to; r += 4) {
    dot4(a, ao, b, r * dim, dim, four);
    const o = outAt + r - from;
    out[o] = four[0];
    out[o + 1] = four[1];
    out[o + 2] = four[2];
    out[o + 3] = four[3];
  }
  for (; r < to; r++) {
    let s = 0;
    const bo = r * dim;
    for (let d = 0; d < dim; d++) s += a[ao + d] * b[bo + d];
    out[outAt + r - from] = s;
  }
}
const SCRATCH4 = new Float64Array(4);

export function dotRows(a: Float32Array, ai: number, b: Float32Array, bi: number, dim: number): number {
  return dotAt(a, ai * dim, b, bi * dim, dim);
}

/** L2-normalise each row in place; returns the array. */
export function normalizeRows(m: Float32Array, dim: number): Float32Array {
  for (let o = 0; o < m.length; o += dim) {
    let n = 0;
    for (let d = 0; d < dim; d++) n += m[o + d] * m[o + d];
    n = Math.sqrt(n) || 1;
    for (let d = 0; d < dim; d++) m[o + d] /= n;
  }
  return m;
}

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Pick `m` distinct indices out of n, deterministically for a seed (partial Fisher-Yates). */
export function sampleIndices(n: number, m: number, seed: number): Int32Array {
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  const r = rng(seed);
  const k = Math.min(m, n);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(r() * (n - i));
    const t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
  return idx.slice(0, k).sort();
}

export function gatherRows(m: Float32Array, dim: number, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * dim);
  for (let i = 0; i < rows.length; i++) out.set(m.subarray(rows[i] * dim, rows[i] * dim + dim), i * dim);
  return out;
}

export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
