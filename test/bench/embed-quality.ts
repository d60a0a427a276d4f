/**
 * Does int8 compute keep the coverage quality? (npm run bench; prints JSON.) On Banking77, in the
 * same run, the int8 and the fp32 graph of the same weights each embed the train and test queries;
 * for each seeded draw a coverage model is fitted on the train rows of 60 of 77 intents with each
 * precision, and the test rows of all 77 are scored. Reported per precision and as int8 − fp32:
 * AUROC (held-out vs fitted intents), realised false-uncovered rate on fitted intents, ARI of the
 * clusters against the true intents; plus the ARI between the two precisions' clusterings and the
 * cosine distribution between the two precisions' vectors of the same query. With k auto the two
 * fits may choose different k (the silhouette curve is flat over a wide range), which moves ARI by
 * itself, so int8 is also fitted with the k fp32 chose, and ARI compared at that same k. Tolerances (issue 12):
 * |ΔAUROC| ≤ 0.005, |Δrate| ≤ 0.005, |ΔARI| ≤ 0.02. Test queries are scored as evalgap run scores them
 * (the saved model through CoverageAssigner: each region's threshold). The draws are paired (the
 * same held-out intents for both precisions), so each difference is reported with its 95% t
 * interval over draws (10 by default), with k auto for each and at the k fp32 chose. Then a full fit of all 10,003 train queries
 * with the default settings (embedding included), its time and peak RSS.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import jstatPkg from 'jstat';
import { loadConfig } from '../../src/config/index.js';
import { loadThreadedEmbedder, type ThreadedEmbedder } from '../../src/embed/threaded.js';
import type { Precision } from '../../src/embed/embedder.js';
import { buildCoverageModel, dedupeCases, evalSetHash, fitCoverageModel, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { CoverageAssigner, loadCoverageModel, saveCoverageModel } from '../../src/coverage/model.js';
import { adjustedRandIndex, auroc } from '../../src/coverage/metrics.js';
import { tmpDir } from '../helpers/fixtures.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 10);
const { jStat } = jstatPkg as unknown as { jStat: { studentt: { inv(p: number, dof: number): number } } };
const heldOutCount = 17;
const TOL = { auroc: 0.005, realisedFalseUncoveredRate: 0.005, ari: 0.02 };

const quantiles = (xs: Float64Array, qs: number[]) => {
  const s = Float64Array.from(xs).sort();
  return Object.fromEntries(qs.map((q) => [`p${+(q * 100).toFixed(1)}`, +s[Math.min(s.length - 1, Math.floor(q * s.length))].toFixed(5)]));
};

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'embed-quality', skipped: BANKING77_MISSING }));
    return;
  }
  const cfg = loadConfig();
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const trainCases = dedupeCases(train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] }))).unique;
  const load0 = os.loadavg()[0];

  const precisions: Precision[] = ['int8', 'fp32'];
  const vec = new Map<Precision, { train: Float32Array; test: Float32Array; emb: Parameters<typeof buildCoverageModel>[4] }>();
  let dim = 0;
  for (const precision of precisions) {
    const e: ThreadedEmbedder = await loadThreadedEmbedder({ ...cfg.embed, precision });
    dim = e.dim;
    const t = performance.now();
    const trainVec = (await e.embed(trainCases.map((c) => c.text))).vectors;
    const testVec = (await e.embed(test.map((r) => r.text))).vectors;
    console.error(`${precision}: embedded ${trainCases.length + test.length} queries in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    vec.set(precision, {
      train: trainVec,
      test: testVec,
      emb: { model: e.modelName, checksum: e.modelChecksum, precision, dim: e.dim, maxTokens: e.maxTokens },
    });
    await e.close();
  }
  const a = vec.get('int8')!;
  const b = vec.get('fp32')!;
  const cos = new Float64Array(test.length);
  for (let i = 0; i < test.length; i++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += a.test[i * dim + d] * b.test[i * dim + d];
    cos[i] = s;
  }
  const cosMean = cos.reduce((x, y) => x + y, 0) / cos.length;

  const scratch = tmpDir('evalgap-quality-');
  const perDraw = [];
  for (let d = 0; d < draws; d++) {
    const held = holdOut(cats, heldOutCount, 1000 + d);
    const rows = trainCases.map((c, i) => [c, i] as const).filter(([c]) => !held.has(c.tags[0]));
    const cases = rows.map(([c]) => c);
    const isHeld = test.map((r) => held.has(r.category));
    const out: Record<string, { k: number; auroc: number; realisedFalseUncoveredRate: number; ari: number; labels: Int32Array }> = {};
    for (const p of ['fp32', 'int8', 'int8@fp32k'] as const) {
      const v = vec.get(p === 'int8@fp32k' ? 'int8' : p)!;
      const x = new Float32Array(rows.length * dim);
      rows.forEach(([, i], j) => x.set(v.train.subarray(i * dim, i * dim + dim), j * dim));
      const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), x, v.emb, {
        ...DEFAULT_FIT,
        k: p === 'int8@fp32k' ? out.fp32.k : 'auto',
        source: 'banking77',
        textField: 'text',
      });
      const m = built.draft;
      // scored as evalgap run scores: the saved model through CoverageAssigner (each region's threshold)
      const dir = path.join(scratch, `${d}-${p}`);
      saveCoverageModel(dir, built.draft, built.arrays);
      const scores = new CoverageAssigner(loadCoverageModel(dir)).assign(v.test, test.length);
      fs.rmSync(dir, { recursive: true, force: true });
      let fitN = 0;
      let fitUncovered = 0;
      test.forEach((_, i) => {
        if (!isHeld[i]) {
          fitN++;
          fitUncovered += scores.covered[i] ? 0 : 1;
        }
      });
      out[p] = {
        k: m.params.k,
        auroc: auroc(Array.from(scores.coverage, (s) => -s), isHeld),
        realisedFalseUncoveredRate: fitUncovered / fitN,
        ari: adjustedRandIndex(built.arrays.labels, cases.map((c) => c.tags[0])),
        labels: built.arrays.labels,
      };
    }
    const r = {
      draw: d,
      int8: { ...out.int8, labels: undefined },
      fp32: { ...out.fp32, labels: undefined },
      delta: {
        auroc: +(out.int8.auroc - out.fp32.auroc).toFixed(5),
        realisedFalseUncoveredRate: +(out.int8.realisedFalseUncoveredRate - out.fp32.realisedFalseUncoveredRate).toFixed(5),
        ari: +(out.int8.ari - out.fp32.ari).toFixed(5),
      },
      ariAtFp32K: { int8: out['int8@fp32k'].ari, delta: +(out['int8@fp32k'].ari - out.fp32.ari).toFixed(5) },
      atFp32K: {
        k: out.fp32.k,
        auroc: +(out['int8@fp32k'].auroc - out.fp32.auroc).toFixed(5),
        realisedFalseUncoveredRate: +(out['int8@fp32k'].realisedFalseUncoveredRate - out.fp32.realisedFalseUncoveredRate).toFixed(5),
      },
      ariInt8VsFp32Clusters: +adjustedRandIndex(out['int8@fp32k'].labels, Array.from(out.fp32.labels, String)).toFixed(4),
    };
    perDraw.push(r);
    console.error(JSON.stringify(r));
  }
  const draws_ = perDraw;
  const meanOf = (f: (r: (typeof draws_)[number]) => number) => draws_.reduce((s, r) => s + f(r), 0) / draws_.length;
  const delta = {
    auroc: +meanOf((r) => r.delta.auroc).toFixed(5),
    realisedFalseUncoveredRate: +meanOf((r) => r.delta.realisedFalseUncoveredRate).toFixed(5),
    ari: +meanOf((r) => r.delta.ari).toFixed(5),
    ariAtTheSameK: +meanOf((r) => r.ariAtFp32K.delta).toFixed(5),
  };
  // paired over draws (the same held-out intents for both precisions): mean difference and its
  // 95% t interval
  const paired = (f: (r: (typeof draws_)[number]) => number) => {
    const xs = draws_.map(f);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
    const half = xs.length > 1 ? jStat.studentt.inv(0.975, xs.length - 1) * (sd / Math.sqrt(xs.length)) : Infinity;
    return { mean: +mean.toFixed(5), ci95: [+(mean - half).toFixed(5), +(mean + half).toFixed(5)], sd: +sd.toFixed(5) };
  };
  const pairedDeltas = {
    kAutoEach: { auroc: paired((r) => r.delta.auroc), realisedFalseUncoveredRate: paired((r) => r.delta.realisedFalseUncoveredRate), ari: paired((r) => r.delta.ari) },
    atTheSameK: {
      auroc: paired((r) => r.atFp32K.auroc),
      realisedFalseUncoveredRate: paired((r) => r.atFp32K.realisedFalseUncoveredRate),
      ari: paired((r) => r.ariAtFp32K.delta),
    },
  };
  const within =
    Math.abs(delta.auroc) <= TOL.auroc &&
    Math.abs(delta.realisedFalseUncoveredRate) <= TOL.realisedFalseUncoveredRate &&
    Math.abs(delta.ariAtTheSameK) <= TOL.ari;

  const { full, peak, workers } = await fullFit(cfg, train);
  console.log(
    JSON.stringify(
      {
        bench: 'embed-quality',
        data: 'banking77',
        draws,
        heldOutIntents: heldOutCount,
        loadAverage1m: { start: +load0.toFixed(2), end: +os.loadavg()[0].toFixed(2) },
        meanDeltaInt8MinusFp32: delta,
        pairedDeltaInt8MinusFp32: pairedDeltas,
        tolerances: TOL,
        // AUROC and rate with k auto for each; ARI at the same k (the k-auto ARI delta is reported too)
        withinTolerances: within,
        mean: {
          int8: { auroc: meanOf((r) => r.int8.auroc), realisedFalseUncoveredRate: meanOf((r) => r.int8.realisedFalseUncoveredRate), ari: meanOf((r) => r.int8.ari) },
          fp32: { auroc: meanOf((r) => r.fp32.auroc), realisedFalseUncoveredRate: meanOf((r) => r.fp32.realisedFalseUncoveredRate), ari: meanOf((r) => r.fp32.ari) },
          ariInt8VsFp32Clusters: meanOf((r) => r.ariInt8VsFp32Clusters),
        },
        cosineInt8VsFp32: { queries: test.length, mean: +cosMean.toFixed(5), ...quantiles(cos, [0, 0.001, 0.01, 0.05, 0.5]) },
        perDraw,
        fullFit: {
          precision: cfg.embed.precision,
          workers,
          queries: train.length,
          seconds: +(full.timings.totalMs / 1000).toFixed(1),
          targetSeconds: 20,
          timings: Object.fromEntries(Object.entries(full.timings).map(([k, v]) => [k, Math.round(v)])),
          peakRssMB: Math.round(peak / 2 ** 20),
        },
      },
      null,
      2,
    ),
  );
}

/** A fit of the whole train set with the default settings, embedding included: its timings and peak RSS. */
async function fullFit(cfg: ReturnType<typeof loadConfig>, train: ReturnType<typeof loadBanking77>) {
  const e = await loadThreadedEmbedder(cfg.embed);
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const full = await fitCoverageModel(
    train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [] })),
    e,
    { ...DEFAULT_FIT, k: 'auto', source: 'banking77/train.csv', textField: 'text' },
  );
  clearInterval(timer);
  await e.close();
  return { full, peak, workers: e.workers };
}

/** --fit-only=N: only the full fit, N times (its time is the issue-12 target; the draws take minutes). */
async function fitOnly(times: number) {
  const cfg = loadConfig();
  const train = loadBanking77('train');
  const fits = [];
  for (let i = 0; i < times; i++) {
    const load = os.loadavg()[0];
    const { full, peak } = await fullFit(cfg, train);
    fits.push({
      seconds: +(full.timings.totalMs / 1000).toFixed(1),
      loadAverage1mAtStart: +load.toFixed(2),
      k: full.draft.params.k,
      timings: Object.fromEntries(Object.entries(full.timings).map(([k, v]) => [k, Math.round(v)])),
      peakRssMB: Math.round(peak / 2 ** 20),
    });
    console.error(JSON.stringify(fits[i]));
  }
  console.log(JSON.stringify({ bench: 'embed-quality (full fit only)', queries: train.length, precision: cfg.embed.precision, targetSeconds: 20, fits }, null, 2));
}

(args.has('fit-only') ? fitOnly(Number(args.get('fit-only')) || 3) : main()).catch((e) => {
  console.error(e);
  process.exit(1);
});
