/** 2-D map of eval cases against production queries: PCA (ml-pca) fitted on both, so one projection places all. */
import { PCA } from 'ml-pca';

export interface MapInput {
  dim: number;
  eval: Float32Array;
  production: Float32Array;
}

function rows(v: Float32Array, dim: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i + dim <= v.length; i += dim) out.push(Array.from(v.subarray(i, i + dim)));
  return out;
}

const r4 = (x: number) => Math.round(x * 1e4) / 1e4;

/** Project eval and production vectors onto the first two principal components of their union. */
export function pcaMap(input: MapInput): { eval: [number, number][]; production: [number, number][] } {
  const e = rows(input.eval, input.dim);
  const p = rows(input.production, input.dim);
  const all = [...e, ...p];
  if (all.length < 3) return { eval: [], production: [] };
  const pca = new PCA(all, { center: true, scale: false, method: 'covarianceMatrix' });
  const proj = pca.predict(all, { nComponents: 2 }).to2DArray();
  const pts = proj.map((r) => [r4(r[0]), r4(r[1])] as [number, number]);
  return { eval: pts.slice(0, e.length), production: pts.slice(e.length) };
}
