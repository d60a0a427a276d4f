/**
 * The rules: detectors combined per rule and scope (each agent and '*' = all agents), rolling
 * production references, dispersion, multiplicity, hysteresis, findings and trend rows. Pure: the
 * state goes in and comes out as plain JSON; no I/O, no clock (hours come from window timestamps).
 */
import { z } from 'zod';
import { BernoulliCusum, DirichletMultinomialCusum, ProfileCusum, type BernoulliCusumState, type Dispersion, type DirichletCusumState, type ProfileCusumState, type ReferenceCell, type Verdict } from './detectors.js';
import { klInterval, totalVariation, tvInterval, tvIntervalApprox } from './stats.js';
import type {
  ClusterCounts,
  ClusterShare,
  Effect,
  Finding,
  MonitorContext,
  MonitorEvaluation,
  MonitorState,
  RuleName,
  TrendRow,
  SessionCell,
  WindowCounts,
} from './types.js';
import { pct, scopeName, CI_LEVEL } from './wording.js';
import { directionalMoments, novelScores } from './sandwich.js';
import { addRuns, cloneRuns, emptyRuns, evalueDispersions, mergeRuns, runsDesignEffect, shareDispersion, tailFactors, type RunHistogram } from './session-evalue.js';
import { rateReference, type RateReference } from './rate-reference.js';
import { updateThresholds, type UpdateRateState } from './update-rates.js';
import { windowClock } from './clock.js';

export interface MonitorOptions {
  /** false-alarm guarantee of each rule, summed over all its scopes: average run length in days */
  arlDays: number;
  /** production reference: the last `referenceDays` of closed blocks */
  referenceDays: number;
  /** no production-relative rule fires before this many hours of reference (the hour-of-day reference needs them)… */
  warmupHours: number;
  /**
   * …nor before the reference holds this many closed sessions (traffic with session ids), so that a
   * trickle of a few long sessions is not a reference
   */
  warmupSessions: number;
  /**
   * closed sessions needed before the session design effect is used; until then the fixed-rate
   * rules use the windows' dispersion (production-relative rules wait for warmupSessions)
   */
  minSessions: number;
  /**
   * uncovered_vs_calibrated fires once when the excess is established, at severity info, or
   * warning when the uncovered rate's lower bound is at least this multiple of the calibrated rate
   */
  calibratedLargeRatio: number;
  /** reference block length (minutes); blocks carry their hour of day for like-hour comparison */
  blockMinutes: number;
  /** minimum evidence before any alarm: requests in the detector's segment */
  minRequests: number;
  /** and events (uncovered / escalated / in-cluster requests) in the segment */
  minEvents: number;
  /** odds ratios watched by every rate detector */
  ratios: number[];
  /** Dirichlet prior concentration of the cluster-mix mixture test */
  concentration: number;
  /**
   * shares of traffic moving to the model's novel-topic profile watched by the novel-topic
   * detector (part of uncovered_share; needs a model with coverage depth bands)
   */
  novelMixes: number[];
  /** budget rule: alert once the uncovered share is established above this (null: off) */
  budget: number | null;
  /** a firing finding resolves after this many minutes without a new alarm (and statistic < h/2) */
  resolveMinutes: number;
  /**
   * while a production-relative rule fires, the scope's reference is frozen, for at most this many
   * hours of the episode; after that the new level is learnt (the alert resolves once the reference
   * has caught up)
   */
  freezeHours: number;
  /** pseudo-requests shrinking an hour-of-day reference toward the pooled reference */
  hourShrink: number;
  /**
   * correlation of adjacent hour-of-day reference cells' errors charged in the reference's noise:
   * 'bound' (default) ρ = 1; 'measured' ρ estimated from closed sessions that straddle an hour
   * (adjacentHourRho). The measured ρ counts only the noise of sessions; on realistic low-volume
   * session streams the reference cells also vary from day to day beyond it, and 'measured' raised
   * `uncovered_share` false alarms there (docs/monitor.md, backtest), so the bound is the default
   */
  hourCorrelation: 'bound' | 'measured';
  /** half-life (minutes) of the "now" shares shown in findings and trends */
  recentHalfLifeMinutes: number;
  /** eval-set mismatch: production share at least this multiple of the eval-set share… */
  mismatchRatio: number;
  /** …and at least this share of traffic */
  mismatchMinShare: number;
  /** cap on the estimated dispersion */
  maxDispersion: number;
  /** clusters named per finding */
  drivers: number;
  /**
   * 'all' (default): every finding and trend row of every window. 'changes': only findings that
   * fire or just resolved, and no trend rows (what backtest needs; much cheaper)
   */
  output: 'all' | 'changes';
}

export const DEFAULT_MONITOR: MonitorOptions = {
  arlDays: 30,
  referenceDays: 7,
  warmupHours: 24,
  warmupSessions: 200,
  minSessions: 50,
  calibratedLargeRatio: 2,
  blockMinutes: 60,
  minRequests: 200,
  minEvents: 10,
  ratios: [1.25, 1.5, 2, 3, 5],
  concentration: 1000,
  novelMixes: [0.01, 0.02, 0.05, 0.1, 0.2],
  budget: 0.2,
  resolveMinutes: 60,
  freezeHours: 24,
  hourShrink: 200,
  hourCorrelation: 'bound',
  recentHalfLifeMinutes: 30,
  mismatchRatio: 2,
  mismatchMinShare: 0.01,
  maxDispersion: 100,
  drivers: 5,
  output: 'all',
};

/**
 * zod schema of the options as a config file gives them (every key optional; unknown keys
 * rejected), for the config loader: `createEvaluateWindow(MonitorOptionsSchema.parse(raw))`.
 */
export const MonitorOptionsSchema = z
  .object({
    arlDays: z.number().positive(),
    referenceDays: z.number().positive(),
    warmupHours: z.number().nonnegative(),
    warmupSessions: z.number().int().nonnegative(),
    minSessions: z.number().int().positive(),
    calibratedLargeRatio: z.number().gt(1),
    blockMinutes: z.number().int().positive().refine((m) => 60 % m === 0, 'must divide an hour or equal it (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)'),
    minRequests: z.number().int().nonnegative(),
    minEvents: z.number().int().nonnegative(),
    ratios: z.array(z.number().gt(1)).min(1),
    concentration: z.number().positive(),
    novelMixes: z.array(z.number().gt(0).lt(1)).min(1),
    budget: z.number().gt(0).lt(1).nullable(),
    resolveMinutes: z.number().positive(),
    freezeHours: z.number().nonnegative(),
    hourShrink: z.number().nonnegative(),
    hourCorrelation: z.enum(['bound', 'measured']),
    recentHalfLifeMinutes: z.number().positive(),
    mismatchRatio: z.number().positive(),
    mismatchMinShare: z.number().min(0).max(1),
    maxDispersion: z.number().min(1),
    drivers: z.number().int().positive(),
    output: z.enum(['all', 'changes']),
  })
  .partial()
  .strict();

const METRICS = ['escalated', 'refused', 'failed'] as const;
type Metric = (typeof METRICS)[number];
const METRIC_NAME: Record<Metric, string> = { escalated: 'escalation', refused: 'refusal', failed: 'failure' };
/** rules whose reference is production itself (their alarms freeze the scope's reference) */
const RELATIVE: RuleName[] = ['uncovered_share', 'cluster_mix', 'escalation', 'uncovered_escalation'];
const SEVERITY: Record<RuleName, Finding['severity']> = {
  uncovered_share: 'warning',
  uncovered_vs_calibrated: 'warning',
  novel_vs_calibrated: 'warning',
  uncovered_budget: 'critical',
  cluster_mix: 'warning',
  eval_mismatch: 'info',
  escalation: 'critical',
  uncovered_escalation: 'warning',
  // agent rules (src/monitor/agent-rules.ts)
  depth_mix: 'warning',
  untested_chains: 'warning',
  chain_failure: 'critical',
  version_regression: 'rollback', // evaluated by the runner (src/alert/version-guard.ts), not here
  weighted_score: 'warning', // evaluated by src/monitor/score-rules.ts
  novel_sessions: 'warning', // evaluated by src/monitor/session-novel.ts
};
/** reference windows (Pearson statistics) needed before a dispersion is estimated */
const DISP_MIN_WINDOWS = 20;

interface Agg {
  req: number[];
  unc: number[];
  escalated: number[];
  refused: number[];
  failed: number[];
  /** escalated among uncovered; null when the store does not report it */
  uncEsc: number | null;
  /** requests per coverage depth band (empty when the counts carry no bands) */
  bands?: number[];
}

interface Block extends Agg {
  key: number;
  hour: number;
  /**
   * per detector family, moments of the windows' Pearson statistics (X²/df, against the reference
   * in force): [windows, Σn, Σn², Σr, Σn·r], fitted as E[r] = φ0 + κ·n
   */
  disp: Record<string, number[]>;
  /** a production-relative rule fired during the block: kept out of the reference */
  tainted: boolean;
}

interface ScopeState {
  blocks: Block[];
  current: Block | null;
  recent: Agg;
  det: {
    unc: BernoulliCusumState | null;
    cal: BernoulliCusumState | null;
    budget: BernoulliCusumState | null;
    uncEsc: BernoulliCusumState | null;
    mix: DirichletCusumState | null;
    /** the novel-topic detector on the coverage depth bands (part of the uncovered_share rule) */
    novel?: ProfileCusumState | null;
    /** novel_vs_calibrated: the deep-band share against the fit's held-out phrasings (absent: never run) */
    deep?: BernoulliCusumState | null;
    share: Record<string, BernoulliCusumState>;
    rate: Record<string, BernoulliCusumState>;
    /**
     * escalation family: the block (hour) in which each rate detector's evidence segment began
     * (absent while its statistic is 0); those blocks are kept out of that cluster's rate reference
     */
    rateSince?: Record<string, number>;
    /**
     * cluster_mix: the block in which each cluster's share detector's evidence segment began (absent
     * while its statistic is 0); those blocks are kept out of that cluster's share reference
     */
    shareSince?: Record<string, number>;
  };
  /** eval-mismatch: the under-tested clusters last reported (null until the reference is ready) */
  mismatch: number[] | null;
  /**
   * before the reference has measured the uncovered share's dispersion: running totals since the
   * scope's first window and the Pearson moments of each window against them (for the fixed-rate rules)
   */
  early?: { unc: number; req: number; disp: number[] };
  /** closed sessions: the design effect of each detector family (absent until sessions are seen) */
  sess?: SessionState;
  /**
   * uncovered_vs_calibrated: the uncovered rate established above the calibrated one (its upper
   * bound when it was reported); the rule fires again only above it
   */
  calFact?: number;
  /** and the severity it was reported with (its resolution carries the same) */
  calSeverity?: Finding['severity'];
  /**
   * novel_vs_calibrated: the deep-band share established above the fit's (its upper bound when
   * reported; the rule fires again only above it), and each cluster's recent deep requests
   * (decayed like `recent`) for the finding's clusters
   */
  deepFact?: number;
  deepBy?: number[];
}

/**
 * Session moments of one accumulation period: per family the sums behind a cluster-robust
 * (sandwich) Pearson statistic of whole sessions against the period's own shares.
 */
interface SessionAcc {
  sessions: number;
  /** requests and Σ m_s² (session sizes) */
  n: number;
  m2: number;
  /**
   * per session, from its requests per clock hour m_h (SessionCell.hourSq): Σ Σ_h m_h² (the hour
   * cells' variance) and Σ Σ_{h<h'} m_h·m_h' = Σ (m² − Σ_h m_h²)/2 (their covariance, carried by
   * sessions that straddle hours); a session of unknown hours adds m² to both. Absent in older
   * checkpoints (then m2 to both: ρ = 1)
   */
  hsq?: number;
  hx?: number;
  /** mix categories (K clusters covered + uncovered): Σ y, Σ y² */
  mixT: number[];
  mixQ: number[];
  /** depth bands: Σ y, Σ y², and the band requests' n, Σ m² */
  bandT: number[];
  bandQ: number[];
  bandN: number;
  bandM2: number;
  /**
   * depth bands per session: Σ y_b·y_c (BX × BX, row-major) and Σ m·y_b, for the design effect
   * in the novel-topic detector's own direction (src/monitor/sandwich.ts; absent in older checkpoints)
   */
  bandX?: number[];
  bandMY?: number[];
  /** uncovered: Σ y, Σ y², Σ m·y */
  unc: [number, number, number];
  /** per cluster: Σ n, Σ n²; per metric and cluster: Σ e, Σ n·e, Σ e² */
  cn: number[];
  cn2: number[];
  rate: Record<string, [number[], number[], number[]]>;
  /** per session and cluster touched, its requests in the cluster (cluster_mix's e-value dispersion; session-evalue.ts) */
  runs?: RunHistogram;
  /** per session with uncovered requests, how many (the uncovered detectors' tail factor; session-evalue.ts) */
  uncRuns?: RunHistogram;
  /** ISO start of the period */
  start: string;
}

interface SessionEntry {
  end: string;
  sessions: number;
  /** requests and Σ m² of the sessions (Kish's effective number of sessions n²/Σm²; absent in older checkpoints) */
  n?: number;
  m2?: number;
  /** SessionAcc.hsq and hx (absent in older checkpoints: m2 for both) */
  hsq?: number;
  hx?: number;
  num: Record<string, number>;
  den: Record<string, number>;
  /** the period's per-session cluster counts (absent in older checkpoints) */
  runs?: RunHistogram;
  uncRuns?: RunHistogram;
}

interface SessionState {
  /** windows of this scope reported session ids */
  seen: boolean;
  acc: SessionAcc | null;
  ring: SessionEntry[];
}

interface Episode {
  firing: boolean;
  onset?: string;
  lastAlarm: number;
}

interface State extends MonitorState {
  version: 1;
  modelVersion: string;
  clusterIds: number[];
  scopes: Record<string, ScopeState>;
  episodes: Record<string, Episode>;
  lastWindow: string | null;
  /** data-bearing updates per reference block, for the thresholds (src/monitor/update-rates.ts) */
  upd?: UpdateRateState;
}

const zeros = (k: number) => new Array<number>(k).fill(0);
/** depth bands tracked in the sessions' cross-moments (the model has 9) */
const BX = 16;
const emptyAgg = (k: number): Agg => ({ req: zeros(k), unc: zeros(k), escalated: zeros(k), refused: zeros(k), failed: zeros(k), uncEsc: null });
const sum = (a: number[]) => a.reduce((s, v) => s + v, 0);
const at = (a: number[], i: number) => a[i] ?? 0;

function addAgg(into: Agg, from: Agg, w = 1): void {
  for (const f of ['req', 'unc', 'escalated', 'refused', 'failed'] as const) {
    const a = into[f];
    const b = from[f];
    for (let i = 0; i < b.length; i++) a[i] = at(a, i) + w * b[i];
  }
  if (from.uncEsc !== null) into.uncEsc = (into.uncEsc ?? 0) + w * from.uncEsc;
  if (from.bands?.length) {
    const a = (into.bands ??= []);
    for (let i = 0; i < from.bands.length; i++) a[i] = at(a, i) + w * from.bands[i];
  }
}

function scaleAgg(a: Agg, w: number): void {
  for (const f of ['req', 'unc', 'escalated', 'refused', 'failed'] as const) for (let i = 0; i < a[f].length; i++) a[f][i] *= w;
  if (a.uncEsc !== null) a.uncEsc *= w;
  if (a.bands) for (let i = 0; i < a.bands.length; i++) a.bands[i] *= w;
}

const cloneAgg = (a: Agg): Agg => ({ req: a.req.slice(), unc: a.unc.slice(), escalated: a.escalated.slice(), refused: a.refused.slice(), failed: a.failed.slice(), uncEsc: a.uncEsc, ...(a.bands ? { bands: a.bands.slice() } : {}) });
const cloneBlock = (b: Block): Block => ({
  ...cloneAgg(b),
  key: b.key,
  hour: b.hour,
  tainted: b.tainted,
  disp: Object.fromEntries(Object.entries(b.disp).map(([k, v]) => [k, v.slice()])),
});

interface Reference {
  blocks: number;
  pooled: Agg;
  byHour: Agg[];
  disp: Record<string, number[]>;
}

/** session totals, cached per (immutable) session state */
const sessCache = new WeakMap<object, { num: Record<string, number>; den: Record<string, number>; sessions: number; effective: number; runs: RunHistogram; uncRuns: RunHistogram; straddle: number }>();

/** reference sums, cached per (immutable) blocks array */
const refCache = new WeakMap<Block[], Reference>();

function reference(blocks: Block[], k: number): Reference {
  const hit = refCache.get(blocks);
  if (hit) return hit;
  const r: Reference = { blocks: blocks.length, pooled: emptyAgg(k), byHour: Array.from({ length: 24 }, () => emptyAgg(k)), disp: {} };
  for (const b of blocks) {
    addAgg(r.pooled, b);
    addAgg(r.byHour[b.hour], b);
    for (const [f, m] of Object.entries(b.disp)) {
      const t = (r.disp[f] ??= [0, 0, 0, 0, 0]);
      for (let i = 0; i < 5; i++) t[i] += m[i];
    }
  }
  refCache.set(blocks, r);
  return r;
}

/**
 * The dispersion φ(n) at a window of n requests (or n requests of a cluster, for rates), from the
 * reference windows' Pearson statistics r (X²/df, mean 1 for binomial / multinomial counts):
 * E[r] = φ0 + κ·n. φ0 > 1 is clustering at any volume (sessions repeating a query: a design
 * effect); κ > 0 is the true rate itself wandering between windows (bursts, within-hour cycles),
 * whose weight grows with the volume. When the reference's window sizes vary too little to
 * separate the two (coefficient of variation < 0.2), φ(n) = max(r̄, 1 + (r̄ − 1)·n/n̄): the larger
 * of the two readings, conservative on both sides. Floor 1, cap maxDispersion.
 */
function dispersion(r: Reference, family: string, o: MonitorOptions): (n: number) => number {
  return dispersionOf(r.disp[family], o) ?? (() => 1);
}

/** φ(n) from Pearson moments [windows, Σn, Σn², Σr, Σn·r]; null with fewer than DISP_MIN_WINDOWS */
function dispersionOf(d: number[] | undefined, o: MonitorOptions): ((n: number) => number) | null {
  if (!d || d[0] < DISP_MIN_WINDOWS) return null;
  const [w, sn, sn2, sr, snr] = d;
  const mn = sn / w;
  const mr = sr / w;
  const vn = sn2 / w - mn * mn;
  const cap = (x: number) => Math.min(o.maxDispersion, Math.max(1, x));
  if (vn > (0.2 * mn) ** 2) {
    let kappa = Math.max(0, (snr / w - mn * mr) / vn);
    let phi0 = mr - kappa * mn;
    if (phi0 < 1) {
      phi0 = 1;
      kappa = Math.max(0, (mr - 1) / Math.max(mn, 1e-9));
    }
    return (n) => cap(phi0 + kappa * n);
  }
  return (n) => cap(Math.max(mr, 1 + ((mr - 1) * n) / Math.max(mn, 1e-9)));
}

/** the scope's counts of one window, on the cluster index */
function aggregate(windows: WindowCounts[], index: Map<number, number>, k: number): { agg: Agg; n: number } {
  const a = emptyAgg(k);
  let known = true;
  let ue = 0;
  for (const w of windows)
    for (const c of w.clusters as ClusterCounts[]) {
      const i = index.get(c.cluster)!;
      a.req[i] += c.requests;
      a.unc[i] += c.uncovered;
      a.escalated[i] += c.escalated;
      a.refused[i] += c.refused;
      a.failed[i] += c.failed;
      if (c.uncoveredEscalated === undefined) known = false;
      else ue += c.uncoveredEscalated;
      if (c.bands?.length) {
        const b = (a.bands ??= []);
        for (let j = 0; j < c.bands.length; j++) b[j] = at(b, j) + c.bands[j];
      }
    }
  a.uncEsc = known ? ue : null;
  return { agg: a, n: sum(a.req) };
}

const emptySessionAcc = (k: number, start: string): SessionAcc => ({
  sessions: 0,
  n: 0,
  m2: 0,
  hsq: 0,
  hx: 0,
  mixT: zeros(k + 1),
  mixQ: zeros(k + 1),
  bandT: [],
  bandQ: [],
  bandN: 0,
  bandM2: 0,
  bandX: zeros(BX * BX),
  bandMY: zeros(BX),
  unc: [0, 0, 0],
  cn: zeros(k),
  cn2: zeros(k),
  rate: Object.fromEntries(METRICS.map((m) => [m, [zeros(k), zeros(k), zeros(k)]])),
  start,
});

const cloneSessionAcc = (a: SessionAcc): SessionAcc => ({
  ...a,
  hsq: a.hsq ?? a.m2,
  hx: a.hx ?? a.m2,
  mixT: a.mixT.slice(),
  mixQ: a.mixQ.slice(),
  bandT: a.bandT.slice(),
  bandQ: a.bandQ.slice(),
  ...(a.bandX && a.bandMY ? { bandX: a.bandX.slice(), bandMY: a.bandMY.slice() } : {}),
  unc: [a.unc[0], a.unc[1], a.unc[2]],
  cn: a.cn.slice(),
  cn2: a.cn2.slice(),
  rate: Object.fromEntries(Object.entries(a.rate).map(([m, v]) => [m, [v[0].slice(), v[1].slice(), v[2].slice()]])) as SessionAcc['rate'],
  ...(a.runs ? { runs: cloneRuns(a.runs) } : {}),
  ...(a.uncRuns ? { uncRuns: cloneRuns(a.uncRuns) } : {}),
});

const grow = (a: number[], i: number, v: number) => {
  while (a.length <= i) a.push(0);
  a[i] += v;
};

/**
 * Adds whole closed sessions to the accumulator. Rows without a session id count as sessions of
 * one request each.
 */
function addSessions(acc: SessionAcc, rows: { key: string; c: SessionCell }[], index: Map<number, number>, k: number): void {
  const bySession = new Map<string, SessionCell[]>();
  for (const r of rows) {
    if (!index.has(r.c.cluster) || r.c.requests <= 0) continue;
    if (r.c.session === '') {
      // singletons: every request its own session (y ∈ {0, 1}, so Σ y² = Σ y)
      const c = r.c;
      const i = index.get(c.cluster)!;
      const n = c.requests;
      acc.sessions += n;
      acc.n += n;
      acc.m2 += n;
      acc.hsq = (acc.hsq ?? 0) + n;
      const cat = c.uncovered ? k : i;
      acc.mixT[cat] += n;
      acc.mixQ[cat] += n;
      if (c.band >= 0) {
        grow(acc.bandT, c.band, n);
        grow(acc.bandQ, c.band, n);
        acc.bandN += n;
        acc.bandM2 += n;
        if (acc.bandX && acc.bandMY && c.band < BX) {
          acc.bandX[c.band * BX + c.band] += n;
          acc.bandMY[c.band] += n;
        }
      }
      if (c.uncovered) {
        for (let j = 0; j < 3; j++) acc.unc[j] += n;
        addRuns((acc.uncRuns ??= emptyRuns()), 1, n);
      }
      acc.cn[i] += n;
      acc.cn2[i] += n;
      addRuns((acc.runs ??= emptyRuns()), 1, n);
      for (const m of METRICS) for (let j = 0; j < 3; j++) acc.rate[m][j][i] += c[m];
      continue;
    }
    const l = bySession.get(r.key);
    if (l) l.push(r.c);
    else bySession.set(r.key, [r.c]);
  }
  for (const cellsOf of bySession.values()) {
    let m = 0;
    let y = 0;
    let mb = 0;
    const mix = new Map<number, number>();
    const band = new Map<number, number>();
    const cl = new Map<number, number[]>();
    for (const c of cellsOf) {
      const i = index.get(c.cluster)!;
      m += c.requests;
      if (c.uncovered) y += c.requests;
      const cat = c.uncovered ? k : i;
      mix.set(cat, (mix.get(cat) ?? 0) + c.requests);
      if (c.band >= 0) {
        band.set(c.band, (band.get(c.band) ?? 0) + c.requests);
        mb += c.requests;
      }
      const t = cl.get(i) ?? [0, 0, 0, 0];
      t[0] += c.requests;
      t[1] += c.escalated;
      t[2] += c.refused;
      t[3] += c.failed;
      cl.set(i, t);
    }
    acc.sessions += 1;
    acc.n += m;
    acc.m2 += m * m;
    // its requests per clock hour: unknown counts as every pair in different hours (ρ = 1)
    const hq = cellsOf.find((c) => typeof c.hourSq === 'number' && Number.isFinite(c.hourSq))?.hourSq;
    const hsq = hq === undefined ? m * m : Math.min(m * m, Math.max(m, hq));
    acc.hsq = (acc.hsq ?? 0) + hsq;
    acc.hx = (acc.hx ?? 0) + (hq === undefined ? m * m : (m * m - hsq) / 2);
    for (const [c, v] of mix) {
      acc.mixT[c] += v;
      acc.mixQ[c] += v * v;
    }
    for (const [b, v] of band) {
      grow(acc.bandT, b, v);
      grow(acc.bandQ, b, v * v);
    }
    acc.bandN += mb;
    acc.bandM2 += mb * mb;
    if (acc.bandX && acc.bandMY) {
      for (const [b, v] of band) {
        if (b >= BX) continue;
        acc.bandMY[b] += mb * v;
        for (const [c, w] of band) if (c < BX) acc.bandX[b * BX + c] += v * w;
      }
    }
    acc.unc[0] += y;
    acc.unc[1] += y * y;
    if (y > 0) addRuns((acc.uncRuns ??= emptyRuns()), y);
    acc.unc[2] += m * y;
    for (const [i, t] of cl) {
      acc.cn[i] += t[0];
      acc.cn2[i] += t[0] * t[0];
      addRuns((acc.runs ??= emptyRuns()), t[0]);
      METRICS.forEach((met, j) => {
        const e = t[j + 1];
        acc.rate[met][0][i] += e;
        acc.rate[met][1][i] += t[0] * e;
        acc.rate[met][2][i] += e * e;
      });
    }
  }
}

/** the smallest correlation of adjacent hour cells' errors the reference noise assumes */
export const MIN_HOUR_RHO = 0.02;

/**
 * Upper bound on the correlation of adjacent hour-of-day reference cells' errors (ReferenceCell.rho
 * in detectors.ts). Only a session that straddles an hour puts requests in two cells: with m_h of
 * its requests in hour h and any correlation κ ∈ [0, 1] between two requests of one session, a
 * cell's error has variance ∝ Σ_s Σ_h (m_h + κ·m_h(m_h − 1)) and two cells' covariance
 * ∝ κ·Σ_s m_h·m_h', so their correlation is at most Σ_s Σ_{h<h'} m_h·m_h' / Σ_s Σ_h m_h² (all
 * pairs of hours, not only adjacent ones: conservative; κ taken as the same for all sessions),
 * estimated over the reference period as
 * `straddle` (SessionAcc.hx / hsq), raised by `up` (the estimate's roughness from few sessions)
 * and kept in [MIN_HOUR_RHO, 1]. null (too few sessions measured) gives 1.
 */
export function adjacentHourRho(straddle: number | null, up: number): number {
  if (straddle === null || !Number.isFinite(straddle)) return 1;
  return Math.min(1, Math.max(MIN_HOUR_RHO, straddle * Math.max(1, up)));
}

/** an accumulation period's totals as the ring keeps them (without its end) */
function sessionEntry(a: SessionAcc, novel: { q: number[]; mixes: number[] } | null): Omit<SessionEntry, 'end'> {
  return { sessions: a.sessions, n: a.n, m2: a.m2, hsq: a.hsq ?? a.m2, hx: a.hx ?? a.m2, ...sessionMoments(a, novel), ...(a.runs ? { runs: a.runs } : {}), ...(a.uncRuns ? { uncRuns: a.uncRuns } : {}) };
}

/**
 * The cluster-robust Pearson statistic of an accumulation period per family, and what it would
 * be for independent requests: num / den estimates the design effect (Kish) of whole sessions, 1
 * when a session's requests are independent, Σm²/Σm when each session repeats one category.
 */
function sessionMoments(a: SessionAcc, novel?: { q: number[]; mixes: number[] } | null): { num: Record<string, number>; den: Record<string, number> } {
  const num: Record<string, number> = {};
  const den: Record<string, number> = {};
  const multi = (t: number[], q: number[], n: number, m2: number, f: string) => {
    const cats = t.filter((v) => v > 0).length;
    if (cats < 2 || n <= 0) return;
    let x = -m2;
    for (let c = 0; c < t.length; c++) if (t[c] > 0) x += (q[c] * n) / t[c];
    num[f] = x;
    den[f] = (cats - 1) * (n - m2 / n);
  };
  multi(a.mixT, a.mixQ, a.n, a.m2, 'mix');
  multi(a.bandT, a.bandQ, a.bandN, a.bandM2, 'band');
  // the novel-topic detector's own directions: one score per band for each of its mixes
  if (novel && a.bandX && a.bandMY && a.bandN > 0 && novel.q.length <= BX) {
    const B = novel.q.length;
    const t = Array.from({ length: B }, (_, b) => at(a.bandT, b));
    const x = Array.from({ length: B * B }, (_, i) => a.bandX![Math.floor(i / B) * BX + (i % B)]);
    const cm = { n: a.bandN, m2: a.bandM2, t, x, my: a.bandMY.slice(0, B) };
    const p = t.map((v) => v / a.bandN);
    novel.mixes.forEach((mix, i) => {
      const d = directionalMoments(cm, novelScores(p, novel.q, mix));
      if (d) [num[`novel${i}`], den[`novel${i}`]] = [d.num, d.den];
    });
  }
  // the clusters' shares (covered and uncovered together, as the per-cluster share detectors count
  // them): a session's turns stay in one cluster more often than in one (cluster, covered) cell
  multi(a.cn, a.cn2, a.n, a.m2, 'share');
  const binary = (sy: number, sy2: number, smy: number, sn: number, sm2: number): [number, number] | null => {
    if (sn <= 0) return null;
    const p = sy / sn;
    if (!(p > 0 && p < 1)) return null;
    return [(sy2 - 2 * p * smy + p * p * sm2) / (p * (1 - p)), sn - sm2 / sn];
  };
  const u = binary(a.unc[0], a.unc[1], a.unc[2], a.n, a.m2);
  if (u) [num.unc, den.unc] = u;
  for (const m of METRICS) {
    const [e, ne, e2] = a.rate[m];
    for (let i = 0; i < a.cn.length; i++) {
      const b = binary(e[i], e2[i], ne[i], a.cn[i], a.cn2[i]);
      if (!b) continue;
      num[m] = (num[m] ?? 0) + b[0];
      den[m] = (den[m] ?? 0) + b[1];
    }
  }
  return { num, den };
}

/**
 * The escalation-family reference of every cluster (rate-reference.ts), once per reference (the
 * pooled reference changes when a block closes). The within-cluster variance is taken at φ = 1:
 * a design effect above 1 would let more of the clusters' spread be read as noise, so 1 keeps the
 * between-cluster variance, and the prior's weight, on the conservative side.
 */
const rateRefCache = new WeakMap<number[], Map<string, RateReference>>();
/**
 * A rising rate is tested against a reference that must not contain the evidence it is tested on:
 * with a rolling reference, the hours after a change enter the reference before the detector has
 * gathered enough evidence (at a trickle that takes days), and the reference climbs after the rate.
 * Each cluster's rate reference therefore leaves out the blocks since its rate detector's current
 * evidence segment began (`rateSince`; the segment and its reference are then disjoint, which is
 * what the segment's reference-noise term 1 + N/R assumes), keeping at least half of the
 * reference's blocks.
 */
function quarantinedRateReference(blocks: Block[], P: Agg, m: Metric, k: number, ids: number[], since: Record<string, number> | undefined): RateReference {
  const cut = ids.map((id) => quarantineCut(blocks, since?.[`${id}|${m}`]));
  const sig = `${k}|${cut.join(',')}`;
  let byCut = rateRefCache.get(P[m]);
  if (!byCut) rateRefCache.set(P[m], (byCut = new Map()));
  const hit = byCut.get(sig);
  if (hit) return hit;
  const x = Array.from({ length: k }, (_, i) => at(P[m], i));
  const n = Array.from({ length: k }, (_, i) => at(P.req, i));
  for (let i = 0; i < k; i++) {
    if (!Number.isFinite(cut[i])) continue;
    for (let b = blocks.length - 1; b >= 0 && blocks[b].key >= cut[i]; b--) {
      x[i] -= at(blocks[b][m], i);
      n[i] -= at(blocks[b].req, i);
    }
  }
  const r = rateReference(x, n, 1);
  if (byCut.size > 64) byCut.clear();
  byCut.set(sig, r);
  return r;
}

/** the first block a quarantine leaves out (Infinity: none), keeping at least half of the reference's blocks */
function quarantineCut(blocks: Block[], since: number | undefined): number {
  if (since === undefined || blocks.length === 0) return Infinity;
  const minKeep = Math.ceil(blocks.length / 2);
  const floorKey = blocks.length > minKeep ? blocks[minKeep - 1].key + 1 : Infinity;
  const c = Math.max(floorKey, since);
  // (a segment begun in the block in progress cuts nothing yet)
  return c > blocks[blocks.length - 1].key ? Infinity : c;
}

/** a cluster's share reference with a quarantine: its requests and all requests, this hour's cell and pooled */
interface ShareCut {
  h: number;
  hn: number;
  p: number;
  pn: number;
}
const shareCutCache = new WeakMap<Block[], Map<string, ShareCut>>();
/**
 * cluster_mix's per-cluster share detectors face the same rolling reference as the escalation
 * family (see quarantinedRateReference): at a trickle a tripled share takes days to establish, and
 * meanwhile its hours enter the hour-of-day cells of the reference, which climb after the share
 * and take the evidence back. The cluster's share reference therefore leaves out the blocks since
 * its share detector's current evidence segment began (its requests and all requests of those
 * blocks, in this hour's cell and in the pooled reference), keeping at least half of the
 * reference's blocks. Null when nothing is cut.
 */
function quarantinedShare(blocks: Block[], ref: Reference, i: number, hour: number, since: number | undefined): ShareCut | null {
  const cut = quarantineCut(blocks, since);
  if (!Number.isFinite(cut)) return null;
  let byKey = shareCutCache.get(blocks);
  if (!byKey) shareCutCache.set(blocks, (byKey = new Map()));
  const sig = `${cut}|${i}|${hour}`;
  const hit = byKey.get(sig);
  if (hit) return hit;
  const H = ref.byHour[hour];
  const r: ShareCut = { h: at(H.req, i), hn: sum(H.req), p: at(ref.pooled.req, i), pn: sum(ref.pooled.req) };
  for (let b = blocks.length - 1; b >= 0 && blocks[b].key >= cut; b--) {
    const x = at(blocks[b].req, i);
    const t = sum(blocks[b].req);
    r.p -= x;
    r.pn -= t;
    if (blocks[b].hour === hour) {
      r.h -= x;
      r.hn -= t;
    }
  }
  r.h = Math.max(0, r.h);
  r.hn = Math.max(0, r.hn);
  r.p = Math.max(0, r.p);
  r.pn = Math.max(0, r.pn);
  byKey.set(sig, r);
  return r;
}

/** how a thin cluster's reference rate was made, for the escalation findings ('' when it is its own) */
function borrowedNote(r: RateReference | undefined, i: number): string {
  if (!r?.shrunk[i]) return '';
  return `, weighed with all clusters' ${pct(r.mean)} as far as their spread allows`;
}

function normalInterval(p: number, n: number, phi: number): [number, number] {
  if (n <= 0) return [0, 1];
  const h = 1.96 * Math.sqrt((phi * p * (1 - p)) / n);
  return [Math.max(0, p - h), Math.min(1, p + h)];
}

export function createEvaluateWindow(options: Partial<MonitorOptions> = {}) {
  const o: MonitorOptions = { ...DEFAULT_MONITOR, ...options };
  const cusumOpts = { ratios: o.ratios, minRequests: o.minRequests, minEvents: o.minEvents };

  function fresh(ctx: MonitorContext): State {
    const ids = Object.keys(ctx.evalShares)
      .map(Number)
      .sort((a, b) => a - b);
    return { version: 1, modelVersion: ctx.modelVersion, clusterIds: ids, scopes: {}, episodes: {}, lastWindow: null };
  }

  function freshScope(): ScopeState {
    return { blocks: [], current: null, recent: emptyAgg(0), det: { unc: null, cal: null, budget: null, uncEsc: null, mix: null, novel: null, share: {}, rate: {} }, mismatch: null };
  }

  return function evaluateWindow(prev: MonitorState | null, windows: WindowCounts[], ctx: MonitorContext): MonitorEvaluation {
    const notices: string[] = [];
    let st: State;
    if (prev && prev.modelVersion !== ctx.modelVersion) {
      notices.push(
        `coverage model changed from ${prev.modelVersion} to ${ctx.modelVersion}: production references and detectors restart (production-relative rules wait for ${o.warmupHours} h of reference and ${o.warmupSessions} closed sessions; fixed-rate rules for the dispersion)`,
      );
      st = fresh(ctx);
    } else st = prev ? { ...(prev as State), scopes: { ...(prev as State).scopes }, episodes: { ...(prev as State).episodes } } : fresh(ctx);

    const mine = windows.filter((w) => w.modelVersion === ctx.modelVersion);
    if (mine.length < windows.length)
      notices.push(`${windows.length - mine.length} window(s) of another coverage model version ignored (the monitor runs model ${ctx.modelVersion})`);
    const findings: Finding[] = [];
    const trends: TrendRow[] = [];
    const prevFiring = new Set(o.output === 'changes' ? Object.keys(st.episodes).filter((k) => st.episodes[k].firing) : []);
    if (mine.length === 0) return { state: st, findings, trends, notices };

    const { start, end, t0, windowMs, widx, arlWindows } = windowClock(mine[0], o.arlDays);
    const blockMs = o.blockMinutes * 60000;
    const bkey = Math.floor(t0 / blockMs);
    const hour = new Date(bkey * blockMs).getUTCHours();
    const maxBlocks = Math.round((o.referenceDays * 24 * 60) / o.blockMinutes);
    const warmBlocks = Math.ceil((o.warmupHours * 60) / o.blockMinutes);
    const decay = Math.pow(0.5, windowMs / (o.recentHalfLifeMinutes * 60000));
    const resolveWindows = Math.max(1, Math.round((o.resolveMinutes * 60000) / windowMs));

    // clusters: the model's, plus any id the counts name that the context did not
    const ids = st.clusterIds.slice();
    for (const w of mine) for (const c of w.clusters) if (!ids.includes(c.cluster)) ids.push(c.cluster);
    st.clusterIds = ids;
    const K = ids.length;
    const index = new Map(ids.map((c, i) => [c, i]));
    const evalShare = (i: number) => ctx.evalShares[ids[i]] ?? 0;
    const label = (i: number) => ctx.labels?.[ids[i]];

    const agents = [...new Set(mine.map((w) => w.agent))].sort();
    const knownAgents = new Set([...Object.keys(st.scopes).filter((a) => a !== '*'), ...agents]);
    const S = knownAgents.size + 1;
    // thresholds: each rule's alarm budget 1/ARL split over its scopes and alternatives, counted in
    // the updates that can raise a statistic (windows with data), not in clock windows, and never
    // above the clock count (src/monitor/update-rates.ts)
    // uncovered_share runs two detectors when the model has bands: the budget is split over both
    const q = ctx.novelProfile && ctx.novelProfile.length > 1 ? ctx.novelProfile : null;
    const novelDirs = q ? { q, mixes: o.novelMixes } : null;
    const th = updateThresholds(st.upd, mine, t0, { arlDays: o.arlDays, referenceDays: o.referenceDays, blockMinutes: o.blockMinutes, ratios: o.ratios, novelMixes: q ? o.novelMixes.length : 0, K, S, metrics: METRICS.length, arlWindows });
    st.upd = th.state;
    const { one: hOne, unc: hUnc, mixCluster: hMixCluster, mixOmni: hMixOmni, rate: hRate } = th.h;

    for (const agent of ['*', ...agents]) {
      const scopeWindows = agent === '*' ? mine : mine.filter((w) => w.agent === agent);
      const { agg: now, n } = aggregate(scopeWindows, index, K);
      const prevScope = st.scopes[agent] ?? freshScope();
      const sc: ScopeState = {
        ...prevScope,
        det: { ...prevScope.det, share: { ...prevScope.det.share }, rate: { ...prevScope.det.rate } },
      };
      st.scopes[agent] = sc;
      // close the block in progress when the window starts a new one
      let blocks = sc.blocks;
      let cur = sc.current ? cloneBlock(sc.current) : null;
      if (cur && cur.key !== bkey) {
        if (!cur.tainted && sum(cur.req) > 0) blocks = [...blocks, cur].slice(-maxBlocks);
        cur = null;
      }
      cur ??= { ...emptyAgg(K), key: bkey, hour, disp: {}, tainted: false };
      sc.blocks = blocks;
      const ref = reference(blocks, K);
      const recent = cloneAgg(sc.recent);
      scaleAgg(recent, decay);
      addAgg(recent, now);
      sc.recent = recent;

      // ---- sessions, the unit of evidence: whole closed sessions measure each family's design effect ----
      const closed = scopeWindows.flatMap((w) => (w.closedSessions ?? []).map((c) => ({ key: `${w.agent}\u0000${c.session}`, c })));
      if (sc.sess || closed.length > 0 || scopeWindows.some((w) => (w.sessions ?? 0) > 0)) {
        // a new object only when something changed (the totals below are cached per object)
        let ss: SessionState = sc.sess ?? { seen: true, acc: null, ring: [] };
        if (closed.length > 0) {
          const acc: SessionAcc = ss.acc ? cloneSessionAcc(ss.acc) : emptySessionAcc(K, start);
          if (acc.cn.length < K) {
            // clusters the model did not name: the arrays grow (uncovered stays the last mix category)
            const u = acc.mixT.pop()!;
            const uq = acc.mixQ.pop()!;
            while (acc.cn.length < K) {
              acc.cn.push(0);
              acc.cn2.push(0);
              acc.mixT.push(0);
              acc.mixQ.push(0);
              for (const m of METRICS) for (const a of acc.rate[m]) a.push(0);
            }
            acc.mixT.push(u);
            acc.mixQ.push(uq);
          }
          addSessions(acc, closed, index, K);
          ss = { ...ss, acc };
        }
        // a period closes after an hour holding at least minSessions sessions; periods older than
        // the reference drop out
        if (ss.acc && ss.acc.sessions >= o.minSessions && t0 - Date.parse(ss.acc.start) >= 3600000) {
          ss = { ...ss, ring: [...ss.ring, { end: start, ...sessionEntry(ss.acc, novelDirs) }].filter((x) => t0 - Date.parse(x.end) < o.referenceDays * 86400000), acc: null };
        }
        sc.sess = ss;
      }
      const sessAll = !sc.sess ? null : sessCache.get(sc.sess) ?? (() => {
        const ss = sc.sess!;
        const num: Record<string, number> = {};
        const den: Record<string, number> = {};
        let sessions = 0;
        let sn = 0;
        let sm2 = 0;
        let shsq = 0;
        let shx = 0;
        const runs = emptyRuns();
        const uncRuns = emptyRuns();
        const add = (x: { sessions: number; n?: number; m2?: number; hsq?: number; hx?: number; num: Record<string, number>; den: Record<string, number>; runs?: RunHistogram; uncRuns?: RunHistogram }) => {
          sessions += x.sessions;
          if (x.runs) mergeRuns(runs, x.runs);
          if (x.uncRuns) mergeRuns(uncRuns, x.uncRuns);
          // without sizes (older checkpoints), sessions of one request
          sn += x.n ?? x.sessions;
          sm2 += x.m2 ?? x.sessions;
          shsq += x.hsq ?? x.m2 ?? x.sessions;
          shx += x.hx ?? x.m2 ?? x.sessions;
          for (const f of Object.keys(x.den)) {
            num[f] = (num[f] ?? 0) + x.num[f];
            den[f] = (den[f] ?? 0) + x.den[f];
          }
        };
        for (const x of ss.ring) add(x);
        if (ss.acc && ss.acc.sessions > 0) add(sessionEntry(ss.acc, novelDirs));
        const r = { num, den, sessions, effective: sm2 > 0 ? Math.min(sessions, (sn * sn) / sm2) : sessions, runs, uncRuns, straddle: shsq > 0 ? Math.min(1, shx / shsq) : 1 };
        sessCache.set(ss, r);
        return r;
      })();
      /** session ids are present and enough sessions have closed to measure the design effect */
      const sessOk = sessAll !== null && sessAll.sessions >= o.minSessions;
      // an estimate from few sessions is rough: its upper ~95% bound (a ratio of sums over S sessions,
      // S counted as Kish's effective number n²/Σm²: the sums are dominated by the long sessions)
      const sessUp = sessAll && sessAll.effective > 0 ? 1 + 2 * Math.sqrt(2 / sessAll.effective) : 1;
      const rhoHours = o.hourCorrelation === 'measured' ? adjacentHourRho(sessOk ? sessAll!.straddle : null, sessUp) : 1;
      const sessPhi = (f: string) => {
        if (!sessOk || !(sessAll!.den[f] > 0)) return 1;
        return Math.min(o.maxDispersion, Math.max(1, (sessAll!.num[f] / sessAll!.den[f]) * sessUp));
      };
      const ready = ref.blocks >= warmBlocks && (!sc.sess || (sessOk && sessAll!.sessions >= o.warmupSessions));
      // The uncovered detectors' tail factor per odds ratio: how much more than the design effect a
      // whole session's likelihood ratio needs to have mean ≤ 1 under the sessions' measured counts
      // of uncovered requests (session-evalue.ts, as for the per-cluster shares): at the night trough
      // of a flood a burst of a few long sessions of uncovered retries has a heavier upper tail than
      // the design effect (their variance) describes.
      const uncTail = (ratios: number[]): number[] | null =>
        sessOk && sessAll!.uncRuns.c.length > 0 ? tailFactors(sessAll!.uncRuns, ratios).map((t) => Math.min(t, o.maxDispersion)) : null;
      const withTail = (d: Dispersion, tau: number[] | null): Dispersion =>
        tau === null || typeof d === 'number' ? d : (N: number, v: number, g?: number) => d(N, v) * (g === undefined ? 1 : tau[g] ?? 1);
      const tauUnc = uncTail(o.ratios);

      // ---- references for this hour of day (shrunk toward the pooled reference) ----
      const P = ref.pooled;
      const H = ref.byHour[hour];
      const PN = sum(P.req);
      const HN = sum(H.req);
      const a = o.hourShrink;
      const pooledUnc = (sum(P.unc) + 0.5) / (PN + 1);
      const p0Unc = (sum(H.unc) + a * pooledUnc) / (HN + a);
      // cluster mix: K covered categories + uncovered
      // coverage depth bands: this hour's reference per band, shrunk toward the pooled one
      const B = q ? q.length : 0;
      const PB = P.bands ? sum(P.bands) : 0;
      const HB = H.bands ? sum(H.bands) : 0;
      const NB = now.bands ? sum(now.bands) : 0;
      const bandP0 = Array.from({ length: B }, (_, b) => {
        const pooled = (at(P.bands ?? [], b) + 0.5) / (PB + 0.5 * B);
        return (at(H.bands ?? [], b) + a * pooled) / (HB + a);
      });
      const bandsOn = B > 0 && PB > 0 && NB > 0;
      const mixPooled = Array.from({ length: K + 1 }, (_, i) => ((i < K ? at(P.req, i) - at(P.unc, i) : sum(P.unc)) + 0.5) / (PN + 0.5 * (K + 1)));
      const mixP0 = mixPooled.map((p, i) => ((i < K ? at(H.req, i) - at(H.unc, i) : sum(H.unc)) + a * p) / (HN + a));
      const sharePooled = Array.from({ length: K }, (_, i) => (at(P.req, i) + 0.5) / (PN + 0.5 * K));
      const shareP0 = sharePooled.map((p, i) => (at(H.req, i) + a * p) / (HN + a));
      const rateTable = {} as Record<Metric, number[]>;
      for (const m of METRICS) {
        const all = (sum(P[m]) + 0.5) / (PN + 1);
        rateTable[m] = Array.from({ length: K }, (_, i) => Math.min(0.999, Math.max(1e-4, (at(P[m], i) + 20 * all) / (at(P.req, i) + 20))));
      }
      // with sessions measured, each cluster's rate borrows from the others as far as their measured
      // spread allows (empirical Bayes, src/monitor/rate-reference.ts); its error is worth rateSize requests
      const rateSize = {} as Record<Metric, number[]>;
      const rateRefs = {} as Partial<Record<Metric, RateReference>>;
      if (sessOk) {
        for (const m of METRICS) {
          const rr = quarantinedRateReference(blocks, P, m, K, ids, prevScope.det.rateSince);
          rateTable[m] = rr.p0;
          rateSize[m] = rr.size;
          rateRefs[m] = rr;
        }
      }
      const rateP0 = (m: Metric, i: number) => rateTable[m][i];
      const rateRefSize = (m: Metric, i: number) => rateSize[m]?.[i] ?? at(P.req, i) + 20;

      // ---- dispersion from the reference's window-to-window variability ----
      const models = new Map<string, (n: number) => number>();
      const phi = (f: string, volume: number) => {
        let m = models.get(f);
        // (the per-cluster shares have no windows' statistic of their own: the mix's)
        if (!m) models.set(f, (m = dispersion(ref, f === 'share' ? 'mix' : f, o)));
        // With whole sessions measured, their design effect replaces the windows' growth with volume
        // (κ·n): at a trickle a window's size mostly counts turns of the same sessions, which the
        // windows' Pearson statistics read as a wandering rate and extrapolate to the segment.
        return sessOk ? Math.max(m(0), sessPhi(f)) : m(volume);
      };
      const pearson = (f: string, x2: number, df: number, volume: number) => {
        if (!(df > 0) || !(volume > 0) || !Number.isFinite(x2)) return;
        const t = (cur!.disp[f] ??= [0, 0, 0, 0, 0]);
        const r = x2 / df;
        t[0] += 1;
        t[1] += volume;
        t[2] += volume * volume;
        t[3] += r;
        t[4] += volume * r;
      };
      const nowUnc = sum(now.unc);
      const mixNow = Array.from({ length: K + 1 }, (_, i) => (i < K ? now.req[i] - now.unc[i] : nowUnc));
      if (ref.blocks > 0 && n > 0) {
        pearson('unc', (nowUnc - n * p0Unc) ** 2 / (n * p0Unc * (1 - p0Unc)), 1, n);
        let x2 = 0;
        for (let i = 0; i <= K; i++) x2 += (mixNow[i] - n * mixP0[i]) ** 2 / (n * mixP0[i]);
        pearson('mix', x2, K, n);
        if (bandsOn) {
          let xb = 0;
          for (let b = 0; b < B; b++) xb += (at(now.bands!, b) - NB * bandP0[b]) ** 2 / (NB * bandP0[b]);
          pearson('band', xb, B - 1, NB);
        }
        for (const m of METRICS) {
          for (let i = 0; i < K; i++) {
            if (now.req[i] <= 0) continue;
            const p = rateP0(m, i);
            pearson(m, (now[m][i] - now.req[i] * p) ** 2 / (now.req[i] * p * (1 - p)), 1, now.req[i]);
          }
        }
      }

      // ---- detectors ----
      const verdicts = new Map<string, { rule: RuleName; cluster: number | null; v: Verdict; extra?: Metric }>();
      const run = (key: string, rule: RuleName, cluster: number | null, v: Verdict, extra?: Metric) => verdicts.set(key, { rule, cluster, v, extra });
      /** clusters whose share reference is quarantined this window: that reference (for the findings) */
      const shareQ = new Map<number, number>();
      const idle = (h: number): Verdict => ({ alarm: false, statistic: 0, threshold: h, segmentRequests: 0, segmentEvents: 0, ratio: 1 });
      const phiUnc = phi('unc', n);
      const phiMix = phi('mix', n);
      if (ready) {
        const unc = new BernoulliCusum({ ...cusumOpts, threshold: hUnc }, sc.det.unc ?? undefined);
        // the reference is an estimate: rising detectors test against its upper standard-error
        // bound (dispersion-aware), so a reference that happens to sit low does not read as a rise
        const refN = HN + a;
        // (with sessions measured, the segment-scale factor 1 + N/refN of seg() carries the
        // reference's noise instead: counting it twice would cap what a segment can show)
        const upper = (p: number, m: number, f: string) => (sessOk ? p : Math.min(0.999, p + Math.sqrt((phi(f, n) * p * (1 - p)) / Math.max(1, m))));
        // evidence is scaled by φ of the detector's whole segment (see Dispersion in detectors.ts)
        // With sessions measured (κ dropped, see phi), the reference's own noise enters at the
        // segment's scale instead: Var(x − N·p̂0) = φ·N·p(1−p)·(1 + N/refN)
        // The segment spans hours; each hour is tested against its own hour-of-day cell of the
        // reference, estimated from other requests: the detectors track Σ_h N_h²/R_h over the cells
        // the segment met (ReferenceCell in detectors.ts), so a segment of many hours carries the
        // noise of many cells (averaged), not N²/R of the current cell alone. The pooled reference
        // every cell is shrunk toward is shared by all of them: its part (w·N)²/PN is added.
        // (only with sessions measured: without session ids the detectors keep their old state and path)
        const hourCell = (size: number): ReferenceCell | undefined => (sessOk ? { cell: Math.floor(t0 / 3600000), size, period: 24, rho: rhoHours } : undefined);
        const wPool = a / (HN + a);
        const seg = (f: string) => (N: number, v: number) => phi(f, N) * (sessOk && N > 0 ? 1 + (v + (wPool * N) ** 2 / Math.max(1, PN)) / N : 1);
        // the novel-topic detector: the bands' design effect in its own directions (the largest over
        // its mixes, src/monitor/sandwich.ts) when whole sessions measured it, else the family's
        const phiNovelDir = Math.max(1, ...o.novelMixes.map((_, i) => sessPhi(`novel${i}`)));
        const segBand = seg('band');
        const segNovel = (N: number, v: number) => {
          const pb = phi('band', N);
          return segBand(N, v) * (pb > 0 ? Math.max(pb, phiNovelDir) / pb : 1);
        };
        const segRate = (f: string) => (N: number, v: number) => phi(f, N) * (sessOk && N > 0 ? 1 + v / N : 1);
        run('uncovered_share', 'uncovered_share', null, unc.update(nowUnc, n, upper(p0Unc, refN, 'unc'), withTail(seg('unc'), tauUnc), hourCell(refN)));
        sc.det.unc = unc.toJSON();
        if (q) {
          // novel topics: a share of traffic moving to the model's novel-topic band profile; the
          // reference of the bands the profile favours is taken at its upper bound (conservative)
          const d = new ProfileCusum({ mixes: o.novelMixes, threshold: hUnc, minRequests: o.minRequests, minEvents: o.minEvents }, sc.det.novel ?? undefined);
          if (bandsOn) {
            const p0n = bandP0.map((p, b) => (q[b] > p ? upper(p, HB + a, 'band') : p));
            // (no tail factor here: bounding its mixes by their largest per-request ratio with the
            // sessions' uncovered counts lost 5% novel intents at 0.05 requests/s; docs/monitor.md)
            run('novel_topics', 'uncovered_share', null, d.update(now.bands!, p0n, q, segNovel, hourCell(HB + a)));
          }
          sc.det.novel = d.toJSON();
        }
        const mix = new DirichletMultinomialCusum({ concentration: o.concentration, threshold: hMixOmni, minRequests: o.minRequests }, sc.det.mix ?? undefined);
        // the omnibus test carries the reference's own noise as extra dispersion: about one hour of
        // evidence against the reference hours it is compared with
        // with sessions measured, at least the whole segment's evidence (it spans hours at a trickle)
        // (the omnibus keeps the current cell's N/R: its mixture alternative adapts to whatever
        // direction the reference errs in, and sessions straddling an hour correlate adjacent cells)
        const mixSeg = Math.max(n * (3600000 / windowMs), sessOk ? (sc.det.mix?.requests ?? 0) + n : 0);
        run('cluster_mix', 'cluster_mix', null, mix.update(mixNow, mixP0, phiMix * (1 + mixSeg / refN)));
        sc.det.mix = mix.toJSON();
        // per alternative (odds ratio), the design effect times the tail factor at which a whole
        // session's likelihood ratio has mean ≤ 1 under the sessions' measured counts per cluster
        // (session-evalue.ts): a count made of a few long sessions has a heavier upper tail than the
        // design effect (its variance) describes
        const segShare = shareDispersion(seg('share'), (N) => phi('share', N), sessOk ? evalueDispersions(sessAll!.runs, o.ratios) : null, sessOk ? runsDesignEffect(sessAll!.runs) : 0, o.maxDispersion);
        let evq: { e: number[]; d: number } | undefined;
        for (let i = 0; i < K; i++) {
          const key = String(ids[i]);
          if (at(P.req, i) <= 0 && now.req[i] <= 0) continue;
          const d = new BernoulliCusum({ ...cusumOpts, threshold: hMixCluster }, sc.det.share[key]);
          // the evidence segment's own hours stay out of this cluster's share reference (with sessions measured)
          const qs = sessOk ? quarantinedShare(blocks, ref, i, hour, prevScope.det.shareSince?.[key]) : null;
          if (qs) {
            const p0 = (qs.h + a * ((qs.p + 0.5) / (qs.pn + 0.5 * K))) / (qs.hn + a);
            const wq = a / (qs.hn + a);
            evq ??= { e: evalueDispersions(sessAll!.runs, o.ratios), d: runsDesignEffect(sessAll!.runs) };
            const segQ = shareDispersion((N, v) => phi('share', N) * (N > 0 ? 1 + (v + (wq * N) ** 2 / Math.max(1, qs.pn)) / N : 1), (N) => phi('share', N), evq.e, evq.d, o.maxDispersion);
            shareQ.set(i, p0);
            run(`share|${key}`, 'cluster_mix', ids[i], d.update(now.req[i], n, p0, segQ, hourCell(qs.hn + a)));
          } else run(`share|${key}`, 'cluster_mix', ids[i], d.update(now.req[i], n, upper(shareP0[i], refN, 'mix'), segShare, hourCell(refN)));
          sc.det.share[key] = d.toJSON();
          if (sessOk) {
            if (sc.det.shareSince === prevScope.det.shareSince) sc.det.shareSince = { ...(prevScope.det.shareSince ?? {}) };
            const since = sc.det.shareSince!;
            if (d.statistic > 0) since[key] ??= bkey;
            else delete since[key];
          }
          for (const m of METRICS) {
            const rk = `${key}|${m}`;
            const r = new BernoulliCusum({ ...cusumOpts, threshold: hRate }, sc.det.rate[rk]);
            // one pooled reference per cluster (not by hour): a single cell, Σ N²/R = N²/R
            run(`rate|${rk}`, 'escalation', ids[i], r.update(now[m][i], now.req[i], upper(rateP0(m, i), at(P.req, i) + 20, m), segRate(m), sessOk ? { cell: 0, size: rateRefSize(m, i), period: 0 } : undefined), m);
            sc.det.rate[rk] = r.toJSON();
            if (sessOk) {
              // the evidence segment's own hours stay out of this cluster's rate reference
              // (copied once per window: the previous window's state stays as it was)
              if (sc.det.rateSince === prevScope.det.rateSince) sc.det.rateSince = { ...(prevScope.det.rateSince ?? {}) };
              const since = sc.det.rateSince!;
              if (r.statistic > 0) since[rk] ??= bkey;
              else delete since[rk];
            }
          }
        }
        if (now.uncEsc !== null && P.uncEsc !== null) {
          // conditional test: given all escalations of the window, are they more often uncovered
          // than the uncovered share of traffic (times the reference's own odds ratio, ≥ 1)?
          const escAll = sum(now.escalated);
          const uShare = n > 0 ? nowUnc / n : 0;
          const refEsc = sum(P.escalated);
          const refUShare = (sum(P.unc) + 0.5) / (PN + 1);
          const refEscU = (P.uncEsc + 0.5) / (refEsc + 1);
          const orRef = Math.max(1, (refEscU / (1 - refEscU)) / (refUShare / (1 - refUShare)));
          const p0 = Math.min(0.999, Math.max(1e-4, (orRef * uShare) / (1 - uShare + orRef * uShare)));
          const d = new BernoulliCusum({ ...cusumOpts, threshold: hOne }, sc.det.uncEsc ?? undefined);
          run('uncovered_escalation', 'uncovered_escalation', null, uShare > 0 && uShare < 1 ? d.update(now.uncEsc, escAll, p0, phi('escalated', escAll)) : idle(hOne));
          sc.det.uncEsc = d.toJSON();
        }
      }
      // Fixed references need no production history, but the traffic's dispersion must be known:
      // counted as independent requests, sessions repeating one query would read as evidence. Until
      // the reference has measured it, it comes from the scope's own first windows against their
      // running rate, and these rules wait for DISP_MIN_WINDOWS such windows.
      let phiFixed: Dispersion | null = (N: number) => phi('unc', N);
      if ((ref.disp.unc?.[0] ?? 0) < DISP_MIN_WINDOWS) {
        const e = { unc: sc.early?.unc ?? 0, req: sc.early?.req ?? 0, disp: (sc.early?.disp ?? [0, 0, 0, 0, 0]).slice() };
        // the first DISP_MIN_WINDOWS windows once the running rate rests on 50 requests: frozen then,
        // so that a shift in the early traffic cannot inflate it further
        if (e.req >= 50 && n > 0 && e.disp[0] < DISP_MIN_WINDOWS) {
          const p = (e.unc + 0.5) / (e.req + 1);
          const r = (nowUnc - n * p) ** 2 / (n * p * (1 - p));
          e.disp[0] += 1;
          e.disp[1] += n;
          e.disp[2] += n * n;
          e.disp[3] += r;
          e.disp[4] += n * r;
        }
        e.unc += nowUnc;
        e.req += n;
        sc.early = e;
        const f = dispersionOf(e.disp, o);
        // an estimate from 20 windows is rough: its upper ~95% bound (r̄ has sd ≈ r̄·√(2/w))
        const up = 1 + 2 * Math.sqrt(2 / e.disp[0]);
        // with session ids, the sessions' design effect (measured across windows) is what matters
        // (until minSessions have closed, the windows' reading alone, as without session ids)
        phiFixed = sessOk
          ? (N: number) => Math.max(f ? Math.min(o.maxDispersion, f(N) * up) : 1, sessPhi('unc'))
          : f
            ? (N: number) => Math.min(o.maxDispersion, f(N) * up)
            : null;
      } else if (sc.early) delete sc.early;
      const cal = new BernoulliCusum({ ...cusumOpts, threshold: hOne }, sc.det.cal ?? undefined);
      const pCalBase = Math.min(0.999, Math.max(1e-4, ctx.calibratedRateInterval?.[1] ?? ctx.calibratedRate));
      // once an excess is reported, only a further rise above its level is news
      const pCal = Math.min(0.999, Math.max(pCalBase, sc.calFact ?? 0));
      run('uncovered_vs_calibrated', 'uncovered_vs_calibrated', null, phiFixed !== null ? cal.update(nowUnc, n, pCal, withTail(phiFixed, tauUnc)) : idle(hOne));
      sc.det.cal = cal.toJSON();
      if (o.budget !== null) {
        const b = new BernoulliCusum({ ...cusumOpts, threshold: hOne }, sc.det.budget ?? undefined);
        run('uncovered_budget', 'uncovered_budget', null, phiFixed !== null ? b.update(nowUnc, n, o.budget, phiFixed) : idle(hOne));
        sc.det.budget = b.toJSON();
      }

      // novel_vs_calibrated: the share of requests in the deepest bands against the upper end of the
      // fit's interval for new phrasings of tested intents (src/coverage/bands.ts heldOutDeep); a
      // fixed reference, so it runs from the first windows and keeps running once production history
      // exists. Evidence is divided by the sessions' design effect (the larger of the uncovered
      // share's and the bands'); with session ids it waits until minSessions have closed (until
      // then a long session of one deep query would read as many), without them it uses the
      // windows' dispersion as the other fixed-rate rules do.
      // (a statement from before the deep bands' 1% floor is not relied on: MonitorContext.heldOutDeep)
      const hd = ctx.heldOutDeep && ctx.heldOutDeep.deepBands > 0 && !ctx.heldOutDeep.belowFloor ? ctx.heldOutDeep : null;
      const pDeepBase = hd ? Math.min(0.999, Math.max(1e-4, hd.interval[1])) : 0;
      const pDeep = Math.min(0.999, Math.max(pDeepBase, sc.deepFact ?? 0));
      const phiDeep: Dispersion | null =
        phiFixed === null || (sc.sess && !sessOk)
          ? null
          : (N: number, t: number) => Math.max(typeof phiFixed === 'number' ? phiFixed : phiFixed!(N, t), sessPhi('band'));
      if (hd) {
        const nowBands = now.bands ?? [];
        const bandN = sum(nowBands);
        let deepX = 0;
        for (let b = 0; b < hd.deepBands; b++) deepX += at(nowBands, b);
        const d = new BernoulliCusum({ ...cusumOpts, threshold: hOne }, sc.det.deep ?? undefined);
        run('novel_vs_calibrated', 'novel_vs_calibrated', null, phiDeep !== null && bandN > 0 ? d.update(deepX, bandN, pDeep, withTail(phiDeep, tauUnc)) : idle(hOne));
        sc.det.deep = d.toJSON();
        // each cluster's deep requests, decayed like the recent shares
        const by = (sc.deepBy ?? []).map((v) => v * decay);
        for (const w of scopeWindows)
          for (const c of w.clusters) {
            const i = index.get(c.cluster)!;
            let x = 0;
            for (let b = 0; b < hd.deepBands; b++) x += at(c.bands ?? [], b);
            if (x > 0) grow(by, i, x);
          }
        sc.deepBy = by;
      }

      // ---- episodes (hysteresis) ----
      const episode = (rule: RuleName, cluster: number | null, alarm: boolean, stat: number, h: number) => {
        const key = `${rule}|${agent}|${cluster ?? ''}`;
        const e: Episode = { ...(st.episodes[key] ?? { firing: false, lastAlarm: -Infinity }) };
        if (alarm) {
          if (!e.firing) e.onset = start;
          e.firing = true;
          e.lastAlarm = widx;
        } else if (e.firing && widx - e.lastAlarm >= resolveWindows && stat < h / 2) {
          e.firing = false;
          delete e.onset;
        }
        st.episodes[key] = e;
        if (e.firing && RELATIVE.includes(rule) && t0 - Date.parse(e.onset ?? start) < o.freezeHours * 3600000) relativeFiring = true;
        return e;
      };
      let relativeFiring = false;

      // shares shown: recent (exponentially weighted) now, reference, eval set
      const RN = sum(recent.req);
      const shareNow = (i: number) => (RN > 0 ? at(recent.req, i) / RN : 0);
      const shareRef = (i: number) => (PN > 0 ? at(P.req, i) / PN : 0);
      const cs = (i: number, refShare = shareRef(i)): ClusterShare => {
        const l = label(i);
        return { cluster: ids[i], ...(l !== undefined ? { label: l } : {}), shareNow: shareNow(i), shareReference: refShare, shareEval: evalShare(i) };
      };
      const escRate = RN > 0 ? sum(recent.escalated) / RN : 0;
      const quiet = o.output === 'changes';
      const trend = (rule: RuleName, cluster: number | null, sNow: number, sRef: number, sEval: number, esc: number, stat: number, h: number) =>
        !quiet &&
        trends.push({ windowStart: start, windowEnd: end, rule, agent, cluster, modelVersion: ctx.modelVersion, shareNow: sNow, shareReference: sRef, shareEval: sEval, escalationRate: esc, statistic: stat, threshold: h });
      const finding = (rule: RuleName, cluster: number | null, e: Episode, stat: number, h: number, effect: Effect, summary: string, clusters: ClusterShare[], severity = SEVERITY[rule]) =>
        findings.push({
          rule,
          scope: { agent, cluster },
          firing: e.firing,
          severity,
          ...(e.firing && e.onset ? { onset: e.onset } : {}),
          windowStart: start,
          windowEnd: end,
          statistic: stat,
          threshold: h,
          effect,
          summary: e.firing && !sc.sess ? `${summary} (No session ids: each request is counted as independent evidence.)` : summary,
          clusters,
        });
      const warming = !ready;
      const warmNote = `reference warming up (${ref.blocks} of ${warmBlocks} blocks)`;

      // uncovered share (vs production, vs calibrated, budget)
      const rUnc = sum(recent.unc);
      const uNow = RN > 0 ? rUnc / RN : 0;
      const [uLo, uHi] = klInterval(rUnc, RN, CI_LEVEL, phiUnc);
      const uncDrivers = () =>
        Array.from({ length: K }, (_, i) => i)
          .map((i) => ({ i, d: (RN > 0 ? at(recent.unc, i) / RN : 0) - (PN > 0 ? at(P.unc, i) / PN : 0) }))
          .filter((x) => x.d > 0)
          .sort((x, y) => y.d - x.d)
          .slice(0, o.drivers)
          .map((x) => cs(x.i));
      {
        const vb = verdicts.get('uncovered_share')?.v ?? idle(hUnc);
        const vn = verdicts.get('novel_topics')?.v;
        // the rule alarms when either detector does; its statistic is the larger (same threshold)
        const v: Verdict = vn && (vn.alarm || vn.statistic > vb.statistic) && !vb.alarm ? vn : vb;
        const alarm = vb.alarm || (vn?.alarm ?? false);
        const e = episode('uncovered_share', null, alarm, Math.max(vb.statistic, vn?.statistic ?? 0), hUnc);
        const drivers = uncDrivers();
        const names = drivers.filter((d) => d.label).map((d) => `"${d.label}"`);
        // the deep bands: below the threshold, where the novel-topic profile is most above the reference
        const deep = B > 0 ? Array.from({ length: B }, (_, b) => b).filter((b) => q![b] > bandP0[b] * 2) : [];
        const RB = recent.bands ? sum(recent.bands) : 0;
        const deepNow = RB > 0 ? deep.reduce((s2, b) => s2 + at(recent.bands!, b), 0) / RB : 0;
        const deepRef = deep.reduce((s2, b) => s2 + bandP0[b], 0);
        const deepNote = vn?.alarm && deep.length ? `; ${pct(deepNow)} of requests now fall far below the eval set (${pct(deepRef)} in the reference)` : '';
        finding(
          'uncovered_share',
          null,
          e,
          v.statistic,
          hUnc,
          { name: 'uncovered_share_diff', value: uNow - p0Unc, lo: uLo - p0Unc, hi: uHi - p0Unc },
          warming
            ? `Uncovered share for ${scopeName(agent)} is ${pct(uNow)}; ${warmNote}.`
            : `Uncovered share for ${scopeName(agent)} is ${pct(uNow)} against ${pct(p0Unc)} in the production reference` +
                (e.firing ? ` and rising: traffic the eval set does not test is growing${names.length ? `, mostly near ${names.slice(0, 3).join(', ')}` : ''}${deepNote}.` : '.'),
          drivers,
        );
        trend('uncovered_share', null, uNow, p0Unc, 0, escRate, Math.max(vb.statistic, vn?.statistic ?? 0), hUnc);
      }
      {
        // a standing fact: reported once when established (like eval_mismatch), again only when the
        // rate rises above the level reported; info unless the excess is large
        const v = verdicts.get('uncovered_vs_calibrated')!.v;
        const key = `uncovered_vs_calibrated|${agent}|`;
        const before = sc.calFact;
        let e: Episode = { firing: false, lastAlarm: st.episodes[key]?.lastAlarm ?? -Infinity };
        let [est, lo, hi] = [uNow, uLo, uHi];
        let severity: Finding['severity'] = sc.calSeverity ?? 'info';
        if (v.alarm && v.segmentRequests > 0) {
          const phiS = typeof phiFixed === 'function' ? phiFixed(v.segmentRequests, 0) : 1;
          est = v.segmentEvents / v.segmentRequests;
          [lo, hi] = klInterval(v.segmentEvents, v.segmentRequests, CI_LEVEL, phiS);
          e = { firing: true, onset: start, lastAlarm: widx };
          severity = lo >= o.calibratedLargeRatio * pCalBase ? 'warning' : 'info';
          sc.calSeverity = severity;
          sc.calFact = Math.min(0.999, Math.max(hi, pCal));
        }
        st.episodes[key] = e;
        finding(
          'uncovered_vs_calibrated',
          null,
          e,
          v.statistic,
          hOne,
          { name: 'uncovered_share_diff', value: est - pCalBase, lo: lo - pCalBase, hi: hi - pCalBase },
          e.firing
            ? `Uncovered share for ${scopeName(agent)} is established at ${pct(est)} (95% ${pct(lo)}–${pct(hi)}) against ${pct(pCalBase)} calibrated at fit time` +
                (before !== undefined ? `, above the ${pct(before)} reported before` : '') +
                ': production meets more traffic outside the eval set than the fit measured on its own phrasings. Reported once; again only if it rises further (uncovered_share and gaps tell whether it grows or is new topics).'
            : `Uncovered share for ${scopeName(agent)} is ${pct(uNow)} (95% ${pct(uLo)}–${pct(uHi)}) against ${pct(pCalBase)} calibrated at fit time` +
                (before !== undefined ? `; established above it (up to ${pct(before)}) and reported.` : '.'),
          uncDrivers(),
          severity,
        );
        trend('uncovered_vs_calibrated', null, uNow, pCalBase, 0, escRate, v.statistic, hOne);
      }
      if (hd) {
        // a standing fact, like uncovered_vs_calibrated: reported once when established, again only
        // when the deep share rises above the level reported
        const v = verdicts.get('novel_vs_calibrated')!.v;
        const key = `novel_vs_calibrated|${agent}|`;
        const before = sc.deepFact;
        let e: Episode = { firing: false, lastAlarm: st.episodes[key]?.lastAlarm ?? -Infinity };
        const rb = recent.bands ?? [];
        const rbN = sum(rb);
        let rbX = 0;
        for (let b = 0; b < hd.deepBands; b++) rbX += at(rb, b);
        const phiD = (N: number) => (phiDeep === null ? 1 : typeof phiDeep === 'number' ? phiDeep : phiDeep(N, 0));
        const dNow = rbN > 0 ? rbX / rbN : 0;
        let [est, lo, hi] = [dNow, ...klInterval(rbX, rbN, CI_LEVEL, phiD(rbN))] as [number, number, number];
        if (v.alarm && v.segmentRequests > 0) {
          est = v.segmentEvents / v.segmentRequests;
          [lo, hi] = klInterval(v.segmentEvents, v.segmentRequests, CI_LEVEL, phiD(v.segmentRequests));
          e = { firing: true, onset: start, lastAlarm: widx };
          sc.deepFact = Math.min(0.999, Math.max(hi, pDeep));
        }
        st.episodes[key] = e;
        // the clusters nearest to the deep requests, most deep requests first
        const by = sc.deepBy ?? [];
        const byN = sum(by);
        const top = by
          .map((x, i) => ({ i, x }))
          .filter((d) => d.x > 0)
          .sort((x, y) => y.x - x.x)
          .slice(0, o.drivers);
        const drivers = top.map((d) => cs(d.i));
        const names = top.filter((d) => label(d.i)).slice(0, 3).map((d) => `"${label(d.i)}" (${pct(d.x / byN)} of them)`);
        const bandsText = hd.deepBands === 1 ? 'the deepest coverage band' : `the ${hd.deepBands} deepest coverage bands`;
        finding(
          'novel_vs_calibrated',
          null,
          e,
          v.statistic,
          hOne,
          { name: 'deep_share_diff', value: est - pDeepBase, lo: lo - pDeepBase, hi: hi - pDeepBase },
          e.firing
            ? `${pct(est)} of requests for ${scopeName(agent)} (95% ${pct(lo)}–${pct(hi)}) fall far below the eval set (${bandsText}), against at most ${pct(pDeepBase)} for new phrasings of the intents it tests ` +
                `(${pct(hd.share)} calibrated at fit time, interval ${pct(hd.interval[0])}–${pct(hd.interval[1])}; topics the eval set lacks put ${pct(hd.novelShare)} there)` +
                (before !== undefined ? `, above the ${pct(before)} reported before` : '') +
                `: production carries topics the eval set does not test${names.length ? `, nearest to ${names.join(', ')}` : ''}. ` +
                'Reported once; again only if it rises further (see gaps for the topics).'
            : `${pct(dNow)} of requests for ${scopeName(agent)} fall far below the eval set (${bandsText}) against at most ${pct(pDeepBase)} for new phrasings of the intents it tests` +
                (before !== undefined ? `; established above it (up to ${pct(before)}) and reported.` : '.'),
          drivers,
        );
        trend('novel_vs_calibrated', null, dNow, pDeepBase, 0, escRate, v.statistic, hOne);
      }
      if (o.budget !== null) {
        const v = verdicts.get('uncovered_budget')!.v;
        const e = episode('uncovered_budget', null, v.alarm, v.statistic, hOne);
        finding(
          'uncovered_budget',
          null,
          e,
          v.statistic,
          hOne,
          { name: 'uncovered_share', value: uNow, lo: uLo, hi: uHi },
          e.firing
            ? `More than ${pct(o.budget)} of ${scopeName(agent)}'s traffic is untested (now ${pct(uNow)}, 95% ${pct(uLo)}–${pct(uHi)}), established with confidence.`
            : `Untested share of ${scopeName(agent)} is ${pct(uNow)} against a budget of ${pct(o.budget)}.`,
          uncDrivers(),
        );
        trend('uncovered_budget', null, uNow, o.budget, 0, escRate, v.statistic, hOne);
      }

      // cluster mix: omnibus mixture test and per-cluster share CUSUMs
      {
        const omni = verdicts.get('cluster_mix')?.v ?? idle(hMixOmni);
        const per = [...verdicts.values()].filter((x) => x.rule === 'cluster_mix' && x.cluster !== null);
        const alarmed = new Set(per.filter((x) => x.v.alarm).map((x) => x.cluster!));
        const worst = per.reduce<{ r: number; v: Verdict } | null>((b, x) => (b && b.r >= x.v.statistic / hMixCluster ? b : { r: x.v.statistic / hMixCluster, v: x.v }), null);
        const useOmni = !worst || omni.statistic / hMixOmni >= worst.r;
        const stat = useOmni ? omni.statistic : worst!.v.statistic;
        const h = useOmni ? hMixOmni : hMixCluster;
        const alarm = omni.alarm || alarmed.size > 0;
        const e = episode('cluster_mix', null, alarm, stat / h, 1);
        const recentMix = Array.from({ length: K + 1 }, (_, i) => (i < K ? at(recent.req, i) - at(recent.unc, i) : rUnc));
        const nowShares = recentMix.map((c) => (RN > 0 ? c / RN : 0));
        // the seeded Dirichlet interval (and its median as the estimate) when firing; the plug-in
        // distance with its normal approximation otherwise (cheaper)
        let tv = totalVariation(nowShares, mixP0);
        let [lo, hi] = RN <= 0 ? [0, 1] : tvIntervalApprox(recentMix, mixP0, phiMix);
        if (RN > 0 && e.firing) [lo, hi, tv] = tvInterval(recentMix, mixP0, phiMix, 100, widx >>> 0);
        const statOf = new Map(per.map((x) => [x.cluster!, x.v.statistic]));
        const drivers = Array.from({ length: K }, (_, i) => i)
          .filter((i) => shareNow(i) > shareP0[i] || alarmed.has(ids[i]))
          .sort((x, y) => Number(alarmed.has(ids[y])) - Number(alarmed.has(ids[x])) || (statOf.get(ids[y]) ?? 0) - (statOf.get(ids[x]) ?? 0) || Math.abs(shareNow(y) - shareP0[y]) - Math.abs(shareNow(x) - shareP0[x]))
          .slice(0, o.drivers)
          .map((i) => cs(i, shareQ.get(i) ?? shareP0[i]));
        const top = drivers[0];
        finding(
          'cluster_mix',
          null,
          e,
          stat,
          h,
          { name: 'total_variation', value: tv, lo, hi },
          warming
            ? `Cluster mix of ${scopeName(agent)}: ${warmNote}.`
            : e.firing && top
              ? `The topic mix of ${scopeName(agent)} has shifted (total variation ${tv.toFixed(3)}, 95% ${lo.toFixed(3)}–${hi.toFixed(3)}): ${top.label ? `"${top.label}"` : `cluster ${top.cluster}`} is ${pct(top.shareNow)} of traffic against ${pct(top.shareReference)} in the reference at this hour and ${pct(top.shareEval)} of the eval set.`
              : `Topic mix of ${scopeName(agent)} is in line with the production reference (total variation ${tv.toFixed(3)}).`,
          drivers,
        );
        trend('cluster_mix', null, tv, 0, 0, escRate, stat, h);
        for (let i = 0; i < K; i++) trend('cluster_mix', ids[i], shareNow(i), shareQ.get(i) ?? shareP0[i], evalShare(i), RN > 0 && at(recent.req, i) > 0 ? at(recent.escalated, i) / at(recent.req, i) : 0, statOf.get(ids[i]) ?? 0, hMixCluster);
      }

      // escalation / refusal / failure per cluster
      for (let i = 0; i < K; i++) {
        const vs = METRICS.map((m) => verdicts.get(`rate|${ids[i]}|${m}`));
        if (vs.every((x) => x === undefined)) continue;
        let best = 0;
        vs.forEach((x, j) => {
          const b = vs[best];
          if (x && (x.v.alarm && !b?.v.alarm ? true : (x.v.statistic > (b?.v.statistic ?? -1) && x.v.alarm === (b?.v.alarm ?? false)))) best = j;
        });
        const m = METRICS[best];
        const v = vs[best]?.v ?? idle(hRate);
        const alarm = vs.some((x) => x?.v.alarm);
        const was = st.episodes[`escalation|${agent}|${ids[i]}`]?.firing ?? false;
        const e = episode('escalation', ids[i], alarm, v.statistic, hRate);
        if (quiet && !was && !e.firing) continue;
        const rn = at(recent.req, i);
        const rx = at(recent[m], i);
        const p0 = rateP0(m, i);
        const rate = rn > 0 ? rx / rn : 0;
        // the Chernoff interval when firing; the normal approximation otherwise (K per scope per window)
        const [lo, hi] = e.firing ? klInterval(rx, rn, CI_LEVEL, phi(m, now.req[i])) : normalInterval(rate, rn, phi(m, now.req[i]));
        const share = cs(i);
        const name = share.label ? `"${share.label}"` : `cluster ${ids[i]}`;
        finding(
          'escalation',
          ids[i],
          e,
          v.statistic,
          hRate,
          { name: `${METRIC_NAME[m]}_rate_ratio`, value: rate / p0, lo: lo / p0, hi: hi / p0 },
          e.firing
            ? `The ${METRIC_NAME[m]} rate of ${name} for ${scopeName(agent)} rose to ${pct(rate)} (95% ${pct(lo)}–${pct(hi)}) from ${pct(p0)} in its own history${borrowedNote(rateRefs[m], i)}.`
            : `The ${METRIC_NAME[m]} rate of ${name} for ${scopeName(agent)} is ${pct(rate)} (its history: ${pct(p0)}${borrowedNote(rateRefs[m], i)}).`,
          [share],
        );
        trend('escalation', ids[i], share.shareNow, share.shareReference, share.shareEval, rn > 0 ? at(recent.escalated, i) / rn : 0, v.statistic, hRate);
      }

      // uncovered traffic escalating more than covered traffic
      if (verdicts.has('uncovered_escalation')) {
        const v = verdicts.get('uncovered_escalation')!.v;
        const e = episode('uncovered_escalation', null, v.alarm, v.statistic, hOne);
        const ru = rUnc;
        const rc = RN - rUnc;
        const ue = recent.uncEsc ?? 0;
        const ce = sum(recent.escalated) - ue;
        const ru_rate = ru > 0 ? ue / ru : 0;
        const rc_rate = rc > 0 ? ce / rc : 0;
        const [lo, hi] = klInterval(ue, ru, CI_LEVEL, phi('escalated', sum(now.escalated)));
        const ratio = rc_rate > 0 ? ru_rate / rc_rate : 0;
        finding(
          'uncovered_escalation',
          null,
          e,
          v.statistic,
          hOne,
          { name: 'rate_ratio', value: ratio, lo: rc_rate > 0 ? lo / rc_rate : 0, hi: rc_rate > 0 ? hi / rc_rate : 0 },
          `Uncovered requests of ${scopeName(agent)} escalate at ${pct(ru_rate)} against ${pct(rc_rate)} for covered ones` +
            (e.firing ? ', more than their history: the untested traffic is where the agent fails.' : '.'),
          uncDrivers(),
        );
        trend('uncovered_escalation', null, ru_rate, rc_rate, 0, escRate, v.statistic, hOne);
      }

      // eval-set mismatch: a standing fact, reported when it changes materially
      if (ready) {
        const lv = th.h.mismatch;
        const under = new Set(sc.mismatch ?? []);
        const before = new Set(under);
        // the reference changes once a block: recompute then (or on the first ready window)
        if (sc.mismatch === null || blocks !== prevScope.blocks) for (let i = 0; i < K; i++) {
          const [lo, hi] = klInterval(at(P.req, i), PN, lv, phiMix);
          const bar = Math.max(o.mismatchMinShare, o.mismatchRatio * evalShare(i));
          if (lo > bar) under.add(ids[i]);
          else if (hi < bar) under.delete(ids[i]);
        }
        const changed = sc.mismatch !== null && (under.size !== before.size || [...under].some((c) => !before.has(c)));
        const added = [...under].filter((c) => !before.has(c));
        const removed = [...before].filter((c) => !under.has(c));
        sc.mismatch = [...under].sort((x, y) => x - y);
        const key = `eval_mismatch|${agent}|`;
        const e: Episode = changed ? { firing: true, onset: start, lastAlarm: widx } : { firing: false, lastAlarm: st.episodes[key]?.lastAlarm ?? -Infinity };
        st.episodes[key] = e;
        const list = sc.mismatch.map((c) => cs(index.get(c)!)).sort((x, y) => y.shareReference / Math.max(y.shareEval, 1e-9) - x.shareReference / Math.max(x.shareEval, 1e-9));
        const prodU = sum(sc.mismatch.map((c) => shareRef(index.get(c)!)));
        const evalU = sum(sc.mismatch.map((c) => evalShare(index.get(c)!)));
        const nm = (c: number) => (label(index.get(c)!) ? `"${label(index.get(c)!)}"` : `cluster ${c}`);
        finding(
          'eval_mismatch',
          null,
          e,
          sc.mismatch.length,
          0,
          { name: 'under_tested_traffic_share', value: prodU, lo: evalU, hi: prodU },
          (changed
            ? `The under-tested clusters of ${scopeName(agent)} changed (${added.length ? `now under-tested: ${added.map(nm).join(', ')}` : ''}${added.length && removed.length ? '; ' : ''}${removed.length ? `no longer: ${removed.map(nm).join(', ')}` : ''}): `
            : '') + `${sc.mismatch.length} cluster(s) carry ${pct(prodU)} of production traffic but ${pct(evalU)} of the eval set (at least ${o.mismatchRatio}× their eval share).`,
          list.slice(0, Math.max(o.drivers, added.length)),
        );
        for (let i = 0; i < K; i++) trend('eval_mismatch', ids[i], shareNow(i), shareRef(i), evalShare(i), 0, shareRef(i) / Math.max(evalShare(i), 1e-9), o.mismatchRatio);
      }

      // the window joins the block in progress; a firing production-relative rule taints it
      addAgg(cur, now);
      if (relativeFiring) cur.tainted = true;
      sc.current = cur;
    }
    st.lastWindow = start;
    if (o.output === 'changes') {
      const keep = findings.filter((f) => f.firing || prevFiring.has(`${f.rule}|${f.scope.agent}|${f.scope.cluster ?? ''}`));
      return { state: st, findings: keep, trends, notices };
    }
    return { state: st, findings, trends, notices };
  };
}

/** The monitor with default options. */
export const evaluateWindow = createEvaluateWindow();
