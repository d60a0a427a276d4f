/**
 * What gap discovery keeps of a request: its embedding, int8-quantised with one scale per row
 * (384 bytes + 4 instead of 1,536 for Float32). A unit vector's components lie in [-1, 1]; the
 * scale is max |x| / 127, so the largest component is exact and every other is within scale/2.
 * Cosine similarities between dequantised unit vectors differ from the Float32 ones by < 0.005
 * (test/unit/gaps.test.ts).
 *
 * Kept: every uncovered request, and a uniform 1-in-20 sample of covered ones
 * (COVERED_SAMPLE_RATE), chosen by a hash of the request id, so a redelivered message makes the
 * same choice and the sample is a uniform one of covered traffic.
 */
import { createHash } from 'node:crypto';

export const COVERED_SAMPLE_RATE = 0.05;

/** One row of {db}.request_embeddings, as inserted (JSONEachRow). */
export interface EmbeddingRow {
  request_id: string;
  ts: string;
  agent: string;
  model_version: string;
  covered: 0 | 1;
  kafka_topic: string;
  kafka_partition: number;
  kafka_offset: string;
  scale: number;
  embedding: number[];
}

/** Whether a covered request belongs to the kept uniform sample (deterministic in its id). */
export function inCoveredSample(requestId: string, rate = COVERED_SAMPLE_RATE): boolean {
  const h = createHash('sha256').update(requestId).digest();
  return h.readUInt32BE(0) / 4294967296 < rate;
}

export function quantize(v: Float32Array, offset: number, dim: number): { scale: number; q: number[] } {
  let m = 0;
  for (let d = 0; d < dim; d++) m = Math.max(m, Math.abs(v[offset + d]));
  const scale = m > 0 ? m / 127 : 1;
  const q = new Array<number>(dim);
  for (let d = 0; d < dim; d++) q[d] = Math.max(-127, Math.min(127, Math.round(v[offset + d] / scale)));
  return { scale: Math.fround(scale), q };
}

/** Dequantise into out[offset..offset+dim), re-normalised to unit length. */
export function dequantizeInto(scale: number, q: ArrayLike<number>, out: Float32Array, offset: number): void {
  let n = 0;
  for (let d = 0; d < q.length; d++) {
    const x = q[d] * scale;
    out[offset + d] = x;
    n += x * x;
  }
  n = Math.sqrt(n) || 1;
  for (let d = 0; d < q.length; d++) out[offset + d] /= n;
}
