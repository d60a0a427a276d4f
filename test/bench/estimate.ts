/**
 * The production-weighted eval score on Banking77 with a known truth (npm run bench; prints one JSON object).
 *
 * Once: a coverage model is fitted (real embedding model, k auto) on an eval set of `perIntent`
 * train queries of each of 67 intents (10 intents held out, never in the eval set). Every other
 * Banking77 query (the test split and the train queries not in the eval set, all 77 intents) is
 * embedded once and assigned by the model: the pool production draws from.
 *
 * Per draw (seeded, `draws` of them):
 *  - truth: each intent gets a failure probability, most small (Beta(1, 15), mean 6%), a fifth of
 *    them much worse (uniform 30–70%);
 *  - eval run: each eval case passes with its intent's probability;
 *  - production: `requests` queries drawn from the pool with an intent mix unlike the eval's
 *    (lognormal weights, σ = 1), held-out intents included; two scenarios (--bad-boost=1,3): the
 *    mix independent of failure, and the worse intents 3× as likely (production leans on the hard
 *    cases);
 *  - truth on covered traffic: the mean pass probability of the covered production requests;
 *  - the estimate (src/estimate, the same core `evalgap estimate` runs, the eval cases tagged with their
 *    intent: the within-cluster term's sub-groups) and its 90% interval, and plain post-stratification
 *    (the estimate without that term) with its sampling interval.
 * Options: --draws, --plan-draws, --per-intent, --requests, --held, --budget, --k, --bad-boost,
 * --seed (draws), --hold-seed (held-out intents), --bad-share (share of failing intents), --within=tilt|off,
 * --dump=FILE (each draw's cluster counts, truth and per-cluster true rates as JSONL, to study the estimator offline).
 * Reported: mean |raw − truth| and |estimate − truth|, their ratio, the interval's coverage and width,
 * and the "oracle": the post-stratified score computed with the eval cases' TRUE pass probabilities
 * (no sampling error at all): its error is what the method's assumption alone costs here; and
 * `decomposition`: truth − oracle split into production's lean among each cluster's tagged
 * sub-groups (what the within-cluster term estimates) and the covered requests of intents with no
 * eval case in their cluster (held-out intents, neighbours' queries: what no count shows), and
 * `unrepresentedTerm`: the share of them the estimate's unrepresented term infers (û) and the sd it adds.
 * `floors`: how close an estimator could come (the plain estimate's expected sampling error, one knowing the tagged
 * lean exactly, the unrepresented requests alone) and the lean inside clusters as a slope against the fitted one.
 *
 * Plan: on `planDraws` of the draws, 200 new eval cases (drawn from the pool's covered queries of
 * the chosen cluster, passing with their intent's probability) are placed by the plan (Neyman over
 * the covered clusters, `evalgap plan --covered-only`), in proportion to traffic, or uniformly over
 * the clusters with traffic; the reweighted score's 90% interval width after adding them.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import gammaRandom from '@stdlib/random-base-gamma';
import { loadConfig } from '../../src/config/index.js';
import { buildCoverageModel, dedupeCases, evalSetHash, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { BAND_LEVELS, BANDS } from '../../src/coverage/bands.js';
import { CoverageAssigner, type CoverageModel } from '../../src/coverage/model.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { proportionalAllocation, uniformAllocation } from '../../src/estimate/allocate.js';
import { planCases } from '../../src/estimate/plan.js';
import { estimateScore, type ClusterCounts } from '../../src/estimate/poststratify.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 200);
const planDraws = Number(args.get('plan-draws') ?? 50);
const perIntent = Number(args.get('per-intent') ?? 20);
const requests = Number(args.get('requests') ?? 5000);
const heldOutCount = Number(args.get('held') ?? 10);
const budget = Number(args.get('budget') ?? 200);
/** how much likelier the worse intents are in production than their lognormal weight (1: the mix is independent of failure) */
/** clusters: auto (the fit's choice) or a number */
const kArg = args.get('k') ?? 'auto';
const badBoosts = (args.get('bad-boost') ?? '1,3').split(',').map(Number);
/** the draws' seed, the held-out intents' seed, and the share of intents that fail much more (30–70%) */
const seed = Number(args.get('seed') ?? 20);
const holdSeed = Number(args.get('hold-seed') ?? 77);
const badShare = Number(args.get('bad-share') ?? 0.2);
/** the estimate's within-cluster term (src/estimate/poststratify.ts withinCluster): tilt (default) or off */
const withinCluster = (args.get('within') ?? 'tilt') as 'tilt' | 'off';
/** --dump=FILE: each draw's cluster counts, truth, raw and oracle as JSONL (to study the estimator offline without refitting) */
const dumpFile = args.get('dump');

const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
const sd = (x: number[]) => Math.sqrt(mean(x.map((v) => (v - mean(x)) ** 2)));
const corr = (x: number[], y: number[]) => {
  const mx = mean(x);
  const my = mean(y);
  const c = mean(x.map((v, i) => (v - mx) * (y[i] - my)));
  return c / (sd(x) * sd(y));
};

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'estimate', skipped: BANKING77_MISSING }));
    return;
  }
  const cfg = loadConfig();
  const embedder = await loadEmbedder(cfg.embed);
  const dim = embedder.dim;
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const trainCases = dedupeCases(train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] }))).unique;
  // embeddings cached in the temp folder by model and texts (shared with the gaps benchmark)
  const embedAll = async (texts: string[]): Promise<Float32Array> => {
    const key = createHash('sha256').update(embedder.modelChecksum).update(texts.join('\n')).digest('hex').slice(0, 16);
    const file = path.join(os.tmpdir(), `evalgap-bench-emb-${key}.f32`);
    if (fs.existsSync(file)) {
      const b = fs.readFileSync(file);
      return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
    console.error(`embedding ${texts.length} queries…`);
    const v = (await embedder.embed(texts)).vectors;
    fs.writeFileSync(file, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    return v;
  };
  const trainVec = await embedAll(trainCases.map((c) => c.text));
  const testVec = await embedAll(test.map((r) => r.text));

  // the eval set: the first `perIntent` train queries of each fitted intent
  const held = holdOut(cats, heldOutCount, holdSeed);
  const taken = new Map<string, number>();
  const evalIdx: number[] = [];
  const poolTrain: number[] = [];
  trainCases.forEach((c, i) => {
    const t = c.tags[0];
    if (!held.has(t) && (taken.get(t) ?? 0) < perIntent) {
      taken.set(t, (taken.get(t) ?? 0) + 1);
      evalIdx.push(i);
    } else poolTrain.push(i);
  });
  const evalCases = evalIdx.map((i) => trainCases[i]);
  const evalVec = new Float32Array(evalIdx.length * dim);
  evalIdx.forEach((i, j) => evalVec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim, maxTokens: embedder.maxTokens };
  const t0 = Date.now();
  const built = buildCoverageModel(evalCases, evalCases.length, evalSetHash(evalCases), evalVec, emb, { ...DEFAULT_FIT, k: kArg === 'auto' ? 'auto' : Number(kArg), source: 'banking77', textField: 'text' });
  const fitMs = Date.now() - t0;
  const m = built.draft;
  const k = m.params.k;
  const evalCluster = built.arrays.labels;
  // the cluster's group: its most frequent eval tag (as evalgap estimate reads it from the stored results)
  const groupOf = Array.from({ length: k }, (_, c) => {
    const counts = new Map<string, number>();
    evalCases.forEach((x, i) => evalCluster[i] === c && counts.set(x.tags[0], (counts.get(x.tags[0]) ?? 0) + 1));
    return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
  });

  // each cluster's eval tags (intents)
  const evalTags = Array.from({ length: k }, () => new Set<string>());
  evalCases.forEach((x, i) => evalTags[evalCluster[i]].add(x.tags[0]));
  // the production pool: the test split and the train queries not in the eval set, assigned once
  const pool: { intent: string }[] = [];
  const poolVec = new Float32Array((test.length + poolTrain.length) * dim);
  test.forEach((r, i) => {
    pool.push({ intent: r.category });
    poolVec.set(testVec.subarray(i * dim, i * dim + dim), i * dim);
  });
  poolTrain.forEach((ti, j) => {
    pool.push({ intent: trainCases[ti].tags[0] });
    poolVec.set(trainVec.subarray(ti * dim, ti * dim + dim), (test.length + j) * dim);
  });
  const model = { manifest: m, centroids: built.arrays.centroids, embeddings: evalVec, labels: evalCluster, cases: built.arrays.cases } as unknown as CoverageModel;
  const a = new CoverageAssigner(model).assign(poolVec, pool.length);
  const poolCluster = Int32Array.from(a.cluster.subarray(0, pool.length));
  const poolCovered = Uint8Array.from(a.covered.subarray(0, pool.length));
  // each pool query's coverage depth band (as evalgap run stores it in requests.coverage_band)
  const poolBand = Int8Array.from(a.band!.subarray(0, pool.length));
  const firstCoveredBand = BAND_LEVELS.indexOf('threshold') + 1;
  const coveredBandCount = BANDS - firstCoveredBand;
  // each pool query's KNN nearest eval cases (cosine; the vectors are unit): a finer reweighting than clusters, measured as an oracle below
  const KNN = 10;
  const nn = new Int32Array(pool.length * KNN);
  {
    const sims = new Float32Array(evalCases.length);
    for (let q = 0; q < pool.length; q++) {
      for (let j = 0; j < evalCases.length; j++) {
        let d = 0;
        for (let x = 0; x < dim; x++) d += poolVec[q * dim + x] * evalVec[j * dim + x];
        sims[j] = d;
      }
      const top = Array.from(sims.keys()).sort((a2, b2) => sims[b2] - sims[a2]).slice(0, KNN);
      nn.set(top, q * KNN);
    }
  }
  const byIntent = new Map<string, number[]>();
  pool.forEach((p, i) => byIntent.set(p.intent, [...(byIntent.get(p.intent) ?? []), i]));
  // covered pool queries of fitted intents per cluster: where new eval cases come from
  const newCasePool: number[][] = Array.from({ length: k }, () => []);
  pool.forEach((p, i) => {
    if (poolCovered[i] && !held.has(p.intent)) newCasePool[poolCluster[i]].push(i);
  });

  const g = gammaRandom.factory({ seed });
  const u = (g.PRNG as unknown as { normalized: () => number }).normalized;
  const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  const beta = (x: number, y: number) => {
    const p = g(x, 1);
    return p / (p + g(y, 1));
  };

  const scenarios: unknown[] = [];
  const norm = (x: number[]) => {
    const t = x.reduce((a2, b) => a2 + b, 0);
    return x.map((v) => v / t);
  };
  const sumRows = (xs: number[][]) => xs[0].map((_, i) => xs.reduce((a2, x) => a2 + x[i], 0));
  const lowerBound = (sh: number[], ref: number[]) => {
    let S = 0;
    let F = 0;
    let lb = 0;
    for (let b = 0; b < sh.length - 1; b++) {
      S += sh[b];
      F += ref[b];
      lb = Math.max(lb, (S - F) / (1 - F));
    }
    return lb;
  };
  const mb = m.calibration.bands!;
  const modelProfiles = {
    mixture: norm(mb.inScope.slice(firstCoveredBand)),
    newPhrasings: norm(mb.heldOut!.profile.slice(firstCoveredBand)),
    seen: norm(mb.inScope.map((x, i) => Math.max(1e-9, 2 * x - mb.heldOut!.profile[i])).slice(firstCoveredBand)),
    novelTopic: norm(mb.novel.slice(firstCoveredBand)),
  };
  for (const badBoost of badBoosts) {
  const rows: { samplingFloor: number; insideSlope: number; unrepShare: number; unrepSd: number; bandsTagged: number[]; bandsUntagged: number[]; deepUntaggedShare: number; coveredUntaggedShare: number; allEst: number; allInside: boolean; allWidth: number; allSlope: number; taggedPart: number; untaggedPart: number; untaggedShare: number; insideSampling: boolean; samplingWidth: number; slope: number; correction: number; plainEst: number; knnOracle: number; knnObserved: number; heldCoveredShare: number; truthFitted: number; oracle: number; raw: number; est: number; truth: number; inside: boolean; width: number; untested: number }[] = [];
  const planRows: { plan: number; proportional: number; uniform: number; placed: Record<string, number> }[] = [];
  for (let d = 0; d < draws; d++) {
    const fail = new Map(cats.map((c) => [c, u() < badShare ? 0.3 + 0.4 * u() : beta(1, 15)]));
    const passP = (intent: string) => 1 - fail.get(intent)!;
    // the eval run
    const n = new Array<number>(k).fill(0);
    const s = new Array<number>(k).fill(0);
    const outcome = evalCases.map((c) => (u() < passP(c.tags[0]) ? 1 : 0));
    evalCases.forEach((c, i) => {
      n[evalCluster[i]]++;
      s[evalCluster[i]] += outcome[i];
    });
    // production: an intent mix unlike the eval's, held-out intents included
    const w = cats.map((c) => Math.exp(normal()) * (fail.get(c)! > 0.25 ? badBoost : 1));
    const cum: number[] = [];
    w.reduce((acc, x, i) => (cum[i] = acc + x), 0);
    const cov = new Array<number>(k).fill(0);
    const unc = new Array<number>(k).fill(0);
    // covered requests per cluster and covered depth band; and (for the study of the estimator) those of intents with / without an eval case in their cluster
    const covBands = Array.from({ length: k }, () => new Array<number>(coveredBandCount).fill(0));
    const bandsTagged = new Array<number>(coveredBandCount).fill(0);
    const covBandsTagged = Array.from({ length: k }, () => new Array<number>(coveredBandCount).fill(0));
    const bandsUntagged = new Array<number>(coveredBandCount).fill(0);
    let truthSum = 0;
    const prodTruthByCluster = new Array<number>(k).fill(0);
    // covered requests whose intent is one of the cluster's eval tags (a sub-group the within-cluster term sees), and their true pass rate
    const prodTagged = new Array<number>(k).fill(0);
    const prodTaggedTruth = new Array<number>(k).fill(0);
    // covered requests per cluster and intent (for --dump: production's counts of each tagged sub-group)
    const prodByTag = Array.from({ length: k }, () => new Map<string, number>());
    let covered = 0;
    let heldCovered = 0;
    let fittedSum = 0;
    let knnOracleSum = 0;
    let knnObservedSum = 0;
        for (let r = 0; r < requests; r++) {
      const x = u() * cum[cum.length - 1];
      let j = 0;
      while (cum[j] < x) j++;
      const idx = byIntent.get(cats[j])!;
      const q = idx[Math.floor(u() * idx.length)];
      if (poolCovered[q]) {
        cov[poolCluster[q]]++;
        const bq = poolBand[q] - firstCoveredBand;
        covBands[poolCluster[q]][bq]++;
        if (evalTags[poolCluster[q]].has(pool[q].intent)) {
          bandsTagged[bq]++;
          covBandsTagged[poolCluster[q]][bq]++;
        }
        else bandsUntagged[bq]++;
        prodTruthByCluster[poolCluster[q]] += passP(pool[q].intent);
        if (evalTags[poolCluster[q]].has(pool[q].intent)) {
          prodTagged[poolCluster[q]]++;
          prodByTag[poolCluster[q]].set(pool[q].intent, (prodByTag[poolCluster[q]].get(pool[q].intent) ?? 0) + 1);
          prodTaggedTruth[poolCluster[q]] += passP(pool[q].intent);
        }
        truthSum += passP(pool[q].intent);
        covered++;
        if (held.has(pool[q].intent)) heldCovered++;
        else fittedSum += passP(pool[q].intent);
        let ko = 0;
        let kb = 0;
        for (let j = 0; j < KNN; j++) {
          const e = nn[q * KNN + j];
          ko += passP(evalCases[e].tags[0]);
          kb += outcome[e];
        }
        knnOracleSum += ko / KNN;
        knnObservedSum += kb / KNN;
      } else unc[poolCluster[q]]++;
    }
    const truth = truthSum / covered;
    // what the assumption alone costs: the post-stratified score with the eval cases' TRUE pass probabilities (no sampling error)
    const evalTrue = new Array<number>(k).fill(0);
    evalCases.forEach((c, i) => (evalTrue[evalCluster[i]] += passP(c.tags[0])));
    const oracle = cov.reduce((acc, x, c) => acc + (n[c] ? (x / covered) * (evalTrue[c] / n[c]) : 0), 0);
    // the eval results by sub-group (the case's tag, here its intent) within each cluster
    const sub = Array.from({ length: k }, () => new Map<string, { n: number; s: number }>());
    evalCases.forEach((c, i) => {
      const x = sub[evalCluster[i]].get(c.tags[0]) ?? { n: 0, s: 0 };
      x.n++;
      x.s += outcome[i];
      sub[evalCluster[i]].set(c.tags[0], x);
    });
    const counts = (add?: number[], addPassed?: number[]): ClusterCounts[] =>
      Array.from({ length: k }, (_, c) => ({
        cluster: c,
        label: `c${c}`,
        group: groupOf[c],
        evalCases: n[c] + (add?.[c] ?? 0),
        evalPassed: s[c] + (addPassed?.[c] ?? 0),
        covered: cov[c],
        uncovered: unc[c],
        subgroups: [...sub[c].values()],
        deepCovered: covBands[c][coveredBandCount - 1],
      }));
    const e = estimateScore(counts(), { draws: 2000, seed: d + 1, withinCluster });
    // the within-cluster term's slope fitted on all covered requests (as before the deepest band was used)
    const eAll = estimateScore(counts().map(({ deepCovered: _, ...c }) => c), { draws: 2000, seed: d + 1, withinCluster });
    // where truth − oracle comes from: production's lean among the cluster's tagged sub-groups (what the within-cluster
    // term can see) and the covered requests of intents with no eval case in their cluster (held-out intents, neighbours')
    let taggedPart = 0;
    let untaggedPart = 0;
    let untaggedShare = 0;
    for (let c = 0; c < k; c++) {
      if (!cov[c] || !n[c]) continue;
      const et = evalTrue[c] / n[c];
      taggedPart += (prodTaggedTruth[c] - prodTagged[c] * et) / covered;
      untaggedPart += (prodTruthByCluster[c] - prodTaggedTruth[c] - (cov[c] - prodTagged[c]) * et) / covered;
      untaggedShare += (cov[c] - prodTagged[c]) / covered;
    }
    // floors of the error (no estimator's output, numbers only the generator knows): the plain estimate's own sampling error
    // in expectation (E|N(0, Var)| with Var = Σ_c w_c² Σ_t n_t r_t (1 − r_t) / n_c², the eval results' binomial variance at
    // the true rates r_t of each cluster's sub-groups); and the realized lean inside clusters as a slope: taggedPart over
    // Σ_c w_c τ_c² with τ_c² the variance of the cluster's sub-groups' TRUE rates (eval weights), the slope the
    // within-cluster term would need
    let samplingVar = 0;
    let tau2True = 0;
    for (let c = 0; c < k; c++) {
      if (!cov[c] || !n[c]) continue;
      const wc = cov[c] / covered;
      const subs = [...sub[c].entries()].map(([t, x]) => ({ n: x.n, r: passP(t) }));
      const mc = subs.reduce((a2, x) => a2 + x.n * x.r, 0) / n[c];
      samplingVar += wc * wc * subs.reduce((a2, x) => a2 + x.n * x.r * (1 - x.r), 0) / (n[c] * n[c]);
      tau2True += wc * subs.reduce((a2, x) => a2 + x.n * (x.r - mc) ** 2, 0) / n[c];
    }
    const samplingFloor = Math.sqrt((2 / Math.PI) * samplingVar);
    const insideSlope = tau2True > 0 ? taggedPart / tau2True : 0;
    if (dumpFile) {
      // per cluster: the true pass rate of its covered production requests and of its eval cases
      fs.appendFileSync(dumpFile, JSON.stringify({ badBoost, draw: d, bandsTagged, bandsUntagged, covBandsTagged, ...(d === 0 ? { modelBands: m.calibration.bands } : {}), seed: d + 1, truth, raw: e.raw, oracle, counts: counts(), coveredBands: covBands, evalTrue: evalTrue.map((x, c) => (n[c] ? x / n[c] : null)), prodTrue: prodTruthByCluster.map((x, c) => (cov[c] ? x / cov[c] : null)), prodTagged, prodTaggedTrue: prodTaggedTruth.map((x, c) => (prodTagged[c] ? x / prodTagged[c] : null)), subTags: sub.map((m2) => [...m2.keys()]), subTrue: sub.map((m2) => [...m2.keys()].map(passP)), subProd: sub.map((m2, c) => [...m2.keys()].map((t) => prodByTag[c].get(t) ?? 0)) }) + '\n');
    }
    const nb = (x: number[]) => x.reduce((a2, b) => a2 + b, 0);
    rows.push({ samplingFloor, insideSlope, unrepShare: e.withinCluster?.unrepresented?.share ?? 0, unrepSd: e.withinCluster?.unrepresented?.sd ?? 0, bandsTagged, bandsUntagged, deepUntaggedShare: bandsUntagged[coveredBandCount - 1] / (bandsUntagged[coveredBandCount - 1] + bandsTagged[coveredBandCount - 1]), coveredUntaggedShare: nb(bandsUntagged) / (nb(bandsUntagged) + nb(bandsTagged)), allEst: eAll.estimate!, allInside: truth >= eAll.interval![0] && truth <= eAll.interval![1], allWidth: eAll.interval![1] - eAll.interval![0], allSlope: eAll.withinCluster?.slope ?? 0, taggedPart, untaggedPart, untaggedShare, insideSampling: truth >= e.samplingInterval![0] && truth <= e.samplingInterval![1], samplingWidth: e.samplingInterval![1] - e.samplingInterval![0], slope: e.withinCluster?.slope ?? 0, correction: e.withinCluster?.correction ?? 0, plainEst: e.estimate! - (e.withinCluster?.correction ?? 0), knnOracle: knnOracleSum / covered, knnObserved: knnObservedSum / covered, heldCoveredShare: heldCovered / covered, truthFitted: fittedSum / (covered - heldCovered), oracle, raw: e.raw, est: e.estimate!, truth, inside: truth >= e.interval![0] && truth <= e.interval![1], width: e.interval![1] - e.interval![0], untested: e.untested });

    if (d < planDraws) {
      const withTraffic = e.clusters.map((c, i) => (c.covered > 0 ? i : -1)).filter((i) => i >= 0);
      const plan = planCases(e, [], budget, { coveredOnly: true });
      const byPlan = new Array<number>(k).fill(0);
      plan.items.forEach((it) => (byPlan[Number(it.id)] = it.cases));
      const prop = new Array<number>(k).fill(0);
      proportionalAllocation(withTraffic.map((i) => cov[i]), budget).forEach((x, j) => (prop[withTraffic[j]] = x));
      const unif = new Array<number>(k).fill(0);
      uniformAllocation(withTraffic.length, budget).forEach((x, j) => (unif[withTraffic[j]] = x));
      const width = (alloc: number[]) => {
        const add = new Array<number>(k).fill(0);
        const addP = new Array<number>(k).fill(0);
        alloc.forEach((x, c) => {
          const src = newCasePool[c];
          if (!src.length) return; // nothing covered to draw new cases from in this cluster
          for (let i = 0; i < x; i++) {
            const q = src[Math.floor(u() * src.length)];
            add[c]++;
            if (u() < passP(pool[q].intent)) addP[c]++;
          }
        });
        // the sampling interval: added cases narrow the sampling error, not the assumption's term
        const r = estimateScore(counts(add, addP), { draws: 2000, seed: 1000 + d, withinCluster });
        return { width: r.samplingInterval![1] - r.samplingInterval![0], placed: add.reduce((a2, b) => a2 + b, 0) };
      };
      const wp = width(byPlan);
      const wr = width(prop);
      const wu = width(unif);
      planRows.push({ plan: wp.width, proportional: wr.width, uniform: wu.width, placed: { plan: wp.placed, proportional: wr.placed, uniform: wu.placed } });
    }
  }
  const errRaw = mean(rows.map((r) => Math.abs(r.raw - r.truth)));
  const errEst = mean(rows.map((r) => Math.abs(r.est - r.truth)));
  scenarios.push({
        badIntentBoost: badBoost,
        meanUntestedShare: mean(rows.map((r) => r.untested)),
        meanRaw: mean(rows.map((r) => r.raw)),
        meanEstimate: mean(rows.map((r) => r.est)),
        meanTruth: mean(rows.map((r) => r.truth)),
        meanAbsErrorRaw: errRaw,
        meanAbsErrorEstimate: errEst,
        errorRatio: errRaw / errEst,
        meanSignedErrorEstimate: mean(rows.map((r) => r.est - r.truth)),
        // the assumption's own bias: post-stratified with the eval cases' true pass probabilities
        meanSignedErrorOracle: mean(rows.map((r) => r.oracle - r.truth)),
        meanAbsErrorOracle: mean(rows.map((r) => Math.abs(r.oracle - r.truth))),
        // reweighting each request by its 10 nearest eval cases instead of its cluster (not what evalgap does: it would need
        // each request's nearest eval cases stored at ingest); oracle = with their true pass probabilities, observed = their results
        meanAbsErrorKnnOracle: mean(rows.map((r) => Math.abs(r.knnOracle - r.truth))),
        meanAbsErrorKnnObserved: mean(rows.map((r) => Math.abs(r.knnObserved - r.truth))),
        meanHeldOutShareOfCovered: mean(rows.map((r) => r.heldCoveredShare)),
        meanTruthFittedIntentsOnly: mean(rows.map((r) => r.truthFitted)),
        coverage90: rows.filter((r) => r.inside).length / rows.length,
        meanIntervalWidth: mean(rows.map((r) => r.width)),
        // plain post-stratification (no within-cluster term): its error and its interval (sampling error alone)
        meanAbsErrorPlain: mean(rows.map((r) => Math.abs(r.plainEst - r.truth))),
        errorRatioPlain: errRaw / mean(rows.map((r) => Math.abs(r.plainEst - r.truth))),
        coverage90SamplingOnly: rows.filter((r) => r.insideSampling).length / rows.length,
        meanSamplingIntervalWidth: mean(rows.map((r) => r.samplingWidth)),
        // the slope fitted on all covered requests instead of each cluster's deepest band (the estimate before)
        slopeOnAllCovered: {
          meanAbsErrorEstimate: mean(rows.map((r) => Math.abs(r.allEst - r.truth))),
          errorRatio: errRaw / mean(rows.map((r) => Math.abs(r.allEst - r.truth))),
          meanSignedErrorEstimate: mean(rows.map((r) => r.allEst - r.truth)),
          coverage90: rows.filter((r) => r.allInside).length / rows.length,
          meanIntervalWidth: mean(rows.map((r) => r.allWidth)),
          meanSlope: mean(rows.map((r) => r.allSlope)),
        },
        // covered requests by depth band (shallowest covered band first), those of intents with an eval case in their
        // cluster (represented) and without (unrepresented); the unrepresented share of covered requests and of the deepest band
        depthBands: {
          represented: norm(sumRows(rows.map((r) => r.bandsTagged))),
          unrepresented: norm(sumRows(rows.map((r) => r.bandsUntagged))),
          unrepresentedShareOfCovered: mean(rows.map((r) => r.coveredUntaggedShare)),
          unrepresentedShareOfDeepestBand: mean(rows.map((r) => r.deepUntaggedShare)),
          // the fit's profiles of the same bands: the calibration mixture (seen and new phrasings of tested intents, by
          // construction of the bands), new phrasings, seen phrasings (2 × mixture − new), a novel topic (its tag left out)
          model: modelProfiles,
          // the smallest unrepresented share the bands imply against a reference (u ≥ max_b (S(b) − F(b)) / (1 − F(b)))
          unrepresentedLowerBound: {
            calibrationMixture: mean(rows.map((r) => lowerBound(norm(sumRows([r.bandsTagged, r.bandsUntagged])), modelProfiles.mixture))),
            seenPhrasings: mean(rows.map((r) => lowerBound(norm(sumRows([r.bandsTagged, r.bandsUntagged])), modelProfiles.seen))),
          },
        },
        // the unrepresented term: the share of covered requests it estimates (true: decomposition.meanUntaggedShareOfCovered)
        // and the standard deviation of the error it carries in the interval (û · |λ| · V_G)
        unrepresentedTerm: {
          meanShare: mean(rows.map((r) => r.unrepShare)),
          sdShare: sd(rows.map((r) => r.unrepShare)),
          meanSd: mean(rows.map((r) => r.unrepSd)),
        },
        // the within-cluster term: the fitted slope (shrunk) and the correction it made
        meanSlope: mean(rows.map((r) => r.slope)),
        meanCorrection: mean(rows.map((r) => r.correction)),
        // the sampling error alone: the estimate against the oracle (the same reweighting with the eval cases' true pass probabilities)
        meanAbsErrorEstimateVsOracle: mean(rows.map((r) => Math.abs(r.est - r.oracle))),
        // the error's parts (signed, truth − oracle = taggedPart + untaggedPart): production's lean among the clusters'
        // tagged sub-groups, which the within-cluster term estimates (correction − taggedPart: its error), and covered
        // requests of intents with no eval case in their cluster, which no count shows
        decomposition: {
          meanUntaggedShareOfCovered: mean(rows.map((r) => r.untaggedShare)),
          meanTaggedPart: mean(rows.map((r) => r.taggedPart)),
          meanUntaggedPart: mean(rows.map((r) => r.untaggedPart)),
          meanCorrectionMinusTaggedPart: mean(rows.map((r) => r.correction - r.taggedPart)),
          sdCorrectionMinusTaggedPart: sd(rows.map((r) => r.correction - r.taggedPart)),
          sdUntaggedPart: sd(rows.map((r) => r.untaggedPart)),
          // the sampling error: the plain estimate against the oracle
          sdPlainMinusOracle: sd(rows.map((r) => r.plainEst - r.oracle)),
          sdEstimateError: sd(rows.map((r) => r.est - r.truth)),
          // the interval's implied standard deviation (width / 3.29)
          meanIntervalSd: mean(rows.map((r) => r.width / 3.29)),
        },
        // how close any estimator from these numbers can come (docs/estimate.md, "How far the targets are"): a third of the raw
        // score's error (the target); the plain estimate's sampling error in expectation (analytic, from the true rates); an
        // estimator with the observed results that knows production's lean among the tagged sub-groups exactly (plain +
        // taggedPart); and one that also has no sampling error (|untaggedPart|: what no count shows)
        floors: {
          errorTarget: errRaw / 3,
          samplingExpected: mean(rows.map((r) => r.samplingFloor)),
          knownTaggedLean: mean(rows.map((r) => Math.abs(r.plainEst + r.taggedPart - r.truth))),
          untaggedOnly: mean(rows.map((r) => Math.abs(r.untaggedPart))),
          // the lean inside clusters as a slope (taggedPart / Σ w τ² at the true sub-group rates) against the fitted slope
          // between clusters: mean, sd over the draws, and their correlation
          insideSlopeMean: mean(rows.map((r) => r.insideSlope)),
          insideSlopeSd: sd(rows.map((r) => r.insideSlope)),
          fittedSlopeSd: sd(rows.map((r) => r.slope)),
          slopeCorrelation: corr(rows.map((r) => r.slope), rows.map((r) => r.insideSlope)),
        },
        targets: { errorRatioAtLeast: 3, coverage90Within: [0.85, 0.95] },
        plan: {
          budget,
          draws: planRows.length,
          // sampling intervals (added cases do not narrow the assumption's term)
          widthBefore: mean(rows.slice(0, planRows.length).map((r) => r.samplingWidth)),
          widthPlan: mean(planRows.map((r) => r.plan)),
          widthProportional: mean(planRows.map((r) => r.proportional)),
          widthUniform: mean(planRows.map((r) => r.uniform)),
          planNarrowestShare: planRows.filter((r) => r.plan <= r.proportional && r.plan <= r.uniform).length / planRows.length,
          meanPlaced: {
            plan: mean(planRows.map((r) => r.placed.plan)),
            proportional: mean(planRows.map((r) => r.placed.proportional)),
            uniform: mean(planRows.map((r) => r.placed.uniform)),
          },
        },
        firstDraws: rows.slice(0, 3),
  });
  }
  console.log(
    JSON.stringify(
      {
        bench: 'estimate',
        data: 'banking77',
        draws,
        seed,
        holdOutSeed: holdSeed,
        badIntentShare: badShare,
        withinCluster,
        evalCases: evalCases.length,
        fittedIntents: cats.length - held.size,
        heldOutIntents: held.size,
        k,
        fitSeconds: fitMs / 1000,
        productionRequests: requests,
        poolQueries: pool.length,
        scenarios,
      },
      null,
      2,
    ),
  );
}

void main();
