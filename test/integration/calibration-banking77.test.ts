/**
 * Calibration over phrasing families with the real model on Banking77 (docs/calibration.md).
 * 25 intents; each intent's train and test queries are grouped into 4 paraphrase families by
 * k-means and the train queries of one family per intent are left out of the eval set, so about a
 * quarter of the test queries are phrased in ways the eval set did not write. The fit (worker
 * threads, real embeddings) must state an interval that holds for those test queries; the
 * calibration before phrasing families, on the same index, states one that they exceed. The saved
 * model loads, and `evalgap inspect` prints both rates.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { calibrateMondrian, nearestRow } from '../../src/coverage/calibrate.js';
import { clusterEmbeddings } from '../../src/coverage/cluster.js';
import { calibrationRegions, DEFAULT_FIT, fitCoverageModel, indexParams } from '../../src/coverage/fit.js';
import type { Embedder } from '../../src/embed/embedder.js';
import { CoverageIndex } from '../../src/coverage/index.js';
import { CoverageAssigner, loadCoverageModel, saveCoverageModel } from '../../src/coverage/model.js';
import { gatherRows, rng } from '../../src/coverage/vec.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';
import { realEmbedder, tmpDir } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

/** The real embedder's vectors, computed once, served by text (so the fit embeds nothing twice). */
function lookup(base: Embedder, texts: string[], vectors: Float32Array): Embedder {
  const row = new Map<string, number>();
  texts.forEach((t, i) => row.has(t) || row.set(t, i));
  const dim = base.dim;
  return Object.assign(Object.create(base) as Embedder, {
    async embed(ts: readonly string[]) {
      const v = new Float32Array(ts.length * dim);
      ts.forEach((t, i) => v.set(vectors.subarray(row.get(t)! * dim, row.get(t)! * dim + dim), i * dim));
      return { vectors: v } as Awaited<ReturnType<Embedder['embed']>>;
    },
  });
}

describe('calibration over phrasing families on Banking77 (real model)', () => {
  it('states an interval that holds when a quarter of production is phrased anew; the calibration before did not', async (ctx) => {
    if (!hasBanking77()) {
      console.warn(`skipped: ${BANKING77_MISSING}`);
      ctx.skip();
    }
    const e = await realEmbedder();
    const dim = e.dim;
    const intents = [...holdOut(categories(loadBanking77('train')), 25, 77)].sort();
    const keep = new Set(intents);
    const train = loadBanking77('train').filter((r) => keep.has(r.category));
    const test = loadBanking77('test').filter((r) => keep.has(r.category));
    const texts = [...train.map((r) => r.text), ...test.map((r) => r.text)];
    const { vectors } = await e.embed(texts);
    const trainVec = vectors.subarray(0, train.length * dim);
    const testVec = vectors.subarray(train.length * dim);
    // one of 4 paraphrase families per intent left out of the eval set
    const r = rng(5);
    const dropped = new Set<number>();
    intents.forEach((c, ci) => {
      const tr = train.map((x, i) => (x.category === c ? i : -1)).filter((i) => i >= 0);
      const te = test.map((x, i) => (x.category === c ? i : -1)).filter((i) => i >= 0);
      const all = new Float32Array((tr.length + te.length) * dim);
      all.set(gatherRows(trainVec, dim, tr));
      all.set(gatherRows(testVec, dim, te), tr.length * dim);
      const lab = clusterEmbeddings(all, tr.length + te.length, dim, 4, { seed: 900 + ci, restarts: 3, maxIterations: 40, restartSample: 1e6 }).labels;
      const gone = Math.floor(r() * 4);
      tr.forEach((i, j) => lab[j] === gone && dropped.add(i));
    });
    const cases = train.map((x, i) => ({ id: `t${i}`, text: x.text, tags: [x.category] })).filter((_, i) => !dropped.has(i));
    const opts = { ...DEFAULT_FIT, k: 25, restarts: 2, source: 'banking77-families', textField: 'text' };
    const out = await fitCoverageModel(cases, lookup(e, texts, vectors), opts);
    const dir = tmpDir();
    saveCoverageModel(dir, out.draft, out.arrays);
    const model = loadCoverageModel(dir);
    const c = model.manifest.calibration;
    expect(c.regions).toBe('tags');
    expect(c.phrasing!.rateSeen).toBeLessThan(c.phrasing!.rateNew);

    const assigner = new CoverageAssigner(model);
    const a = assigner.assign(Float32Array.from(testVec), test.length);
    const realised = a.covered.reduce((s, v) => s + (v ? 0 : 1), 0) / test.length;
    // the interval is for the long-run rate: the test sample adds its binomial noise (2 sd)
    const noise = (p: number) => 2 * Math.sqrt((p * (1 - p)) / test.length);
    expect(realised).toBeGreaterThanOrEqual(c.expectedRateInterval[0] - noise(c.expectedRateInterval[0]));
    expect(realised).toBeLessThanOrEqual(c.expectedRateInterval[1] + noise(c.expectedRateInterval[1]));

    // the calibration before: Mondrian conformal on the near-duplicate-free scores of the same index
    const m = model.manifest;
    const x = model.embeddings;
    const index = new CoverageIndex(model.centroids, m.params.k, x, model.labels, dim, indexParams(x.length / dim, m.params.k, opts));
    const cr = calibrationRegions(model.cases, x, dim, { k: m.params.k, labels: model.labels, centroids: model.centroids }, opts);
    const old = calibrateMondrian(index.calibrationScores(x, opts.nearDuplicateCosine), cr.region, cr.count, opts.targetRate, { minRegion: opts.minClusterCases });
    let oldBelow = 0;
    for (let i = 0; i < test.length; i++) if (a.coverage[i] < old.regions[nearestRow(testVec, i, cr.centroids, cr.count, dim)].threshold) oldBelow++;
    const oldRealised = oldBelow / test.length;
    expect(oldRealised).toBeGreaterThan(old.expectedRateInterval[1] + noise(old.expectedRateInterval[1]));
    console.log(
      `families split, ${cases.length} eval cases, ${test.length} test queries: stated ${(100 * c.expectedRate).toFixed(1)}% ` +
        `[${(100 * c.expectedRateInterval[0]).toFixed(1)}–${(100 * c.expectedRateInterval[1]).toFixed(1)}%], realised ${(100 * realised).toFixed(1)}%; ` +
        `before: stated ${(100 * old.expectedRate).toFixed(1)}% [${(100 * old.expectedRateInterval[0]).toFixed(1)}–${(100 * old.expectedRateInterval[1]).toFixed(1)}%], realised ${(100 * oldRealised).toFixed(1)}%`,
    );

    // inspect prints both rates
    const r2 = spawnSync(process.execPath, [CLI, 'inspect', dir], { encoding: 'utf8', timeout: 120_000 });
    expect(r2.status, r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/for new phrasings of families the eval set has, [\d.]+% for phrasings it did not write/);
  }, 400_000); // embeds ~4,000 Banking77 queries
});
