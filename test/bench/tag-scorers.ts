/**
 * Tag-conditional scorers on Banking77 (npm run bench; prints JSON): does a class-conditional
 * score, given each eval case's intent as its tag, rank held-out intents above fitted ones better
 * than the unsupervised coverage score? Same draws as test/bench/coverage.ts (17 of 77 intents
 * held out, seeds 1000+d). Scorers: the model's kNN coverage score (mean cosine to the 5 nearest
 * eval cases, searched in all cases here), cosine to the nearest tag centroid, and Mahalanobis
 * distance to the nearest tag mean with a shared covariance shrunk toward a scaled identity
 * (shrinkage 0.05, 0.2, 0.5). Reports AUROC held-out vs fitted per scorer.
 */
import { loadConfig } from '../../src/config/index.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { dedupeCases } from '../../src/coverage/fit.js';
import { auroc } from '../../src/coverage/metrics.js';
import { dotAt } from '../../src/coverage/vec.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 5);
let dim = 384;

function cholesky(A: Float64Array, d: number): Float64Array {
  const L = new Float64Array(d * d);
  for (let j = 0; j < d; j++) {
    let s = A[j * d + j];
    for (let k = 0; k < j; k++) s -= L[j * d + k] ** 2;
    const ljj = Math.sqrt(s);
    L[j * d + j] = ljj;
    for (let i = j + 1; i < d; i++) {
      let t = A[i * d + j];
      for (let k = 0; k < j; k++) t -= L[i * d + k] * L[j * d + k];
      L[i * d + j] = t / ljj;
    }
  }
  return L;
}
// whiten: solve L z = x
function whiten(L: Float64Array, d: number, x: Float32Array, xo: number, z: Float64Array) {
  for (let i = 0; i < d; i++) {
    let s = x[xo + i];
    for (let k = 0; k < i; k++) s -= L[i * d + k] * z[k];
    z[i] = s / L[i * d + i];
  }
}
function fitMaha(vec: Float32Array, lab: Int32Array, T: number, lambda: number) {
  const n = lab.length;
  const mu = new Float64Array(T * dim), cnt = new Float64Array(T);
  for (let i = 0; i < n; i++) { cnt[lab[i]]++; for (let j = 0; j < dim; j++) mu[lab[i] * dim + j] += vec[i * dim + j]; }
  for (let t = 0; t < T; t++) for (let j = 0; j < dim; j++) mu[t * dim + j] /= Math.max(1, cnt[t]);
  const S = new Float64Array(dim * dim);
  const r = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) r[j] = vec[i * dim + j] - mu[lab[i] * dim + j];
    for (let a = 0; a < dim; a++) { const ra = r[a]; for (let b = 0; b <= a; b++) S[a * dim + b] += ra * r[b]; }
  }
  let tr = 0;
  for (let a = 0; a < dim; a++) { for (let b = 0; b <= a; b++) { S[a * dim + b] /= n; S[b * dim + a] = S[a * dim + b]; } tr += S[a * dim + a]; }
  for (let a = 0; a < dim * dim; a++) S[a] *= 1 - lambda;
  for (let a = 0; a < dim; a++) S[a * dim + a] += lambda * tr / dim;
  const L = cholesky(S, dim);
  const muW = new Float64Array(T * dim); const z = new Float64Array(dim);
  const mu32 = Float32Array.from(mu);
  for (let t = 0; t < T; t++) { whiten(L, dim, mu32, t * dim, z); muW.set(z, t * dim); }
  return { L, muW, cnt, T };
}
function scoreMaha(M: ReturnType<typeof fitMaha>, x: Float32Array, xo: number, z: Float64Array): [number, number] {
  whiten(M.L, dim, x, xo, z);
  let best = Infinity, bt = 0;
  for (let t = 0; t < M.T; t++) { if (!M.cnt[t]) continue; let s = 0; for (let j = 0; j < dim; j++) { const d = z[j] - M.muW[t * dim + j]; s += d * d; } if (s < best) { best = s; bt = t; } }
  return [-best, bt];
}

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'tag-scorers', skipped: BANKING77_MISSING }));
    return;
  }
  const embedder = await loadEmbedder(loadConfig().embed);
  dim = embedder.dim;
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const unique = dedupeCases(train.map((r, i) => ({ id: String(i), text: r.text, tags: [r.category] }))).unique;
  const trainVec = (await embedder.embed(unique.map((c) => c.text))).vectors;
  const testVec = (await embedder.embed(test.map((r) => r.text))).vectors;
  const res: Record<string, number[]> = {};
  const push = (k: string, v: number) => (res[k] ??= []).push(v);
  for (let d = 0; d < draws; d++) {
    const held = holdOut(cats, 17, 1000 + d);
    const rows = unique.map((c, i) => [c, i] as const).filter(([c]) => !held.has(c.tags[0]));
    const tagList = [...new Set(rows.map(([c]) => c.tags[0]))].sort();
    const T = tagList.length;
    const tIdx = new Map(tagList.map((t, i) => [t, i]));
    const n = rows.length;
    const vec = new Float32Array(n * dim);
    rows.forEach(([, i], j) => vec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
    const lab = Int32Array.from(rows, ([c]) => tIdx.get(c.tags[0])!);
    const isHeld = test.map((r) => held.has(r.category));
    // kNN: mean of the 5 largest cosines over all eval cases (exact search)
    const knn = new Float64Array(test.length);
    const top = new Float64Array(5);
    for (let i = 0; i < test.length; i++) {
      top.fill(-Infinity);
      for (let j = 0; j < n; j++) {
        const s = dotAt(testVec, i * dim, vec, j * dim, dim);
        if (s <= top[4]) continue;
        let p = 4;
        while (p > 0 && top[p - 1] < s) (top[p] = top[p - 1]), p--;
        top[p] = s;
      }
      knn[i] = (top[0] + top[1] + top[2] + top[3] + top[4]) / 5;
    }
    push('knn5', auroc(Float64Array.from(knn, (s) => -s), isHeld));
    // nearest tag centroid (cosine)
    const cen = new Float32Array(T * dim);
    for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) cen[lab[i] * dim + j] += vec[i * dim + j];
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += cen[t * dim + j] ** 2;
      s = Math.sqrt(s);
      for (let j = 0; j < dim; j++) cen[t * dim + j] /= s;
    }
    const cs = Float64Array.from({ length: test.length }, (_, i) => {
      let b = -Infinity;
      for (let t = 0; t < T; t++) b = Math.max(b, dotAt(testVec, i * dim, cen, t * dim, dim));
      return -b;
    });
    push('tagCentroidCosine', auroc(cs, isHeld));
    for (const lambda of [0.05, 0.2, 0.5]) {
      const M = fitMaha(vec, lab, T, lambda);
      const z = new Float64Array(dim);
      const ms = Float64Array.from({ length: test.length }, (_, i) => -scoreMaha(M, testVec, i * dim, z)[0]);
      push(`mahalanobisShrink${lambda}`, auroc(ms, isHeld));
    }
    console.error(JSON.stringify({ draw: d, ...Object.fromEntries(Object.entries(res).map(([k, v]) => [k, v[v.length - 1]])) }));
  }
  const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
  console.log(
    JSON.stringify(
      {
        bench: 'tag-scorers',
        data: 'banking77',
        draws,
        heldOutIntents: 17,
        aurocHeldOutVsFitted: Object.fromEntries(
          Object.entries(res).map(([k, v]) => [k, { mean: r4(v.reduce((a, b) => a + b, 0) / v.length), min: r4(Math.min(...v)), max: r4(Math.max(...v)) }]),
        ),
      },
      null,
      2,
    ),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
