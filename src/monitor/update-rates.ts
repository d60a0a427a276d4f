/**
 * The rules' thresholds counted in updates that can raise a statistic, not in clock windows.
 *
 * Lorden's bound (detectors.ts) is per update of a detector: a window in which a detector receives
 * no request leaves its statistic where it was and cannot start an alarm. For a rising-rate CUSUM
 * it is stronger still: the last start of a segment that reaches e^h has a positive log-likelihood
 * ratio, so (for odds ratios θ > 1) at least one event in that window. By Ville's inequality from
 * that start, the expected number of false alarms of one alternative is at most e^{-h} times
 * Σ_windows E0[L·1{x > 0}] = Σ P_θ(x > 0) ≤ θ · Σ P0(x > 0): θ times the expected number of
 * windows with an event (P(x > 0) = 1 − (1 − p)^n is concave in p and p_θ ≤ θ·p). When the
 * number of trials n is known before the window's outcome (the tests are conditional on n), the
 * windows with n > 0 bound it too, with factor 1. A family's threshold is then
 * h = ln(E[updates in arlDays] · weight), the smaller of the two bounds, and never above the
 * clock count's h (the count of every window of every detector, which it replaces). The escalation
 * family counts trials only (a cluster's windows with requests): with events, its threshold fell
 * at every volume (a metric that never occurs, a cluster with an escalation in a quarter of the
 * windows at a flood), where this change is not measured, and on a 15-minute-window session test
 * at 0.05 requests/s it fired once in 126 days (within the budget, but not the 0 that test asks).
 *
 * The expected count is estimated from the monitor's own history: per reference block (the rules'
 * `blockMinutes`), how many windows of each family held data, summed over scopes and clusters. The
 * rate per block is the larger of the mean over the reference period (at most `referenceDays`) and
 * the mean over the last day (the block in progress included): it falls slowly (a lull lowers it by
 * at most a seventh of a day's worth per day) and rises at once with a burst, so a lull followed by
 * a burst does not buy a low threshold for the burst. One update is added to every family's count
 * (a family that never had an event does not get h = −∞). Until a day of history exists (a fresh
 * deployment, a coverage model change: the state restarts) the clock count is used.
 *
 * Pure; the state is a few numbers per block (JSON).
 */
import type { MonitorState, WindowCounts } from './types.js';

/** families of data-bearing windows, each summed over the scopes ('*' and every agent) */
const F_SCOPE = 0; // the scope has requests
const F_UNC = 1; // the scope has uncovered requests
const F_BAND = 2; // the scope has requests with coverage depth bands
const F_CLUSTER = 3; // a cluster has requests (summed over clusters)
const FAMILIES = 4;

export interface UpdateThresholds {
  /** scope-level binary detectors: uncovered_vs_calibrated, uncovered_budget, uncovered_escalation, novel_vs_calibrated */
  one: number;
  /** uncovered_share (with the novel-topic detector when the model has bands) */
  unc: number;
  /** cluster_mix: each cluster's share detector, and the omnibus test */
  mixCluster: number;
  mixOmni: number;
  /** escalation family (escalation, refusal and failure rates per cluster) */
  rate: number;
  /** eval_mismatch: the interval level of its checks (once per closed block) */
  mismatch: number;
}

export interface UpdateRateState {
  /** closed blocks: [block key, counts per family…, scopes with requests in the block] */
  blocks: number[][];
  /** the block in progress: its key, counts and the scopes seen with requests */
  cur: { key: number; c: number[]; scopes: string[] } | null;
  /** key of the first block seen (the history's start) */
  first: number;
  /** the thresholds used for the last window (reported, e.g. for the benchmark) */
  h?: UpdateThresholds;
  /** the clock count's thresholds for the same window */
  clock?: UpdateThresholds;
}

export interface ThresholdInputs {
  /** the monitor's options that matter here */
  arlDays: number;
  referenceDays: number;
  blockMinutes: number;
  ratios: number[];
  /** novel-topic mixes watched (0 when the model has no bands) */
  novelMixes: number;
  /** clusters, scopes and metrics (escalated, refused, failed) */
  K: number;
  S: number;
  metrics: number;
  /** windows in arlDays (the clock count) */
  arlWindows: number;
}

/** the clock count of every window of every detector (the thresholds before this change) */
export function clockThresholds(x: ThresholdInputs): UpdateThresholds {
  const G = x.ratios.length;
  const { arlWindows: W, S, K } = x;
  const one = Math.log(W * S * G);
  return {
    one,
    unc: x.novelMixes > 0 ? Math.log(W * S * (G + x.novelMixes)) : one,
    mixCluster: Math.log(W * S * (K + 1) * G),
    mixOmni: Math.log(W * S * (K + 1)),
    rate: Math.log(W * S * K * x.metrics * G),
    mismatch: Math.log(W * S * K),
  };
}

/** this window's data-bearing counts per family, and the scopes with requests */
function windowCounts(windows: WindowCounts[]): { c: number[]; scopes: string[] } {
  const c = new Array<number>(FAMILIES).fill(0);
  const agents = [...new Set(windows.map((w) => w.agent))];
  const scopes: string[] = [];
  for (const scope of ['*', ...agents]) {
    const ws = scope === '*' ? windows : windows.filter((w) => w.agent === scope);
    let n = 0;
    let unc = 0;
    let band = 0;
    const req = new Map<number, number>();
    for (const w of ws)
      for (const k of w.clusters) {
        n += k.requests;
        unc += k.uncovered;
        if (k.bands) for (const b of k.bands) band += b;
        req.set(k.cluster, (req.get(k.cluster) ?? 0) + k.requests);
      }
    if (n <= 0) continue;
    scopes.push(scope);
    c[F_SCOPE] += 1;
    if (unc > 0) c[F_UNC] += 1;
    if (band > 0) c[F_BAND] += 1;
    for (const v of req.values()) if (v > 0) c[F_CLUSTER] += 1;
  }
  return { c, scopes };
}

/**
 * The thresholds for this window (from the history before it) and the state with this window
 * counted. `prev` is the state's previous value (undefined on a fresh state).
 */
export function updateThresholds(prev: UpdateRateState | undefined, windows: WindowCounts[], t0: number, x: ThresholdInputs): { h: UpdateThresholds; clock: UpdateThresholds; state: UpdateRateState } {
  const clock = clockThresholds(x);
  const blockMs = x.blockMinutes * 60000;
  const key = Math.floor(t0 / blockMs);
  const dayBlocks = Math.round(1440 / x.blockMinutes);
  const maxBlocks = Math.max(dayBlocks, Math.round((x.referenceDays * 1440) / x.blockMinutes));
  // close the block in progress when this window starts a new one
  let blocks = prev?.blocks ?? [];
  let cur = prev?.cur ?? null;
  const first = prev?.first ?? key;
  if (cur && cur.key !== key) {
    blocks = [...blocks, [cur.key, ...cur.c, cur.scopes.length]];
    cur = null;
  }
  blocks = blocks.filter((b) => b[0] > key - maxBlocks);

  let h = clock;
  const span = key - Math.max(first, key - maxBlocks);
  if (span >= dayBlocks) {
    // per family (and the scopes-with-requests count, index FAMILIES): the rate per block
    const total = new Array<number>(FAMILIES + 1).fill(0);
    const day = new Array<number>(FAMILIES + 1).fill(0);
    for (const b of blocks) {
      for (let f = 0; f <= FAMILIES; f++) total[f] += b[f + 1];
      if (b[0] > key - dayBlocks) for (let f = 0; f <= FAMILIES; f++) day[f] += b[f + 1];
    }
    if (cur) {
      for (let f = 0; f < FAMILIES; f++) day[f] += cur.c[f];
      day[FAMILIES] += cur.scopes.length;
    }
    const perArl = (x.arlDays * 1440) / x.blockMinutes;
    const E = total.map((t, f) => Math.max((t + 1) / span, (day[f] + 1) / dayBlocks) * perArl);
    const G = x.ratios.length;
    const theta = x.ratios.reduce((a, b) => a + b, 0);
    const { K } = x;
    const one = Math.log(E[F_SCOPE] * G);
    const data: UpdateThresholds = {
      one,
      unc: x.novelMixes > 0 ? Math.log(Math.min(G * E[F_SCOPE], theta * E[F_UNC]) + x.novelMixes * E[F_BAND]) : Math.log(Math.min(G * E[F_SCOPE], theta * E[F_UNC])),
      mixCluster: Math.log(((K + 1) / K) * Math.min(G * K * E[F_SCOPE], theta * E[F_CLUSTER])),
      mixOmni: Math.log(E[F_SCOPE] * (K + 1)),
      rate: Math.log(G * x.metrics * E[F_CLUSTER]),
      mismatch: Math.log(E[FAMILIES] * K),
    };
    h = Object.fromEntries(Object.entries(clock).map(([k, v]) => [k, Math.min(v, data[k as keyof UpdateThresholds])])) as unknown as UpdateThresholds;
  }

  // this window joins the block in progress
  const w = windowCounts(windows);
  const next = cur ? { key, c: cur.c.map((v, f) => v + w.c[f]), scopes: [...new Set([...cur.scopes, ...w.scopes])] } : { key, c: w.c, scopes: w.scopes };
  return { h, clock, state: { blocks, cur: next, first, h, clock } };
}

/** the thresholds a monitor state's last window used, and the clock count's (null before any window) */
export function reportedThresholds(state: MonitorState | null): { h: UpdateThresholds; clock: UpdateThresholds } | null {
  const u = (state as { upd?: UpdateRateState } | null)?.upd;
  return u?.h && u.clock ? { h: u.h, clock: u.clock } : null;
}
