/**
 * Monitor benchmark on Banking77 (npm run bench; prints one JSON object).
 *
 * Fit a coverage model with the real embedding model on train rows of 60 of 77 intents, embed and
 * assign the test rows once, then build traffic at 20 requests/s of simulated time (two agents) by
 * resampling those stored assignments, window by window (5-minute windows, the store's bucket):
 *  - no shift, 30 days, shuffled (i.i.d. requests) and realistic (sessions repeating a query, a
 *    daily cycle in the intent mix, a night/day volume swing): alerts per rule = false alerts;
 *  - shifts at a change point after a day of reference: 5% of traffic from the 17 held-out
 *    intents; one fitted cluster's share tripled; escalations in one cluster 5% → 20%. Detection
 *    delay in requests after the change (for escalation: requests of that cluster), and its ratio
 *    to Lorden's ln(ARL)/KL for the measured pre/post rates, ARL = e^h of the detector that fired.
 *    Measured at 5-minute windows (delay quantised to 6,000 requests a window) and at 30-second
 *    windows after the change (the detector's own delay).
 */
import { loadConfig } from '../../src/config/index.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { buildCoverageModel, dedupeCases, evalSetHash, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { createHash } from 'node:crypto';
import { splitCheckpoint } from '../../src/store/checkpoint-parts.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BANDS } from '../../src/coverage/bands.js';
import { CoverageAssigner, loadCoverageModel, saveCoverageModel } from '../../src/coverage/model.js';
import { backtest, composeEvaluators, createEvaluateWindow, DEFAULT_MONITOR, novelSessionRules, novelSessionsThreshold, scoreDetections, reportedThresholds } from '../../src/monitor/index.js';
import { DEFAULT_NOVEL_SESSIONS, fitSessionEvalue } from '../../src/monitor/session-novel.js';
import { SESSION_GROUPS, sessionGroup } from '../../src/coverage/session-reference.js';
import { klBernoulli } from '../../src/monitor/stats.js';
import type { MonitorContext, RuleName, WindowCounts } from '../../src/monitor/types.js';
import { heldOutDeepOf, sessionReferenceOf } from '../../src/alert/runner.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';
import { sessionStream, stream, type Cell, type SessionStreamSpec, type StreamSpec } from '../helpers/monitor-sim.js';
import { betaRates } from '../helpers/monitor-sim.js';
import { rng } from '../../src/monitor/stats.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const DAYS = Number(args.get('days') ?? 30);
const REPS = Number(args.get('reps') ?? 10);
/** the evaluation window of the no-shift runs and of the whole default shift runs (the monitor's default) */
const WINDOW = Number(args.get('window') ?? 30);
/** eval cases per fitted intent (default: every train row of the fitted intents) */
const PER_INTENT = Number(args.get('per-intent') ?? Infinity);
/** --only=shuffled|realistic|shifts: run one part; --seeds=2,3: the realistic no-shift runs' seeds */
const ONLY = args.get('only');
const SEEDS = (args.get('seeds') ?? '2,3').split(',').map(Number);
/** --shifts=novel_5pct,cluster_tripled: run only these shifts */
const SHIFTS = args.get('shifts')?.split(',');
const RATE = 20;
/** --only=sessions: the session-traffic part, at these volumes (requests/s) */
const SESSION_RATES = (args.get('rates') ?? '0.05,0.5,20').split(',').map(Number);
const SESSION_DAYS = Number(args.get('session-days') ?? 30);
/** --novel-share=0.2: the share of traffic moving to the held-out intents in the novel shifts (default 5%) */
const NOVEL_SHARE = Number(args.get('novel-share') ?? 0.05);
/** --session-seed=N: the seed of the session no-shift run (default 5) */
const SESSION_SEED = Number(args.get('session-seed') ?? 5);
/** runs per shift and volume (default: 1 at ≥ 5 requests/s, 2 below) */
const SESSION_REPS = args.has('session-reps') ? Number(args.get('session-reps')) : null;
/** --hour-correlation=bound|measured: the monitor's hourCorrelation option in the session runs (default: the monitor's default) */
const HOUR_CORRELATION = args.get('hour-correlation') as 'bound' | 'measured' | undefined;
/** --session-parts=noshift,shifts[,fitgrowth] */
const SESSION_PARTS = (args.get('session-parts') ?? 'noshift,shifts').split(',');
/** shift runs stop this many days after the change (default 2 at ≥ 5 requests/s, else the horizon) */
const CAP_DAYS_ARG = args.has('session-cap-days') ? Number(args.get('session-cap-days')) : null;
/**
 * --escalation-beta=A,B: in the no-shift session runs, each cluster escalates at its own rate drawn
 * once from Beta(A, B) (default: every cluster at 5%), so that the escalation rules' between-cluster
 * spread is exercised
 */
const ESC_BETA = args.get('escalation-beta')?.split(',').map(Number) as [number, number] | undefined;
/** --novel-sessions=off: the session runs without the novel_sessions rule (src/monitor/session-novel.ts; default on) */
const NOVEL_SESSIONS = args.get('novel-sessions') !== 'off';
/** --fit-sessions=off: novel_sessions without the model's fit-time session reference (it then waits for production history, as before it) */
const FIT_SESSIONS = args.get('fit-sessions') !== 'off';
/**
 * --state-bytes: in the session no-shift runs, the JSON size of the monitor's state (what the runner
 * checkpoints after every window) at the end of each simulated day, by part, and how the store
 * writes it (src/store/checkpoint-parts.ts: the window's row and the reference histories stored once)
 * (`stateBytes`); the bytes written over the last simulated day, whole state every window against
 * the window's row plus new parts (`checkpointBytesLastDay`); every alert of the run in full
 * (`allAlerts`) and a hash of every finding (`findingsSha256`), to compare two runs' decisions
 */
const STATE_BYTES = args.has('state-bytes');
let CAP_DAYS = Infinity;
const AGENTS = ['support', 'sales'];
const DAY = 86400_000;
const START = Date.parse('2026-01-05T00:00:00.000Z');

const jsonBytes = (x: unknown) => Buffer.byteLength(JSON.stringify(x) ?? '');
/** a record's JSON bytes by key, the `scopes` maps' entries summed key by key over scopes (two levels) */
function bytesByPart(x: unknown, depth = 2): Record<string, unknown> | number {
  if (depth === 0 || x === null || typeof x !== 'object' || Array.isArray(x)) return jsonBytes(x);
  if (Object.keys(x).length > 16) return { total: jsonBytes(x), count: Object.keys(x).length };
  const out: Record<string, unknown> = { total: jsonBytes(x) };
  for (const [k, v] of Object.entries(x as Record<string, unknown>)) {
    if (k === 'scopes' && v && typeof v === 'object') {
      const by: Record<string, number> = { total: jsonBytes(v), count: Object.keys(v).length };
      for (const sc of Object.values(v as Record<string, unknown>))
        if (sc && typeof sc === 'object') for (const [f, y] of Object.entries(sc as Record<string, unknown>)) by[f] = (by[f] ?? 0) + jsonBytes(y);
      out[k] = by;
    } else out[k] = bytesByPart(v, depth - 1);
  }
  return out;
}

/** the checkpoint's row (skeleton) and its parts, as the store writes a state (src/store/checkpoint-parts.ts) */
function checkpointRow(json: string) {
  const { skeleton, parts } = splitCheckpoint(json);
  const b = Buffer.byteLength;
  return { state: b(json), row: b(skeleton), parts: parts.length, partBytes: parts.reduce((a, p) => a + b(p.body), 0) };
}

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'monitor', skipped: BANKING77_MISSING }));
    return;
  }
  const t0 = performance.now();
  const cfg = loadConfig();
  const embedder = await loadEmbedder(cfg.embed);
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const held = holdOut(cats, 17, 1000);
  // fit on the train rows of the fitted intents (all of them unless --per-intent): the real fit API and model
  const perIntent = new Map<string, number>();
  const fitRows = train.filter((r) => !held.has(r.category) && (perIntent.set(r.category, (perIntent.get(r.category) ?? 0) + 1).get(r.category)! <= PER_INTENT));
  const cases = dedupeCases(fitRows.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] }))).unique;
  const vec = (await embedder.embed(cases.map((c) => c.text))).vectors;
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim: embedder.dim, maxTokens: embedder.maxTokens };
  const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vec, emb, { ...DEFAULT_FIT, k: 'auto', source: 'banking77', textField: 'text' });
  const m = built.draft;
  const testVec = (await embedder.embed(test.map((r) => r.text))).vectors;
  // the model as evalgap run loads it (per-region thresholds and coverage depth bands)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-bench-monitor-'));
  saveCoverageModel(dir, built.draft, built.arrays);
  const assigner = new CoverageAssigner(loadCoverageModel(dir));
  const a = assigner.assign(testVec, test.length);
  // the model file was only needed to load it as `run` does
  fs.rmSync(dir, { recursive: true, force: true });
  const B = m.calibration.bands ? BANDS : 0;
  const fitSeconds = (performance.now() - t0) / 1000;

  // cells: distinct (cluster, uncovered) of the test rows; each intent's mix over cells
  const cellIndex = new Map<string, number>();
  const cells: Cell[] = [];
  const intents = [...new Set(test.map((r) => r.category))].sort();
  const frac = intents.map(() => new Map<number, number>());
  test.forEach((r, i) => {
    const band = a.band?.[i];
    const key = `${a.cluster[i]}|${a.covered[i]}|${band ?? ''}`;
    if (!cellIndex.has(key)) {
      cellIndex.set(key, cells.length);
      cells.push({ cluster: a.cluster[i], uncovered: !a.covered[i], ...(band !== undefined ? { band } : {}) });
    }
    const f = frac[intents.indexOf(r.category)];
    f.set(cellIndex.get(key)!, (f.get(cellIndex.get(key)!) ?? 0) + 1);
  });
  const F = frac.map((f) => {
    const t = [...f.values()].reduce((x, y) => x + y, 0);
    const row = new Array<number>(cells.length).fill(0);
    for (const [c, v] of f) row[c] = v / t;
    return row;
  });
  const isHeld = intents.map((c) => held.has(c));
  const fittedIdx = intents.map((_, j) => j).filter((j) => !isHeld[j]);
  const heldIdx = intents.map((_, j) => j).filter((j) => isHeld[j]);
  const r = rng(99);
  const phase = intents.map(() => r());
  const cellWeights = (intentW: number[]) => {
    const w = new Array<number>(cells.length).fill(0);
    intentW.forEach((x, j) => {
      if (x > 0) for (let c = 0; c < cells.length; c++) w[c] += x * F[j][c];
    });
    return w;
  };
  const intentWeights = (t: number, cycle: number, novel: number) => {
    const h = ((t / 3600000) % 24) / 24;
    const w = intents.map((_, j) => (isHeld[j] ? 0 : 1 + cycle * Math.sin(2 * Math.PI * (h + phase[j]))));
    const s = w.reduce((x, y) => x + y, 0);
    return w.map((x, j) => (isHeld[j] ? novel / heldIdx.length : ((1 - novel) * x) / s));
  };

  const ctx: MonitorContext = {
    modelVersion: 'bench',
    // as the monitor takes it from the model (contextFromManifest): the expected rate and its interval
    calibratedRate: m.calibration.expectedRate || m.calibration.targetFalseUncoveredRate,
    calibratedRateInterval: m.calibration.expectedRateInterval,
    evalShares: Object.fromEntries(m.clusters.map((c) => [c.id, c.share])),
    labels: Object.fromEntries(m.clusters.map((c) => [c.id, c.label])),
    ...(m.calibration.bands ? { novelProfile: m.calibration.bands.novel } : {}),
    ...(m.calibration.bands?.heldOut ? { heldOutDeep: heldOutDeepOf(m.calibration.bands.heldOut) } : {}),
    ...(m.calibration.bands?.sessions && FIT_SESSIONS ? { sessionReference: sessionReferenceOf(m.calibration.bands.sessions) } : {}),
  };
  const baseCells = cellWeights(intentWeights(0, 0, 0));
  const pUncPre = baseCells.reduce((s, w, c) => s + (cells[c].uncovered ? w : 0), 0);
  const clusterShare = (w: number[], k: number) => w.reduce((s, x, c) => s + (cells[c].cluster === k ? x : 0), 0);

  // ---- no shift, 30 days ----
  const rules: RuleName[] = ['uncovered_share', 'uncovered_vs_calibrated', 'uncovered_budget', 'cluster_mix', 'escalation', 'uncovered_escalation', 'eval_mismatch'];
  const noShift = (realistic: boolean, seed = realistic ? 2 : 1) => {
    const spec: StreamSpec = {
      start: new Date(START).toISOString(),
      windows: (DAYS * DAY) / (WINDOW * 1000),
      windowSeconds: WINDOW,
      ...(B ? { bands: B } : {}),
      ratePerSecond: RATE,
      volumeSwing: realistic ? 0.7 : 0,
      agents: AGENTS,
      sessionMean: realistic ? 3 : 1,
      cells,
      weights: realistic ? (t) => cellWeights(intentWeights(t, 0.5, 0)) : () => baseCells,
      modelVersion: 'bench',
      seed,
    };
    const t = performance.now();
    const res = backtest(stream(spec), ctx);
    const per = Object.fromEntries(rules.map((x) => [x, res.alerts.filter((al) => al.rule === x).length]));
    return {
      days: DAYS,
      windows: res.windows,
      requests: Math.round(DAYS * 86400 * RATE * (realistic ? 1 - 0.7 / 2 : 1)),
      alertsPerRule: per,
      // the realised uncovered rate exceeds the fit's calibrated target on this data, so that rule
      // reports a true fact, not a false alarm
      falseAlertsPerRule: Object.fromEntries(rules.filter((x) => x !== 'uncovered_vs_calibrated').map((x) => [x, per[x]])),
      uncoveredVsCalibratedFiring: per.uncovered_vs_calibrated > 0,
      // the uncovered rate of the traffic hour by hour (the daily cycle moves it around the calibrated rate)
      uncoveredRateByHour: (() => {
        const rates = Array.from({ length: 24 }, (_, h) => {
          const w = spec.weights(START + h * 3600_000, AGENTS[0]);
          return w.reduce((acc, x, c) => acc + (cells[c].uncovered ? x : 0), 0);
        });
        return { min: Math.min(...rates), max: Math.max(...rates) };
      })(),
      seed,
      // what fired (every alert of a no-shift run is listed, with its summary)
      alerts: res.alerts.slice(0, 20).map((al) => ({ rule: al.rule, agent: al.scope.agent, cluster: al.scope.cluster, onset: al.onset, summary: al.summary })),
      stateJsonBytes: JSON.stringify(res.state).length,
      seconds: Math.round((performance.now() - t) / 100) / 10,
    };
  };
  if (ONLY === 'sessions') {
    const out = sessionBench({ cells, F, isHeld, phase, ctx, cellWeights });
    console.log(JSON.stringify({ bench: 'monitor', only: 'sessions', data: 'banking77', model: { k: m.params.k, fittedIntents: fittedIdx.length, heldOutIntents: heldIdx.length, calibratedRate: ctx.calibratedRate, calibratedRateInterval: ctx.calibratedRateInterval, heldOutDeep: ctx.heldOutDeep ?? null }, ...out }, null, 2));
    return;
  }
  const shuffled = !ONLY || ONLY === 'shuffled' ? noShift(false) : null;
  console.error(JSON.stringify({ shuffled }));
  const realisticRuns = !ONLY || ONLY === 'realistic' ? SEEDS.map((s) => noShift(true, s)) : [];
  for (const r of realisticRuns) console.error(JSON.stringify({ realistic: r }));
  const realistic = realisticRuns[0] ?? null;
  if (ONLY && ONLY !== 'shifts') {
    console.log(JSON.stringify({ bench: 'monitor', only: ONLY, shuffled, realistic: realisticRuns }, null, 2));
    return;
  }

  // ---- shifts ----
  // the tripled cluster: the fitted cluster with the median traffic share among those ≥ 1%
  const shares = [...new Set(cells.map((c) => c.cluster))].map((k) => ({ k, s: clusterShare(baseCells, k) })).filter((x) => x.s >= 0.01).sort((x, y) => x.s - y.s);
  const target = shares[Math.floor(shares.length / 2)].k;
  const tripled = baseCells.map((w, c) => (cells[c].cluster === target ? 3 * w : w));
  const tsum = tripled.reduce((x, y) => x + y, 0);
  const tripledW = tripled.map((w) => w / tsum);
  const novelW = cellWeights(intentWeights(0, 0, 0.05));
  const pUncPost = novelW.reduce((s, w, c) => s + (cells[c].uncovered ? w : 0), 0);
  const pShare = clusterShare(baseCells, target);
  const pSharePost = clusterShare(tripledW, target);

  type Shift = { name: string; rule: RuleName; cluster: number | null; pre: number; post: number; perRequest: number; after: (t: number) => Partial<StreamSpec> };
  const shifts: Shift[] = [
    { name: 'novel_5pct', rule: 'uncovered_share', cluster: null, pre: pUncPre, post: pUncPost, perRequest: 1, after: () => ({ weights: () => novelW }) },
    { name: 'cluster_tripled', rule: 'cluster_mix', cluster: target, pre: pShare, post: pSharePost, perRequest: 1, after: () => ({ weights: () => tripledW }) },
    {
      name: 'escalation_5_to_20pct',
      rule: 'escalation',
      cluster: target,
      pre: 0.05,
      post: 0.2,
      perRequest: pShare,
      after: () => ({ escalation: (c: Cell) => (c.cluster === target ? 0.2 : 0.05) }),
    },
  ];
  const evaluate = createEvaluateWindow();
  const runShift = (s: Shift, windowSeconds: number, rep: number) => {
    // a day of reference plus a few hours, then the change at a window boundary; windows of
    // `windowSeconds` throughout
    const change = START + DAY + (3 + rep * 5) * 3600_000;
    const base: Omit<StreamSpec, 'start' | 'windows' | 'windowSeconds'> = { ratePerSecond: RATE, agents: AGENTS, cells, weights: () => baseCells, modelVersion: 'bench', seed: 10 + rep, ...(B ? { bands: B } : {}) };
    function* windows(): Generator<WindowCounts[]> {
      yield* stream({ ...base, start: new Date(START).toISOString(), windows: (change - START) / (windowSeconds * 1000), windowSeconds });
      yield* stream({ ...base, ...s.after(change), start: new Date(change).toISOString(), windows: (6 * 3600) / windowSeconds, windowSeconds, seed: 1000 + rep });
    }
    const res = backtest(windows(), ctx, { evaluate, skipInfo: true });
    const hit = res.alerts
      .filter((al) => al.rule === s.rule && al.scope.agent === '*' && (s.cluster === null || al.scope.cluster === s.cluster || al.clusters[0] === s.cluster))
      .map((al) => ({ al, end: Date.parse(al.onset) + windowSeconds * 1000 }))
      .filter((x) => x.end > change)[0];
    const falseBefore = res.alerts.filter((al) => al.severity !== 'info' && al.rule !== 'uncovered_vs_calibrated' && Date.parse(al.onset) + windowSeconds * 1000 <= change).length;
    if (!hit) return { detected: false, falseBefore };
    const delayRequests = ((hit.end - change) / 1000) * RATE * s.perRequest;
    return { detected: true, delayRequests, threshold: hit.al.threshold, falseBefore };
  };
  const shiftResults: Record<string, unknown> = {};
  // the band mix before and after the novel shift: what the uncovered_share rule's novel-topic
  // detector sees (its information per request bounds any detector that reads the bands)
  const bandMix = (w: number[]) => {
    const out = new Array<number>(B).fill(0);
    w.forEach((x, c) => (out[cells[c].band ?? 0] += x));
    return out;
  };
  const klMulti = (p1: number[], p0: number[]) => p1.reduce((acc, p, i) => acc + (p > 0 ? p * Math.log(p / p0[i]) : 0), 0);
  for (const s of shifts.filter((x) => !SHIFTS || SHIFTS.includes(x.name))) {
    const klBinary = klBernoulli(s.post, s.pre);
    const klBands = s.name === 'novel_5pct' && B ? klMulti(bandMix(novelW), bandMix(baseCells)) : null;
    const kl = klBands ?? klBinary;
    const out: Record<string, unknown> = { rule: s.rule, cluster: s.cluster, preRate: s.pre, postRate: s.post, klPerRequest: kl, klPerRequestBinary: klBinary };
    if (klBands !== null) out.bandsPre = bandMix(baseCells).map((x) => +x.toFixed(4));
    if (klBands !== null) out.bandsPost = bandMix(novelW).map((x) => +x.toFixed(4));
    for (const ws of [WINDOW, 300]) {
      const runs = Array.from({ length: REPS }, (_, rep) => runShift(s, ws, rep));
      const d = runs.filter((x) => x.detected) as { delayRequests: number; threshold: number }[];
      const mean = d.length ? d.reduce((x, y) => x + y.delayRequests, 0) / d.length : null;
      const h = d.length ? d[0].threshold : null;
      const lorden = h !== null ? h / kl : null;
      const score = scoreDetections(
        d.map((x) => x.delayRequests),
        [0],
        Infinity,
      );
      out[`windows${ws}s`] = {
        runs: REPS,
        missedDetections: REPS - d.length,
        falseAlarmsBeforeChange: runs.reduce((x, y) => x + y.falseBefore, 0),
        detectionDelayRequests: mean === null ? null : Math.round(mean),
        detectionDelayRequestsEach: d.map((x) => Math.round(x.delayRequests)),
        threshold: h,
        lordenBoundRequests: lorden === null ? null : Math.round(lorden),
        ...(klBands !== null && h !== null ? { lordenBoundBinaryRequests: Math.round(h / klBinary) } : {}),
        ratioToLorden: mean !== null && lorden ? Math.round((mean / lorden) * 100) / 100 : null,
        // scoring.ts over the runs as alarms after a change at 0: the first (= shortest) delay
        shortestDetectionDelay: score.detectionDelay[0],
      };
      console.error(JSON.stringify({ shift: s.name, ws, ...(out[`windows${ws}s`] as object) }));
    }
    shiftResults[s.name] = out;
  }

  console.log(
    JSON.stringify(
      {
        bench: 'monitor',
        data: 'banking77',
        model: { k: m.params.k, fittedIntents: fittedIdx.length, heldOutIntents: heldIdx.length, fitQueries: cases.length, testRows: test.length, calibratedRate: ctx.calibratedRate, fitSeconds: Math.round(fitSeconds) },
        traffic: { requestsPerSecond: RATE, agents: AGENTS.length, windowSeconds: WINDOW, realisedUncoveredRate: pUncPre },
        bands: m.calibration.bands ? { inScope: m.calibration.bands.inScope.map((x) => +x.toFixed(4)), novelProfile: m.calibration.bands.novel.map((x) => +x.toFixed(4)), novelCases: m.calibration.bands.novelCases } : null,
        defaults: { arlDays: DEFAULT_MONITOR.arlDays, referenceDays: DEFAULT_MONITOR.referenceDays, warmupHours: DEFAULT_MONITOR.warmupHours, minRequests: DEFAULT_MONITOR.minRequests },
        noShift: { shuffled, realistic, ...(realisticRuns.length > 1 ? { realisticMoreSeeds: realisticRuns.slice(1) } : {}) },
        shift: shiftResults,
        seconds: Math.round((performance.now() - t0) / 1000),
      },
      null,
      2,
    ),
  );
}

/**
 * Session traffic (sessionStream: sessions of 1–30 turns 5–90 s apart, mostly one intent with
 * paraphrases and exact retries, two agents 70/30, a daily cycle ×5 in volume and in the intent
 * mix) at each volume of SESSION_RATES: 30 days without a shift (alerts per rule), and three shifts
 * after a 3-day history and (novel topics) on a fresh deployment, each with the delay in requests
 * of the product and of an oracle CUSUM on the same stream.
 *
 * The oracle knows the pre- and post-change distributions and the change time (it starts at the
 * change): for the novel and tripled shifts it observes each session once, through the coverage
 * cells (cluster, covered, depth band) of all its turns, with the likelihood ratio of the whole
 * session under the post- against the pre-change intent mix (the forward algorithm over the
 * generator's model: a hidden intent per turn, retries, paraphrases, switches), threshold
 * ln(sessions in 30 days); for escalations, each request of the cluster (independent per request
 * in this generator), threshold ln(that cluster's requests in 30 days). The same CUSUM is also
 * reported at the monitor's own threshold for the rule. At ≥ 5 requests/s a shift run stops
 * `--session-cap-days` (default 2) days after the change.
 */
function sessionBench(w: { cells: Cell[]; F: number[][]; isHeld: boolean[]; phase: number[]; ctx: MonitorContext; cellWeights: (iw: number[]) => number[] }) {
  const { cells, F, isHeld, phase, ctx } = w;
  const J = F.length;
  const heldN = isHeld.filter(Boolean).length;
  const agents = { support: 0.7, sales: 0.3 };
  const weightsAt = (t: number, agent: string, novel: number, boost: number | null) => {
    const h = ((t / 3600000) % 24) / 24 + (agent === 'sales' ? 0.25 : 0);
    const x = Array.from({ length: J }, (_, j) => (isHeld[j] ? 0 : 1 + 0.6 * Math.sin(2 * Math.PI * (h + phase[j]))));
    if (boost !== null) for (let j = 0; j < J; j++) if (!isHeld[j] && clusterOfIntent[j] === boost) x[j] *= 3;
    const sum = x.reduce((a, b) => a + b, 0);
    return x.map((v, j) => (isHeld[j] ? novel / heldN : ((1 - novel) * v) / sum));
  };
  // each fitted intent's main cluster (the tripled shift triples the intents of one cluster)
  const clusterOfIntent = F.map((f) => {
    const by = new Map<number, number>();
    f.forEach((v, c) => by.set(cells[c].cluster, (by.get(cells[c].cluster) ?? 0) + v));
    return [...by.entries()].sort((a, b) => b[1] - a[1])[0][0];
  });
  // the forward algorithm over the hidden intent of each turn (sessionStream's model: retry 0.3,
  // switch 0.05, otherwise a paraphrase drawn from the intent's cells)
  const RETRY = 0.3;
  const SWITCH = 0.05;
  const sessionLogLik = (seq: number[], iw: number[]) => {
    let alpha = iw.map((wj, j) => wj * F[j][seq[0]]);
    let ll = 0;
    for (let t = 0; ; t++) {
      const z = alpha.reduce((a, b) => a + b, 0);
      if (!(z > 0)) return -Infinity;
      ll += Math.log(z);
      if (t + 1 >= seq.length) return ll;
      const c = seq[t + 1];
      const same = c === seq[t] ? RETRY : 0;
      alpha = alpha.map((a, j) => (a / z) * (same + (1 - SWITCH - RETRY) * F[j][c]) + SWITCH * iw[j] * F[j][c]);
    }
  };
  // the tripled cluster: the main cluster of fitted intents with the median traffic among those ≥ 1%
  const base = weightsAt(0, 'support', 0, null);
  const byCl = new Map<number, number>();
  base.forEach((v, j) => byCl.set(clusterOfIntent[j], (byCl.get(clusterOfIntent[j]) ?? 0) + v));
  const cand = [...byCl.entries()].filter((x) => x[1] >= 0.01).sort((a, b) => a[1] - b[1]);
  const target = cand[Math.floor(cand.length / 2)][0];
  const rules: RuleName[] = ['uncovered_share', 'uncovered_vs_calibrated', 'novel_vs_calibrated', 'uncovered_budget', 'cluster_mix', 'escalation', 'uncovered_escalation', 'eval_mismatch', 'novel_sessions'];
  // the core rules with the session-level novel-topic rule beside them (as evalgap monitor runs them)
  const evaluator = () => {
    const core = createEvaluateWindow({ output: 'changes', ...(HOUR_CORRELATION ? { hourCorrelation: HOUR_CORRELATION } : {}) });
    return NOVEL_SESSIONS ? composeEvaluators(core, [novelSessionRules({ output: 'changes' })]) : core;
  };
  const specFor = (rate: number, durationMs: number, seed: number, over: Partial<SessionStreamSpec> = {}): SessionStreamSpec => ({
    start: new Date(START).toISOString(),
    durationMs,
    windowSeconds: WINDOW,
    ratePerSecond: rate,
    agents,
    cells,
    intentCells: F,
    intentWeights: (t, agent) => weightsAt(t, agent, 0, null),
    modelVersion: 'bench',
    seed,
    ...(w.ctx.novelProfile ? { bands: BANDS } : {}),
    ...over,
  });
  const out: Record<string, unknown> = {
    generator: { agents, volumeRatio: 5, turns: '1–30, P(L) ∝ 0.88^L (mean 6.6)', gapSeconds: [5, 90], retry: 0.3, switchIntent: 0.05, mixCycle: 0.6, windowSeconds: WINDOW, sessionIdleSeconds: 300 },
    tripledCluster: target,
    novelShare: NOVEL_SHARE,
    novelSessionsRule: NOVEL_SESSIONS,
    volumes: {} as Record<string, unknown>,
  };
  // --session-parts=fitgrowth: the fit session reference's e-values (novel_sessions' fresh-deployment
  // mode) on 2 days of this generator's sessions at 1 request/s (seed 7): their mean and the
  // log-growth per session of each mix, with 0%, 5%, 20% and 100% of sessions on the held-out intents
  if (SESSION_PARTS.includes('fitgrowth') && ctx.sessionReference && ctx.heldOutDeep) {
    const sr = ctx.sessionReference;
    const deep = ctx.heldOutDeep.deepBands;
    const growth: Record<string, unknown> = { reference: { bound: sr.bound, cap: sr.cap, groupShares: sr.groupShares, novelShares: sr.novelShares, shape: sr.shape } };
    for (const novel of [0, 0.05, 0.2, 1]) {
      const Ls: number[] = [];
      for (const _ of sessionStream({
        ...specFor(1, 2 * DAY, 7, { intentWeights: (t, agent) => weightsAt(t, agent, novel, null) }),
        onSession: (x) => {
          const n = new Array<number>(SESSION_GROUPS).fill(0);
          for (const c of new Set(x.cells)) {
            const g = sessionGroup(cells[c].band ?? -1, cells[c].uncovered, deep);
            if (g >= 0) n[g]++;
          }
          Ls.push(fitSessionEvalue(sr, n));
        },
      })) {
        /* the sessions only */
      }
      growth[String(novel)] = {
        sessions: Ls.length,
        meanEvalue: Math.round((Ls.reduce((a, b) => a + b, 0) / Ls.length) * 1000) / 1000,
        growthPerSession: Object.fromEntries(DEFAULT_NOVEL_SESSIONS.mixes.map((e) => [e, Math.round((Ls.reduce((a, L) => a + Math.log(1 - e + e * L), 0) / Ls.length) * 1e5) / 1e5])),
      };
    }
    out.fitSessionGrowth = growth;
    console.error(JSON.stringify({ fitSessionGrowth: growth }));
  }
  for (const rate of SESSION_RATES) {
    const res: Record<string, unknown> = {};
    if (SESSION_PARTS.includes('noshift')) {
      const t = performance.now();
      let requests = 0;
      let sessions = 0;
      // progress on stderr (a long run at a flood can be read before it ends): each simulated day and
      // each alert as it fires
      const inner = evaluator();
      let day = 0;
      const stateBytes: Record<string, unknown>[] = [];
      // every finding of every window (statistics included), hashed: two runs decided alike iff equal
      const findingsHash = createHash('sha256');
      const written = new Set<string>();
      const lastDay = { windows: 0, wholeState: 0, rows: 0, newParts: 0, partBytes: 0 };
      const evaluate: typeof inner = (st, win, c) => {
        const ev = inner(st, win, c);
        if (STATE_BYTES) {
          findingsHash.update(JSON.stringify(ev.findings));
          // the last simulated day: bytes the checkpoint writes, window by window
          if (win.length && Date.parse(win[0].start) >= START + (SESSION_DAYS - 1) * DAY) {
            const json = JSON.stringify(ev.state);
            const { skeleton, parts } = splitCheckpoint(json);
            lastDay.windows++;
            lastDay.wholeState += Buffer.byteLength(json);
            lastDay.rows += Buffer.byteLength(skeleton);
            for (const p of parts)
              if (!written.has(p.id)) {
                written.add(p.id);
                lastDay.newParts++;
                lastDay.partBytes += Buffer.byteLength(p.body);
              }
          }
        }
        const t = win.length ? Date.parse(win[0].start) : START;
        for (const f of ev.findings) if (f.firing && f.onset === f.windowStart) console.error(JSON.stringify({ rate, alert: { rule: f.rule, agent: f.scope.agent, severity: f.severity, onset: f.onset } }));
        if (t - START >= (day + 1) * DAY) {
          // (the state after the window that starts the new day, i.e. with the whole day before it)
          if (STATE_BYTES) stateBytes.push({ day: day + 1, requests, sessions, bytes: bytesByPart(ev.state), checkpoint: checkpointRow(JSON.stringify(ev.state)) });
          console.error(JSON.stringify({ rate, days: ++day, requests, sessions, ...(STATE_BYTES ? { stateBytes: (stateBytes[stateBytes.length - 1].bytes as { total: number }).total } : {}) }));
        }
        return ev;
      };
      const escRates = ESC_BETA ? betaRates(Object.keys(ctx.evalShares).map(Number), ESC_BETA[0], ESC_BETA[1], 17) : null;
      const escOver: Partial<SessionStreamSpec> = escRates ? { escalation: (cell: Cell) => escRates.get(cell.cluster) ?? 0.05 } : {};
      const r = backtest(sessionStream({ ...specFor(rate, SESSION_DAYS * DAY, SESSION_SEED, escOver), onWindow: (_, n) => (requests += n), onSession: () => sessions++ }), ctx, { evaluate });
      const per = Object.fromEntries(rules.map((x) => [x, r.alerts.filter((al) => al.rule === x).length]));
      res.noShift = {
        seed: SESSION_SEED,
        ...(escRates ? { escalationRates: { beta: ESC_BETA, min: Math.min(...escRates.values()), max: Math.max(...escRates.values()), byCluster: Object.fromEntries([...escRates].map(([c, x]) => [c, Math.round(x * 1e4) / 1e4])) } } : {}),
        days: SESSION_DAYS,
        requests,
        sessions,
        alertsPerRule: per,
        alertsPer30DaysPerRule: Object.fromEntries(rules.map((x) => [x, Math.round((per[x] * 30 * 100) / SESSION_DAYS) / 100])),
        alerts: r.alerts.slice(0, 12).map((al) => ({ rule: al.rule, agent: al.scope.agent, severity: al.severity, onset: al.onset, summary: al.summary })),
        // the thresholds of the last window: counted in data-bearing updates, and the clock count's
        thresholdsAtEnd: reportedThresholds(r.state),
        ...(STATE_BYTES
          ? {
              stateBytes: [...stateBytes, { day: 'end', requests, sessions, bytes: bytesByPart(r.state), checkpoint: checkpointRow(JSON.stringify(r.state)) }],
              checkpointBytesLastDay: { ...lastDay, written: lastDay.rows + lastDay.partBytes, ratio: Math.round((lastDay.wholeState / Math.max(1, lastDay.rows + lastDay.partBytes)) * 10) / 10 },
              allAlerts: r.alerts,
              findingsSha256: findingsHash.digest('hex'),
            }
          : {}),
        seconds: Math.round((performance.now() - t) / 100) / 10,
      };
      console.error(JSON.stringify({ rate, noShift: res.noShift }));
    }
    if (SESSION_PARTS.includes('shifts')) {
      const reps = SESSION_REPS ?? (rate >= 5 ? 1 : 2);
      CAP_DAYS = CAP_DAYS_ARG ?? (rate >= 5 ? 2 : Infinity);
      type S = { name: string; history: boolean; rules: RuleName[]; cluster: number | null; over: (change: number) => Partial<SessionStreamSpec> };
      const shifted = (change: number, novel: number, boost: number | null) => (t: number, agent: string) => weightsAt(t, agent, t >= change ? novel : 0, t >= change ? boost : null);
      const shifts: S[] = [
        { name: 'novel_5pct', history: true, rules: ['uncovered_share', 'novel_sessions'], cluster: null, over: (c) => ({ intentWeights: shifted(c, NOVEL_SHARE, null) }) },
        { name: 'cluster_tripled', history: true, rules: ['cluster_mix'], cluster: target, over: (c) => ({ intentWeights: shifted(c, 0, target) }) },
        { name: 'escalation_5_to_20pct', history: true, rules: ['escalation'], cluster: target, over: (c) => ({ escalation: (cell: Cell, t: number) => (t >= c && cell.cluster === target ? 0.2 : 0.05) }) },
        { name: 'novel_5pct_fresh', history: false, rules: ['uncovered_share', 'uncovered_vs_calibrated', 'novel_vs_calibrated', 'uncovered_budget', 'novel_sessions'], cluster: null, over: (c) => ({ intentWeights: shifted(c, NOVEL_SHARE, null) }) },
      ];
      // requests and sessions of 30 days at this volume (the oracle's ARL)
      const meanLen = 6.6;
      const sessions30 = (rate * 30 * 86400) / meanLen;
      for (const s of shifts.filter((x) => !SHIFTS || SHIFTS.includes(x.name))) {
        const runs: Record<string, unknown>[] = [];
        for (let rep = 0; rep < reps; rep++) {
          const change = START + (s.history ? 3 * DAY + (rep * 7 + 3) * 3600_000 : 0);
          const horizon = Math.max(2 * DAY, Math.min(20 * DAY, (400_000 / rate) * 1000));
          let reqSince = 0;
          let clusterReqSince = 0;
          let oracleAt: number | null = null;
          let oracleReq: number | null = null;
          // the same oracle CUSUM at the monitor's own threshold for the rule (which pays for
          // watching every cluster, metric, alternative and scope): what is left of the ratio is
          // the monitor's inefficiency, the rest is the price of not knowing what will change
          let oracleHAt: number | null = null;
          let oracleHReq: number | null = null;
          // oracle CUSUM, started at the change
          let cu = 0;
          const pEsc0 = 0.05;
          const pEsc1 = 0.2;
          const hSessions = Math.log(sessions30);
          const clusterShare30 = byCl.get(target) ?? 0.01;
          const hEsc = Math.log(rate * 30 * 86400 * clusterShare30);
          // the monitor's threshold for the rule (rules.ts: ln(windows in 30 days × scopes × …)), 3 scopes
          const K = Object.keys(ctx.evalShares).length;
          const G = DEFAULT_MONITOR.ratios.length;
          const W30 = (30 * 86400) / WINDOW;
          const hClockMonitor = s.name.startsWith('escalation')
            ? Math.log(W30 * 3 * K * 3 * G)
            : s.name.startsWith('cluster')
              ? Math.log(W30 * 3 * (K + 1) * G)
              : Math.log(W30 * 3 * (G + DEFAULT_MONITOR.novelMixes.length));
          // the threshold the monitor used for the rule at the change (counted in data-bearing
          // updates, src/monitor/update-rates.ts): read from its state when the oracle starts
          // (the clock count above until the monitor has a day of history)
          let hMonitor = hClockMonitor;
          let hFrozen = false;
          const freezeH = () => {
            if (hFrozen) return;
            hFrozen = true;
            const r = reportedThresholds(state);
            if (r) hMonitor = s.name.startsWith('escalation') ? r.h.rate : s.name.startsWith('cluster') ? r.h.mixCluster : r.h.unc;
            hNovelSessions = novelSessionsThreshold(state);
          };
          // the novel_sessions rule's threshold at the change (null when it is off or has not run)
          let hNovelSessions: number | null = null;
          // at high volume a run is long: stop this many days after the change (--session-cap-days)
          const capMs = CAP_DAYS * DAY;
          const onSession = (x: { t: number; agent: string; cells: number[]; escalated: number[] }) => {
            if (x.t < change || (oracleHAt !== null && oracleAt !== null)) return;
            freezeH();
            if (s.name.startsWith('escalation')) {
              x.cells.forEach((c, i) => {
                if ((oracleHAt !== null && oracleAt !== null) || cells[c].cluster !== target) return;
                const e = x.escalated[i];
                cu = Math.max(0, cu + (e ? Math.log(pEsc1 / pEsc0) : Math.log((1 - pEsc1) / (1 - pEsc0))));
                if (cu >= hEsc && oracleAt === null) oracleAt = x.t;
                if (cu >= hMonitor && oracleHAt === null) oracleHAt = x.t;
              });
              return;
            }
            // the likelihood of the whole session (every turn's coverage cell: cluster, covered or
            // not, depth band) under the pre- and post-change intent mix, by the generator's own
            // model: a hidden intent per turn; a turn is an exact retry of the previous cell, a
            // paraphrase (a cell of the intent) or, rarely, a new intent drawn from the mix
            const pre = weightsAt(x.t, x.agent, 0, null);
            const post = s.name.startsWith('novel') ? weightsAt(x.t, x.agent, NOVEL_SHARE, null) : weightsAt(x.t, x.agent, 0, target);
            const llr = sessionLogLik(x.cells, post) - sessionLogLik(x.cells, pre);
            if (Number.isFinite(llr)) cu = Math.max(0, cu + llr);
            if (cu >= hSessions && oracleAt === null) oracleAt = x.t;
            if (cu >= hMonitor && oracleHAt === null) oracleHAt = x.t;
          };
          const spec = specFor(rate, change - START + horizon, 100 + rep, {
            ...s.over(change),
            onSession,
            onWindow: (t, n) => {
              if (t >= change) reqSince += n;
              if (oracleAt !== null && oracleReq === null && t + WINDOW * 1000 > oracleAt) oracleReq = reqSince;
              if (oracleHAt !== null && oracleHReq === null && t + WINDOW * 1000 > oracleHAt) oracleHReq = reqSince;
            },
          });
          const evaluate = evaluator();
          let state = null as Parameters<typeof evaluate>[0];
          let found: number | null = null;
          let foundAt: string | null = null;
          let falseBefore = 0;
          // the first alert after the change of each rule the shift counts (requests after the change)
          const firstByRule: Record<string, number> = {};
          let novelSessionsReference: 'fit' | 'production' | 'unknown' | undefined;
          for (const win of sessionStream(spec)) {
            if (win.length === 0) continue;
            const ev = evaluate(state, win, ctx);
            state = ev.state;
            const t0w = Date.parse(win[0].start);
            for (const f of ev.findings) {
              if (!f.firing || f.onset !== f.windowStart) continue;
              if (t0w < change) {
                if (f.rule !== 'eval_mismatch') falseBefore++;
                continue;
              }
              const ok = s.rules.includes(f.rule) && (s.cluster === null || f.scope.cluster === s.cluster || f.clusters[0]?.cluster === s.cluster);
              if (ok && firstByRule[f.rule] === undefined) {
                firstByRule[f.rule] = reqSince;
                // which reference novel_sessions read (its summary says): on a fresh deployment production's
                // own, from day 2, already holds the shift, so an alert against it is only nominal
                if (f.rule === 'novel_sessions') novelSessionsReference = /allowed by the fit's statement/.test(f.summary) ? 'fit' : / in its production reference/.test(f.summary) ? 'production' : 'unknown';
              }
              if (ok && found === null) {
                found = reqSince;
                foundAt = f.rule;
              }
            }
            // (a shift that novel_vs_calibrated counts runs on until it fires too, within the cap)
            const waitNovel = s.rules.includes('novel_vs_calibrated') && ctx.heldOutDeep !== undefined && firstByRule.novel_vs_calibrated === undefined;
            // (and until the oracle has crossed its own threshold too: at high volume ln(sessions in 30
            // days) is above the monitor's threshold, and stopping at the monitor's alert left it unknown)
            if (found !== null && oracleHReq !== null && oracleReq !== null && !waitNovel) break;
            if (t0w - change > capMs) break;
          }
          void clusterReqSince;
          runs.push({ detected: found !== null, delayRequests: found, rule: foundAt, oracleDelayRequests: oracleReq, ratio: found !== null && oracleReq ? Math.round((found / oracleReq) * 100) / 100 : null, oracleAtMonitorThresholdRequests: oracleHReq, ratioAtMonitorThreshold: found !== null && oracleHReq ? Math.round((found / oracleHReq) * 100) / 100 : null, monitorThreshold: Math.round(hMonitor * 100) / 100, monitorThresholdClock: Math.round(hClockMonitor * 100) / 100, novelSessionsThreshold: hNovelSessions === null ? null : Math.round(hNovelSessions * 100) / 100, oracleThreshold: Math.round((s.name.startsWith('escalation') ? hEsc : hSessions) * 100) / 100, falseAlarmsBeforeChange: falseBefore, firstByRule, novelSessionsReference, cappedAtDaysAfterChange: found === null ? Math.round(Math.min(capMs, horizon) / DAY * 10) / 10 : undefined });
          console.error(JSON.stringify({ rate, shift: s.name, rep, ...runs[runs.length - 1] }));
        }
        const d = runs.filter((x) => x.detected && x.oracleDelayRequests);
        const mean = (k: string) => (d.length ? Math.round(d.reduce((a, x) => a + (x[k] as number), 0) / d.length) : null);
        const md = mean('delayRequests');
        const mo = mean('oracleDelayRequests');
        res[s.name] = { runs: reps, missed: runs.filter((x) => !x.detected).length, delayRequests: md, oracleDelayRequests: mo, ratioToOracle: md !== null && mo ? Math.round((md / mo) * 100) / 100 : null, each: runs };
      }
    }
    (out.volumes as Record<string, unknown>)[String(rate)] = res;
  }
  return out;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
