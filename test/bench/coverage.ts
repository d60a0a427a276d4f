/**
 * Coverage-model quality and fit cost on Banking77 (npm run bench; prints JSON).
 *
 * Eval set = the train queries of the fitted intents; production under no shift = the test queries
 * of those intents (never seen by the fit); shift = the test queries of held-out intents.
 * For each seeded draw (17 of 77 intents held out), fit twice on the same embeddings: without tags
 * and with each case tagged with its intent. Score the test queries with the library function
 * behind `evalgap score`, and report against the scorer and calibration of before this change
 * (one pooled threshold at the 5% quantile of leave-one-out scores), computed in the same run:
 * - the realised uncovered rate on fitted-intent test queries, overall and per intent (the full
 *   distribution, pooled over draws), against the target and the model's expected-rate interval;
 * - per cluster: how often the realised rate falls inside the stored interval;
 * - AUROC held-out vs fitted intents, of the raw coverage score and of the score relative to the
 *   query's threshold (what the covered decision uses);
 * - ARI of the clusters against the intents.
 * Then a full fit (embedding included) of all 10,003 train queries: time, peak RSS, and the
 * calibration step against the leave-one-out pass it replaced, on the same index.
 */
import { loadConfig } from '../../src/config/index.js';
import type { Embedder } from '../../src/embed/embedder.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { buildCoverageModel, dedupeCases, DEFAULT_FIT, evalSetHash, fitCoverageModel } from '../../src/coverage/fit.js';
import { CoverageIndex } from '../../src/coverage/index.js';
import { adjustedRandIndex, auroc } from '../../src/coverage/metrics.js';
import { CoverageAssigner, type Manifest } from '../../src/coverage/model.js';
import { scoreQueries, type ScoredLine } from '../../src/coverage/score.js';
import { quantile } from '../../src/coverage/vec.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 5);
const heldOutCount = Number(args.get('held') ?? 17);
const kArg = args.get('k') ?? 'auto';

const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function distribution(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return {
    n: s.length,
    mean: r4(mean(s)),
    p10: r4(quantile(s, 0.1)),
    p25: r4(quantile(s, 0.25)),
    p50: r4(quantile(s, 0.5)),
    p75: r4(quantile(s, 0.75)),
    p90: r4(quantile(s, 0.9)),
    max: r4(s[s.length - 1]),
  };
}

/** An Embedder that returns vectors embedded once up front (the fit and score code under test is unchanged). */
function lookupEmbedder(base: Embedder, texts: string[], vectors: Float32Array): Embedder {
  const dim = base.dim;
  const row = new Map<string, number>();
  texts.forEach((t, i) => row.has(t) || row.set(t, i));
  return {
    modelName: base.modelName,
    modelChecksum: base.modelChecksum,
    dim,
    maxTokens: base.maxTokens,
    async embed(ts: readonly string[]) {
      const v = new Float32Array(ts.length * dim);
      ts.forEach((t, i) => {
        const r = row.get(t);
        if (r === undefined) throw new Error(`not pre-embedded: ${t}`);
        v.set(vectors.subarray(r * dim, r * dim + dim), i * dim);
      });
      return { vectors: v } as Awaited<ReturnType<Embedder['embed']>>;
    },
  };
}

interface Outcome {
  overall: number;
  perIntent: Map<string, number>;
  heldOutUncovered: number;
  aurocScore: number;
  aurocRelative: number;
}

function outcome(
  test: { text: string; category: string }[],
  held: Set<string>,
  uncovered: (i: number) => boolean,
  score: (i: number) => number,
  relative: (i: number) => number,
): Outcome {
  const per = new Map<string, [number, number]>();
  let fitN = 0;
  let fitU = 0;
  let heldN = 0;
  let heldU = 0;
  test.forEach((r, i) => {
    const u = uncovered(i) ? 1 : 0;
    if (held.has(r.category)) {
      heldN++;
      heldU += u;
      return;
    }
    fitN++;
    fitU += u;
    const p = per.get(r.category) ?? [0, 0];
    p[0]++;
    p[1] += u;
    per.set(r.category, p);
  });
  const isHeld = test.map((r) => held.has(r.category));
  return {
    overall: fitU / fitN,
    perIntent: new Map([...per].map(([c, [n, u]]) => [c, u / n])),
    heldOutUncovered: heldU / heldN,
    aurocScore: auroc(Float64Array.from(test, (_, i) => -score(i)), isHeld),
    aurocRelative: auroc(Float64Array.from(test, (_, i) => -relative(i)), isHeld),
  };
}

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
  const testEmbedder = lookupEmbedder(embedder, test.map((r) => r.text), testVec);
  const testItems = test.map((r, i) => ({ line: i + 1, text: r.text }));

  type Mode = 'before' | 'untagged' | 'tagged';
  const modes: Mode[] = ['before', 'untagged', 'tagged'];
  const perDraw: Record<string, unknown>[] = [];
  const pooled = Object.fromEntries(modes.map((m) => [m, { perIntent: [] as number[], outcomes: [] as Outcome[] }])) as Record<
    Mode,
    { perIntent: number[]; outcomes: Outcome[] }
  >;
  const clusterCheck = { untagged: { inside: 0, clusters: 0 }, tagged: { inside: 0, clusters: 0 } };
  const overallInside = { untagged: 0, tagged: 0 };
  const expected = { untagged: [] as number[], tagged: [] as number[] };
  for (let d = 0; d < draws; d++) {
    const held = holdOut(cats, heldOutCount, 1000 + d);
    const rows = trainCases.map((c, i) => [c, i] as const).filter(([c]) => !held.has(c.tags[0]));
    const vec = new Float32Array(rows.length * dim);
    rows.forEach(([, i], j) => vec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
    const tagged = rows.map(([c]) => c);
    const untagged = tagged.map((c) => ({ ...c, tags: [] }));
    const opts = { ...DEFAULT_FIT, k: kArg === 'auto' ? ('auto' as const) : Number(kArg), source: 'banking77', textField: 'text' };
    const t0 = performance.now();
    const bu = buildCoverageModel(untagged, untagged.length, evalSetHash(untagged), vec, emb, opts);
    const buildMs = performance.now() - t0;
    const bt = buildCoverageModel(tagged, tagged.length, evalSetHash(tagged), vec, emb, opts, new Date(), bu.kChoice ?? undefined);
    const row: Record<string, unknown> = { draw: d, k: bu.draft.params.k, buildMs: Math.round(buildMs) };

    // before: the same index, one pooled threshold at the target quantile of leave-one-out scores
    {
      const m = bu.draft;
      const index = new CoverageIndex(bu.arrays.centroids, m.params.k, vec, bu.arrays.labels, dim, m.params);
      const tl = performance.now();
      const loo = Float32Array.from(index.leaveOneOutScores(vec)).sort();
      const looMs = performance.now() - tl;
      const th = quantile(loo, opts.targetRate);
      const a = index.assign(testVec, test.length, th);
      const o = outcome(test, held, (i) => !a.covered[i], (i) => a.coverage[i], (i) => a.coverage[i] - th);
      pooled.before.outcomes.push(o);
      pooled.before.perIntent.push(...o.perIntent.values());
      row.before = { realised: r4(o.overall), auroc: r4(o.aurocScore), heldOutUncovered: r4(o.heldOutUncovered), looMs: Math.round(looMs) };
    }
    for (const [mode, built] of [
      ['untagged', bu],
      ['tagged', bt],
    ] as const) {
      const manifest = { ...built.draft, files: {} } as unknown as Manifest;
      const assigner = new CoverageAssigner({ manifest, ...built.arrays });
      const res: ScoredLine[] = [];
      await scoreQueries(testItems, testEmbedder, assigner, (r) => res.push(r as ScoredLine));
      const o = outcome(test, held, (i) => !res[i].covered, (i) => res[i].coverage, (i) => res[i].coverage - res[i].threshold);
      pooled[mode].outcomes.push(o);
      pooled[mode].perIntent.push(...o.perIntent.values());
      const c = manifest.calibration;
      const inside = o.overall >= c.expectedRateInterval[0] && o.overall <= c.expectedRateInterval[1];
      overallInside[mode] += inside ? 1 : 0;
      expected[mode].push(c.expectedRate);
      // per cluster: the realised rate of fitted-intent test queries assigned to it, against its interval
      const byCluster = new Map<number, [number, number]>();
      test.forEach((r, i) => {
        if (held.has(r.category)) return;
        const e = byCluster.get(res[i].cluster) ?? [0, 0];
        e[0]++;
        e[1] += res[i].covered ? 0 : 1;
        byCluster.set(res[i].cluster, e);
      });
      for (const [cl, [n, u]] of byCluster) {
        if (n < 20) continue; // too few test queries to judge one cluster
        const iv = manifest.clusters[cl].expectedRateInterval;
        clusterCheck[mode].clusters++;
        if (u / n >= iv[0] && u / n <= iv[1]) clusterCheck[mode].inside++;
      }
      row[mode] = {
        realised: r4(o.overall),
        expected: r4(c.expectedRate),
        expectedInterval: c.expectedRateInterval.map(r4),
        inside,
        perIntentP90: r4(quantile([...o.perIntent.values()].sort((a, b) => a - b), 0.9)),
        auroc: r4(o.aurocScore),
        aurocRelative: r4(o.aurocRelative),
        heldOutUncovered: r4(o.heldOutUncovered),
        scorer: manifest.scorer.kind,
        regions: manifest.calibration.regions,
        ari: r4(adjustedRandIndex(built.arrays.labels, tagged.map((c) => c.tags[0]))),
      };
    }
    perDraw.push(row);
    console.error(JSON.stringify(row));
  }

  const summary = (mode: Mode) => {
    const os = pooled[mode].outcomes;
    return {
      realisedUncoveredRate: { mean: r4(mean(os.map((o) => o.overall))), min: r4(Math.min(...os.map((o) => o.overall))), max: r4(Math.max(...os.map((o) => o.overall))) },
      perIntentRealised: distribution(pooled[mode].perIntent),
      perIntentRates: pooled[mode].perIntent.map(r4).sort((a, b) => a - b),
      auroc: r4(mean(os.map((o) => o.aurocScore))),
      aurocRelativeToThreshold: r4(mean(os.map((o) => o.aurocRelative))),
      heldOutUncoveredRate: r4(mean(os.map((o) => o.heldOutUncovered))),
      ...(mode === 'before'
        ? {}
        : {
            expectedRate: r4(mean(expected[mode])),
            drawsRealisedInsideInterval: `${overallInside[mode]} of ${draws}`,
            clustersRealisedInsideInterval: `${clusterCheck[mode].inside} of ${clusterCheck[mode].clusters} (clusters with ≥ 20 test queries, pooled over draws)`,
          }),
    };
  };

  // full fit, embedding included, of the whole train set (tagged: what a tagged eval set costs)
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const full = await fitCoverageModel(
    train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] })),
    embedder,
    { ...DEFAULT_FIT, k: kArg === 'auto' ? 'auto' : Number(kArg), source: 'banking77/train.csv', textField: 'text' },
  );
  clearInterval(timer);
  peak = Math.max(peak, process.memoryUsage().rss);
  // the calibration pass it replaced (leave-one-out + one quantile), on the same index
  const fm = full.draft;
  const fIndex = new CoverageIndex(full.arrays.centroids, fm.params.k, full.arrays.embeddings, full.arrays.labels, dim, fm.params);
  const tl = performance.now();
  const looSorted = Float32Array.from(fIndex.leaveOneOutScores(full.arrays.embeddings)).sort();
  quantile(looSorted, DEFAULT_FIT.targetRate);
  const looMs = performance.now() - tl;
  console.log(
    JSON.stringify(
      {
        bench: 'coverage',
        data: 'banking77',
        draws,
        heldOutIntents: heldOutCount,
        targetRate: DEFAULT_FIT.targetRate,
        settings: { nearDuplicateCosine: DEFAULT_FIT.nearDuplicateCosine, minClusterCases: DEFAULT_FIT.minClusterCases },
        before: summary('before'),
        untagged: summary('untagged'),
        tagged: summary('tagged'),
        perDraw,
        fullFit: {
          queries: train.length,
          uniqueQueries: fm.evalSet.uniqueCases,
          k: fm.params.k,
          seconds: full.timings.totalMs / 1000,
          timings: Object.fromEntries(Object.entries(full.timings).map(([k, v]) => [k, Math.round(v)])),
          calibrateMsBefore: Math.round(looMs),
          secondsWithBeforeCalibration: (full.timings.totalMs - full.timings.calibrateMs + looMs) / 1000,
          peakRssMB: Math.round(peak / 2 ** 20),
          expectedRate: r4(fm.calibration.expectedRate),
          expectedRateInterval: fm.calibration.expectedRateInterval.map(r4),
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
