import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { loadConfig } from '../../src/config/index.js';
import { buildCoverageModel, dedupeCases, evalSetHash, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { CoverageAssigner, type Manifest } from '../../src/coverage/model.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { DEFAULT_DISCOVERY, discover } from '../../src/gaps/discover.js';
import { categories, holdOut, loadBanking77 } from '../helpers/banking77.js';
import { rng, dotAt } from '../../src/coverage/vec.js';
import { inCoveredSample } from '../../src/store/embeddings.js';
import { clusterEmbeddings } from '../../src/coverage/cluster.js';

async function main() {
  const cfg = loadConfig();
  const embedder = await loadEmbedder(cfg.embed);
  const dim = embedder.dim;
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, dim, maxTokens: embedder.maxTokens };
  const trainCases = dedupeCases(train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] }))).unique;
  const embedAll = async (texts: string[]): Promise<Float32Array> => {
    const key = createHash('sha256').update(embedder.modelChecksum).update(texts.join('\n')).digest('hex').slice(0, 16);
    const file = path.join(os.tmpdir(), `evalgap-bench-emb-${key}.f32`);
    if (fs.existsSync(file)) { const b = fs.readFileSync(file); return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); }
    console.error(`embedding ${texts.length}`);
    const v = (await embedder.embed(texts)).vectors;
    fs.writeFileSync(file, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    return v;
  };
  const trainVec = await embedAll(trainCases.map((c) => c.text));
  const testVec = await embedAll(test.map((r) => r.text));
  const d = Number(process.argv[2] ?? 0);
  const held = holdOut(cats, 15, 1000 + d);
  const r = rng(77 + d);
  const fitIdx: number[] = [];
  const pool = new Map<string, { text: string; v: Float32Array }[]>();
  const add = (intent: string, text: string, v: Float32Array) => { const l = pool.get(intent) ?? []; l.push({ text, v }); pool.set(intent, l); };
  trainCases.forEach((c, i) => {
    if (!held.has(c.tags[0]) && r() < 0.5) fitIdx.push(i); else add(c.tags[0], c.text, trainVec.subarray(i * dim, i * dim + dim));
  });
  test.forEach((t, i) => add(t.category, t.text, testVec.subarray(i * dim, i * dim + dim)));
  const fitted = cats.filter((c) => !held.has(c)); const heldL = [...held];
  const N = Number(process.env.N ?? 30000); const novelShare = Number(process.env.NOVEL ?? 0.07);
  const traffic: { text: string; intent: string; v: Float32Array }[] = [];
  for (let i = 0; i < N; i++) {
    if (i > 0 && r() < 0.3) { traffic.push(traffic[i - 1]); continue; }
    const list = r() < novelShare ? heldL : fitted; const intent = list[Math.floor(r() * list.length)];
    const p = pool.get(intent)!; const q = p[Math.floor(r() * p.length)];
    traffic.push({ text: q.text, intent, v: q.v });
  }
  const cases = fitIdx.map((i) => trainCases[i]);
  const vec = new Float32Array(cases.length * dim);
  fitIdx.forEach((i, j) => vec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
  const t0 = performance.now();
  const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vec, emb, { ...DEFAULT_FIT, source: 'b', textField: 'text' });
  console.error('tau', built.draft.calibration.threshold); console.error('fit ms', performance.now() - t0, built.draft.calibration.regions, built.draft.calibration.bands?.novel, built.draft.calibration.bands?.inScope);
  const asg = new CoverageAssigner({ manifest: { ...built.draft, files: {} as Manifest['files'] }, ...built.arrays });
  const tv = new Float32Array(traffic.length * dim);
  traffic.forEach((t, i) => tv.set(t.v, i * dim));
  const a = asg.assign(tv, traffic.length);
  const unc: number[] = [];
  for (let i = 0; i < traffic.length; i++) if (!a.covered[i]) unc.push(i);
  const heldN = traffic.filter((t) => held.has(t.intent)).length;
  const heldU = unc.filter((i) => held.has(traffic[i].intent)).length;
  console.error({ traffic: traffic.length, heldN, uncovered: unc.length, heldU, inScopeU: unc.length - heldU });
  const uv = new Float32Array(unc.length * dim);
  unc.forEach((i, j) => uv.set(tv.subarray(i * dim, i * dim + dim), j * dim));
  const rows = unc.map((i, j) => ({ request_id: `r${j}`, ts: j, agent: 'a', query: traffic[i].text, query_redacted: 0 as const, escalated: 0 as const, outcome: 'ok', cluster: a.cluster[i], coverage: a.coverage[i] }));
  const cov: number[] = []; for (let i = 0; i < traffic.length; i++) if (a.covered[i] && inCoveredSample(`t${i}`)) cov.push(i);
  const mcsArg = Number(process.argv[3] ?? 0), msArg = Number(process.argv[4] ?? 0);
  const res = discover({ scope: '', rows, vectors: uv, dim, totalRequests: traffic.length, since: 0, until: unc.length, previous: [], clusterLabels: new Map(), threshold: built.draft.calibration.threshold, neighbours: 5 }, { ...DEFAULT_DISCOVERY, minClusterSize: mcsArg, minSamples: msArg });
  console.error('params', res.params);
  const bands = built.draft.calibration.bands!;
  const below = 5;
  const sIn = bands.inScope.slice(0, below); const sNo = bands.novel.slice(0, below);
  const zi = sIn.reduce((x, y) => x + y, 0); const zn = sNo.reduce((x, y) => x + y, 0);
  const llr = sIn.map((_, b) => Math.log(sNo[b] / zn / (sIn[b] / zi)));
  console.error('llr', llr.map((x) => x.toFixed(2)));
  // per gap
  const byGap = new Map<number, number[]>();
  res.membership.forEach((g, j) => { if (g >= 0) { const l = byGap.get(g) ?? []; l.push(j); byGap.set(g, l); } });
  const cent = new Float32Array(res.gaps.length * dim);
  res.gaps.forEach((g, i) => cent.set(g.centroid, i * dim));
  const ca = asg.assign(cent, res.gaps.length);
  const out = [];
  for (const [g, idx] of byGap) {
    const cnt = new Map<string, number>();
    let deep = 0, L = 0, mb = 0;
    for (const j of idx) { const t = traffic[unc[j]].intent; cnt.set(t, (cnt.get(t) ?? 0) + 1); const b = a.band![unc[j]]; if (b < 4) deep++; L += llr[b]; mb += b; }
    const cen = res.gaps[g].centroid; const sims = idx.map((j) => dotAt(uv, j * dim, cen, 0, dim)).sort((x, y) => x - y); const cut = sims[Math.floor(0.05 * (sims.length - 1))];
    let cj = 0; for (const i of cov) { if (dotAt(tv, i * dim, cen, 0, dim) >= cut) cj++; }
    const u = idx.length / (idx.length + 20 * cj);
    const tau = Number(process.env.TAU ?? built.draft.calibration.threshold);
    let ub = 0, cb = 0; for (let j = 0; j < unc.length; j++) if (dotAt(uv, j * dim, cen, 0, dim) >= tau) ub++; for (const i of cov) if (dotAt(tv, i * dim, cen, 0, dim) >= tau) cb++;
    const uBall = ub / (ub + 20 * cb); const distinct = new Set(idx.map((j) => traffic[unc[j]].text)).size;
    const dmap = new Map<string, number>(); for (const j of idx) dmap.set(traffic[unc[j]].text, a.band![unc[j]]);
    let dd = 0, dl = 0; for (const b of dmap.values()) { if (b < 4) dd++; dl += llr[b]; } const deepD = dd / dmap.size, llrD = dl / dmap.size;
    let f1 = 0; const cnts = new Map<string, number>(); for (const j of idx) cnts.set(traffic[unc[j]].text, (cnts.get(traffic[unc[j]].text) ?? 0) + 1); for (const v of cnts.values()) if (v === 1) f1++;
    const [maj, c] = [...cnt.entries()].sort((x, y) => y[1] - x[1])[0];
    out.push({ deepD, llrD, ratio: distinct / idx.length, gt: f1 / idx.length, uB: +uBall.toFixed(2), ub, cb, dist: distinct, u: +u.toFixed(2), cj, rank: res.gaps[g].rank, n: idx.length, held: held.has(maj), maj, purity: +(c / idx.length).toFixed(2), deep: +(deep / idx.length).toFixed(2), llr: +(L / idx.length).toFixed(2), meanBand: +(mb / idx.length).toFixed(2), cMargin: +(ca.coverage[g] - asg.thresholdOf(cent, g, ca.cluster[g])).toFixed(3), cBand: ca.band![g] });
  }
  out.sort((x, y) => x.rank - y.rank);
  const auc = (k: string) => { let w = 0, t = 0; for (const p of out) for (const q of out) if (p.held && !q.held) { t++; const a1 = (p as any)[k], b1 = (q as any)[k]; w += a1 > b1 ? 1 : a1 === b1 ? 0.5 : 0; } return (w / t).toFixed(2); };
  console.error('AUC', ['deepD', 'llrD', 'deep', 'llr', 'meanBand', 'ratio', 'gt', 'uB', 'u', 'cMargin', 'n'].map((k) => `${k}=${auc(k)}`).join(' '));
  for (const o of out) console.log(JSON.stringify(o));
  const leading = new Set(out.filter((o) => o.held).map((o) => o.maj));
  for (const kk of [res.gaps.length, Math.round(Math.sqrt(unc.length / 2))]) { const km = clusterEmbeddings(uv, unc.length, dim, kk); const m2 = new Map<number, Map<string, number>>(); km.labels.forEach((l, j) => { const mm = m2.get(l) ?? new Map(); const t = traffic[unc[j]].intent; mm.set(t, (mm.get(t) ?? 0) + 1); m2.set(l, mm); }); const lead = new Set([...m2.values()].map((mm) => [...mm.entries()].sort((x, y) => y[1] - x[1])[0][0]).filter((t) => held.has(t))); console.error('kmeans k', kk, 'held leading', lead.size); }
  console.error('held leading', leading.size, 'of', held.size);
}
main();
