/**
 * Coverage-model quality and fit cost on Banking77 (npm run bench; prints JSON).
 * For each of 5 seeded draws: fit on the train rows of 60 of 77 intents, score the test rows of
 * all 77, report AUROC (held-out vs fitted intents), realised false-uncovered rate on fitted
 * intents against the calibrated target, and ARI of the clusters against the true intents.
 * Then time a full fit (embedding included) of all 10,003 train queries and its peak RSS.
 */
import { loadConfig } from '../../src/config/index.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { buildCoverageModel, dedupeCases, evalSetHash, fitCoverageModel, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { CoverageIndex } from '../../src/coverage/index.js';
import { adjustedRandIndex, auroc } from '../../src/coverage/metrics.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 5);
const heldOutCount = Number(args.get('held') ?? 17);
const kArg = args.get('k') ?? 'auto';

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'coverage', skipped: BANKING77_MISSING }));
    return;
  }
  const cfg = loadConfig();
  const embedder = await loadEmbedder(cfg.embed);
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim: embedder.dim, maxTokens: embedder.maxTokens };
  const dim = embedder.dim;

  // embed everything once; each draw reuses the vectors (the fit itself is pure given embeddings)
  const trainCases = dedupeCases(train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] }))).unique;
  const trainVec = (await embedder.embed(trainCases.map((c) => c.text))).vectors;
  const testVec = (await embedder.embed(test.map((r) => r.text))).vectors;

  const results = [];
  for (let d = 0; d < draws; d++) {
    const held = holdOut(cats, heldOutCount, 1000 + d);
    const rows = trainCases.map((c, i) => [c, i] as const).filter(([c]) => !held.has(c.tags[0]));
    const vec = new Float32Array(rows.length * dim);
    rows.forEach(([, i], j) => vec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
    const cases = rows.map(([c]) => c);
    const t = performance.now();
    const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vec, emb, {
      ...DEFAULT_FIT,
      k: kArg === 'auto' ? 'auto' : Number(kArg),
      source: 'banking77',
      textField: 'text',
    });
    const buildMs = performance.now() - t;
    const m = built.draft;
    const index = new CoverageIndex(built.arrays.centroids, m.params.k, vec, built.arrays.labels, dim, m.params);
    const scores = index.assign(testVec, test.length, m.calibration.threshold);
    const isHeld = test.map((r) => held.has(r.category));
    // a higher "uncoveredness" (negative coverage) should mark held-out intents
    const au = auroc(Array.from(scores.coverage, (s) => -s), isHeld);
    let fitN = 0;
    let fitUncovered = 0;
    let heldN = 0;
    let heldUncovered = 0;
    test.forEach((r, i) => {
      if (isHeld[i]) {
        heldN++;
        heldUncovered += scores.covered[i] ? 0 : 1;
      } else {
        fitN++;
        fitUncovered += scores.covered[i] ? 0 : 1;
      }
    });
    results.push({
      draw: d,
      k: m.params.k,
      auroc: au,
      targetFalseUncoveredRate: m.calibration.targetFalseUncoveredRate,
      realisedFalseUncoveredRate: fitUncovered / fitN,
      heldOutUncoveredRate: heldUncovered / heldN,
      ari: adjustedRandIndex(built.arrays.labels, cases.map((c) => c.tags[0])),
      buildMs: Math.round(buildMs),
    });
    console.error(JSON.stringify(results[results.length - 1]));
  }
  const mean = (f: (r: (typeof results)[number]) => number) => results.reduce((a, r) => a + f(r), 0) / results.length;

  // full fit, embedding included, of the whole train set
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const full = await fitCoverageModel(
    train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [] })),
    embedder,
    { ...DEFAULT_FIT, k: kArg === 'auto' ? 'auto' : Number(kArg), source: 'banking77/train.csv', textField: 'text' },
  );
  clearInterval(timer);
  peak = Math.max(peak, process.memoryUsage().rss);
  console.log(
    JSON.stringify(
      {
        bench: 'coverage',
        data: 'banking77',
        draws,
        heldOutIntents: heldOutCount,
        mean: {
          k: mean((r) => r.k),
          auroc: mean((r) => r.auroc),
          targetFalseUncoveredRate: mean((r) => r.targetFalseUncoveredRate),
          realisedFalseUncoveredRate: mean((r) => r.realisedFalseUncoveredRate),
          heldOutUncoveredRate: mean((r) => r.heldOutUncoveredRate),
          ari: mean((r) => r.ari),
        },
        perDraw: results,
        fullFit: {
          queries: train.length,
          uniqueQueries: full.draft.evalSet.uniqueCases,
          k: full.draft.params.k,
          seconds: full.timings.totalMs / 1000,
          timings: Object.fromEntries(Object.entries(full.timings).map(([k, v]) => [k, Math.round(v)])),
          peakRssMB: Math.round(peak / 2 ** 20),
        },
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
