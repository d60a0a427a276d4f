/**
 * The novel_sessions rule: production moves onto topics the eval set does not test, read one whole
 * closed session at a time (docs/monitor.md, "Novel topics, one session at a time"). A RuleSet
 * (./compose.ts): pure, with its own slice of the checkpointed state.
 *
 * Why: the uncovered_share rule's novel-topic detector reads the coverage depth bands request by
 * request and divides their evidence by the bands' design effect. A session whose turns fall far
 * below the eval set again and again is much stronger evidence than its turns counted apart (a
 * tested intent rarely produces several deep paraphrases in a row), and the design effect spends
 * exactly that evidence. Here each closed session is one observation.
 *
 * The session's summary: how many of its distinct coverage cells (nearest cluster, covered or not,
 * depth band) fall in each of six band groups: the deepest bands (the fit's `deepBands`), the
 * other uncovered bands, and each covered band (a topic the eval set lacks is mostly covered by
 * little). Distinct cells, because an exact retry repeats its cell (a retry is the same text);
 * counted up to small caps. Its score is the working likelihood ratio of "a
 * session on a topic the eval set lacks" against "an in-scope session", as if its distinct cells
 * were independent: Λ = Π_g (q_g / p_g)^{n_g}, q the fit's novel-topic profile (the model's
 * calibration) and p the production reference's share of distinct cells per group.
 *
 * The guarantee does not rest on that working model. The e-value of a session is
 * L = min(Λ, W) / C, where C is an upper confidence bound, at level 1 − δ, on the mean of min(Λ, W)
 * over the reference's closed sessions (by betting, `bettingUpper`; the empirical-Bernstein bound,
 * `empiricalBernsteinUpper`, is valid too but several times looser). Sessions, not turns, are the
 * sampled units, so whatever the dependence between a session's turns (retries, paraphrases of one
 * intent, a poorly covered intent that puts every turn deep) its distribution is measured, not
 * assumed: E0[L] ≤ 1 for a session drawn like the reference's, when the bound holds. For a share ε
 * of sessions moving to novel topics, 1 − ε + ε·L is then an e-value, and a CUSUM of the windows'
 * summed log e-values (floored at 0, one per ε of `mixes`) is an e-detector (Shin, Ramdas &
 * Rinaldo 2024, "E-detectors"): by Ville's inequality from the last start of a segment, its
 * expected false alarms are at most e^{-h} per window holding a closed session. The threshold
 * h = ln(E[scope-windows with closed sessions in arlDays] · mixes), counted as the core rules count
 * data-bearing updates (src/monitor/update-rates.ts: the rate per block is the larger of the
 * reference period's mean and the last day's, plus one; the clock count until a day of history).
 *
 * What is assumed (checked by simulation, docs/monitor.md "Measured"): sessions independent of each
 * other; the reference's sessions stand for the future's under no change (a daily cycle in which
 * deep-prone intents peak at some hours is covered only by the bound's slack); the bound holds
 * (it is re-taken every block on overlapping data). The reference leaves out blocks in which the
 * rule fired and the blocks since its current evidence segment began (keeping at least half), as
 * the core rules' quarantines do.
 *
 * Fresh deployment: the fit's session reference (src/coverage/session-reference.ts, the model's
 * calibration.bands.sessions). With only the fit's per-request bound on the deep share, the worst
 * case of within-session dependence is every turn of a session in the same band, and a session-level
 * test against it gains nothing over novel_vs_calibrated. The fit states more: pseudo-sessions of
 * m distinct held-out phrasings of one tested intent give E[min(Λ, W) / f(k)] ≤ bound for every m
 * (k the session's distinct cells, f a shape over k; intents as the sampling units, the share of
 * new phrasings bracketed). So until production's reference is ready a session's e-value is
 * min(Λ_fit, W) / (bound · f(k)), Λ_fit with the fit's p, and one CUSUM per mix runs on it from
 * the first window. When production's reference becomes ready those CUSUMs start no new segment:
 * each runs on until its segment ends (falls to 0) and then stops, so every segment of either
 * family starts in a window the threshold counts once (at most one start per mix and window), and
 * the guarantee holds across the switch. An alarm resets both families; the finding says which
 * reference it read. A model without the field (or computed for other groups): the rule waits
 * for production history, as before. Measured (docs/monitor.md): honest, quiet, and powerful
 * only for large shares of novel sessions (20%), not 5%: the bracket over new phrasings and the
 * bound over lengths leave production's in-scope sessions at a fifth of the bound.
 */
import { z } from 'zod';
import { BAND_LEVELS } from '../coverage/bands.js';
import { SESSION_GROUP_CAPS } from '../coverage/session-reference.js';
import type { RuleSet, RuleSetEvaluation } from './compose.js';
import type { ClusterShare, Finding, MonitorContext, SessionCell, SessionReferenceContext, TrendRow, WindowCounts } from './types.js';
import { pct, scopeName } from './wording.js';
import { windowClock } from './clock.js';

export interface NovelSessionsOptions {
  /** off: the rule evaluates nothing */
  enabled: boolean;
  /** shares ε of sessions moving to novel topics, one CUSUM each (the alarm budget is split over them) */
  mixes: number[];
  /** false-alarm guarantee of the rule, summed over its scopes and mixes: average run length in days */
  arlDays: number;
  /** the production reference: the last this many days of closed sessions */
  referenceDays: number;
  /** the reference's blocks (minutes) */
  blockMinutes: number;
  /** no alarm before the scope's history spans this many hours… */
  warmupHours: number;
  /** …and its reference holds this many closed sessions */
  warmupSessions: number;
  /**
   * the cap W on a session's working likelihood ratio is capShare · n / ln(2/δ) for a reference of n
   * sessions (the bound's range term 7·W·ln(2/δ)/(3n) is then 7·capShare/3 whatever n), within [minCap, cap]
   */
  capShare: number;
  minCap: number;
  cap: number;
  /** the reference's mean is taken at its upper bound of confidence 1 − delta */
  delta: number;
  /** closed sessions an evidence segment must hold before it can alarm */
  minSegmentSessions: number;
  /** a firing finding resolves after this many minutes without a new alarm (and the statistic below h/2) */
  resolveMinutes: number;
  /** while firing, the episode's blocks stay out of the reference for at most this many hours (then the new level is learnt) */
  freezeHours: number;
  /** 'changes': findings only while firing or when resolving (the backtest's and benchmark's mode) */
  output: 'all' | 'changes';
  /** clusters named per finding */
  drivers: number;
}

export const DEFAULT_NOVEL_SESSIONS: NovelSessionsOptions = {
  enabled: true,
  mixes: [0.01, 0.02, 0.05, 0.1],
  arlDays: 30,
  referenceDays: 7,
  blockMinutes: 60,
  warmupHours: 24,
  warmupSessions: 200,
  capShare: 0.2,
  minCap: 10,
  cap: 1000,
  delta: 0.01,
  minSegmentSessions: 30,
  resolveMinutes: 60,
  freezeHours: 24,
  output: 'all',
  drivers: 5,
};

export const NovelSessionsOptionsSchema = z
  .object({
    enabled: z.boolean(),
    mixes: z.array(z.number().gt(0).lt(1)).min(1).max(10),
    arlDays: z.number().positive(),
    referenceDays: z.number().positive(),
    blockMinutes: z.number().int().positive().max(1440),
    warmupHours: z.number().nonnegative(),
    warmupSessions: z.number().int().positive(),
    capShare: z.number().positive(),
    minCap: z.number().gt(1),
    cap: z.number().gt(1),
    delta: z.number().gt(0).lt(0.5),
    minSegmentSessions: z.number().int().positive(),
    resolveMinutes: z.number().positive(),
    freezeHours: z.number().positive(),
    output: z.enum(['all', 'changes']),
    drivers: z.number().int().min(0),
  })
  .partial()
  .strict();

/** distinct cells counted per group up to these caps: deepest bands, other uncovered, covered (the fit's session reference uses the same) */
const CAPS = SESSION_GROUP_CAPS;
/** the band groups: the deepest bands, the other uncovered, covered near the threshold, covered well */
export const GROUPS = CAPS.length;
export type Counts = number[];

/** One reference block of a scope: its closed sessions by summary, and their distinct cells per group. */
interface Block {
  k: number;
  /** summary "n0,n1,n2" → sessions */
  sig: Record<string, number>;
  g: Counts;
  /** sessions */
  n: number;
  /** the rule was firing in this block (left out of the reference) */
  f?: 1;
}

interface ScopeSlice {
  blocks: Block[];
  cur: Block | null;
  /** first block key seen (the history's start) */
  first: number;
  /** per mix: statistic (nats), sessions in the segment, segment start (ms) */
  s: number[];
  n: number[];
  since: (number | null)[];
  firing: boolean;
  onset: string | null;
  lastAlarm: number | null;
  /** the nearest clusters of recent deep cells (decayed counts; for the findings) */
  near: Record<string, number>;
  /**
   * the CUSUMs against the fit's session reference (per mix: statistic, sessions in the segment,
   * segment start, still running), from the first window until production's reference is ready and
   * then until each one's segment ends; null when they have ended (or never ran)
   */
  fit?: { s: number[]; n: number[]; since: (number | null)[]; on: boolean[] } | null;
  /** the reference behind the current episode's first alarm */
  by?: 'fit' | 'production';
}

export interface NovelSessionsState {
  version: 1;
  modelVersion: string;
  scopes: Record<string, ScopeSlice>;
  /** data-bearing updates: closed blocks [key, scope-windows with closed sessions], the block in progress, the first key */
  upd: { blocks: [number, number][]; cur: [number, number] | null; first: number | null };
  /** the threshold of the last window (reported) */
  h?: number;
}

/** the first covered band, and the first covered band above the in-scope margins' 20% level */
const BELOW = BAND_LEVELS.indexOf('threshold') + 1;
const NEAR = BAND_LEVELS.indexOf(0.2) + 1;

/**
 * The group of a cell: 0 the deepest bands, 1 other uncovered, 2 covered below the in-scope
 * margins' 20% level (near the threshold), 3 covered above it; -1 without a band.
 */
export function cellGroup(c: Pick<SessionCell, 'band' | 'uncovered'>, deepBands: number): number {
  if (!(c.band >= 0)) return -1;
  if (c.band < deepBands) return 0;
  if (c.uncovered || c.band < BELOW) return 1;
  return Math.min(GROUPS - 1, 2 + c.band - BELOW);
}

/** Each closed session's distinct cells per group (sessions without an id: one per request). */
export function sessionSummaries(rows: readonly { agent: string; cell: SessionCell }[], deepBands: number): { n: Counts; clusters: number[] }[] {
  const by = new Map<string, { n: Counts; clusters: number[] }>();
  const out: { n: Counts; clusters: number[] }[] = [];
  for (const { agent, cell } of rows) {
    if (!(cell.requests > 0)) continue;
    const g = cellGroup(cell, deepBands);
    if (g < 0) continue;
    if (cell.session === '') {
      for (let i = 0; i < cell.requests; i++) {
        const n: Counts = new Array<number>(GROUPS).fill(0);
        n[g] = 1;
        out.push({ n, clusters: g === 0 ? [cell.cluster] : [] });
      }
      continue;
    }
    const key = `${agent}\u0000${cell.session}`;
    let x = by.get(key);
    if (!x) {
      x = { n: new Array<number>(GROUPS).fill(0), clusters: [] };
      by.set(key, x);
      out.push(x);
    }
    x.n[g] += 1;
    if (g === 0) x.clusters.push(cell.cluster);
  }
  return out;
}

export const summaryKey = (n: readonly number[]) => n.map((v, g) => Math.min(v, CAPS[g])).join(',');

/** the working likelihood ratio of a summary, capped: min(Π_g (q_g/p_g)^{n_g}, W) */
export function cappedRatio(key: string, logRatio: readonly number[], cap: number): number {
  const n = key.split(',').map(Number);
  let s = 0;
  for (let g = 0; g < n.length; g++) s += n[g] * logRatio[g];
  return Math.min(cap, Math.exp(s));
}

/** The number of values and their mean, from a histogram (value → count). */
function histogramMean(values: readonly { x: number; c: number }[]): { n: number; mean: number } {
  let n = 0;
  let s = 0;
  for (const v of values) {
    n += v.c;
    s += v.c * v.x;
  }
  return { n, mean: n > 0 ? s / n : 0 };
}

/**
 * The upper confidence bound (level 1 − δ) on the mean of values in [0, W] from their histogram
 * (value → count): empirical Bernstein (Maurer & Pontil 2009, Theorem 4). Infinity with < 2 values.
 */
export function empiricalBernsteinUpper(values: readonly { x: number; c: number }[], W: number, delta: number): number {
  const { n, mean } = histogramMean(values);
  if (n < 2) return Infinity;
  let ss = 0;
  for (const v of values) ss += v.c * (v.x - mean) ** 2;
  const V = ss / (n - 1);
  const l = Math.log(2 / delta);
  return mean + Math.sqrt((2 * V * l) / n) + (7 * W * l) / (3 * (n - 1));
}

/** the fixed bets of bettingUpper, as fractions of 1/W */
const BETS = [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9];

/**
 * The upper confidence bound (level 1 − δ) on the mean μ of i.i.d. values in [0, W] from their
 * histogram, by betting (Waudby-Smith & Ramdas 2023, "Estimating means of bounded random variables
 * by betting"), with a fixed grid of bets: for a bet λ = c/W (c < 1), Π_i (1 + λ(m − x_i)) has mean
 * ≤ 1 when μ ≥ m, and grows with m; so with U_c the smallest m at which it reaches |grid|/δ,
 * P(U_c ≤ μ) ≤ δ/|grid| (Markov's inequality), and U = min_c U_c fails with probability ≤ δ. It
 * uses the values' whole distribution (an empirical Chernoff bound), not only their variance: about
 * a third of the empirical-Bernstein bound's excess over the mean on heavy-tailed histograms. Infinity
 * with < 2 values.
 */
export function bettingUpper(values: readonly { x: number; c: number }[], W: number, delta: number): number {
  const { n, mean } = histogramMean(values);
  if (n < 2) return Infinity;
  const target = Math.log(BETS.length / delta);
  let best = W;
  for (const c of BETS) {
    const lam = c / W;
    const logK = (m: number) => {
      let a = 0;
      for (const v of values) a += v.c * Math.log1p(lam * (m - v.x));
      return a;
    };
    // logK is increasing in m; at m = mean it is ≤ 0 (Jensen), so the root is above the mean
    if (logK(best) < target) continue;
    let lo = mean;
    let hi = best;
    for (let i = 0; i < 50; i++) {
      const m = (lo + hi) / 2;
      if (logK(m) >= target) hi = m;
      else lo = m;
    }
    best = hi;
  }
  return best;
}

/** whether the model's fit-time session reference was computed for this rule's groups and caps */
export function usableFitReference(sr: SessionReferenceContext, deepBands: number): boolean {
  return (
    sr.deepBands === deepBands && sr.caps.length === GROUPS && sr.caps.every((c, g) => c === CAPS[g]) && sr.groupShares.length === GROUPS &&
    sr.novelShares.length === GROUPS && sr.shape.length > 0 && sr.shape.every((v) => v > 0) && sr.bound > 0 && sr.cap > 1
  );
}

/**
 * A closed session's e-value against the fit's session reference: min(Λ, W) / (bound · f(k)), Λ the
 * working ratio of its distinct cells per group (capped) with the fit's p and q, k its distinct
 * cells (src/coverage/session-reference.ts states E[min(Λ, W) / f(k)] ≤ bound for sessions of
 * tested intents, whatever their length).
 */
export function fitSessionEvalue(sr: SessionReferenceContext, n: readonly number[]): number {
  let l = 0;
  let k = 0;
  for (let g = 0; g < GROUPS; g++) {
    l += Math.min(n[g], CAPS[g]) * Math.log(Math.max(sr.novelShares[g], 1e-9) / sr.groupShares[g]);
    k += n[g];
  }
  return Math.min(sr.cap, Math.exp(l)) / (sr.bound * sr.shape[Math.min(sr.shape.length, Math.max(1, k)) - 1]);
}

/** the novel profile summed over the groups of cellGroup */
export function groupProfile(q: readonly number[], deepBands: number): Counts {
  const out: Counts = new Array<number>(GROUPS).fill(0);
  q.forEach((v, b) => (out[b < deepBands ? 0 : b < BELOW ? 1 : Math.min(GROUPS - 1, 2 + b - BELOW)] += v));
  return out;
}

const freshScope = (key: number, G: number): ScopeSlice => ({
  blocks: [],
  cur: null,
  first: key,
  s: new Array(G).fill(0),
  n: new Array(G).fill(0),
  since: new Array(G).fill(null),
  firing: false,
  onset: null,
  lastAlarm: null,
  near: {},
});

/**
 * One window of mix g's CUSUM: adds the window's sessions' Σ log(1 − ε + ε·L) (L their e-values),
 * records the window a segment starts in, and floors at 0. True when the statistic is 0 after it
 * (no segment open).
 */
function stepMixture(c: { s: number[]; n: number[]; since: (number | null)[] }, g: number, Ls: readonly number[], eps: number, t0: number): boolean {
  if (Ls.length) {
    let llr = 0;
    for (const L of Ls) llr += Math.log(1 - eps + eps * L);
    c.s[g] += llr;
    c.n[g] += Ls.length;
    if (c.s[g] > 0 && c.since[g] === null) c.since[g] = t0;
  }
  if (c.s[g] > 0) return false;
  c.s[g] = 0;
  c.n[g] = 0;
  c.since[g] = null;
  return true;
}

export function novelSessionRules(options: Partial<NovelSessionsOptions> = {}): RuleSet<NovelSessionsState> {
  const o: NovelSessionsOptions = { ...DEFAULT_NOVEL_SESSIONS, ...options };
  const G = o.mixes.length;
  // the reference's bound per scope, block and segment start (a cache of a pure function of the state)
  const memo = new Map<string, { ready: boolean; C: number; W: number; logRatio: number[]; novelLike: number; nref: number }>();
  return {
    key: 'novel_sessions',
    evaluate(prev, windows, ctx: MonitorContext): RuleSetEvaluation<NovelSessionsState> {
      const findings: Finding[] = [];
      const trends: TrendRow[] = [];
      const notices: string[] = [];
      const st: NovelSessionsState =
        prev && prev.modelVersion === ctx.modelVersion
          ? { ...prev, scopes: { ...prev.scopes }, upd: { ...prev.upd } }
          : { version: 1, modelVersion: ctx.modelVersion, scopes: {}, upd: { blocks: [], cur: null, first: null } };
      const q = ctx.novelProfile;
      if (!o.enabled || !q || q.length < 2) return { state: st, findings, trends, notices };
      const mine = windows.filter((w) => w.modelVersion === ctx.modelVersion);
      if (!mine.length) return { state: st, findings, trends, notices };

      const deepBands = ctx.heldOutDeep?.deepBands ?? 3;
      const qg = groupProfile(q, deepBands);
      // the fit's session reference (a model without it, or computed for other groups: none)
      const sr = ctx.sessionReference;
      // (nor one resting on a deep-band statement from before the 1% floor: MonitorContext.heldOutDeep)
      const fitRef = sr && !ctx.heldOutDeep?.belowFloor && usableFitReference(sr, deepBands) ? sr : null;
      const { start, end, t0, windowMs, widx, arlWindows } = windowClock(mine[0], o.arlDays);
      const blockMs = o.blockMinutes * 60000;
      const key = Math.floor(t0 / blockMs);
      const keepBlocks = Math.max(1, Math.round((o.referenceDays * 1440) / o.blockMinutes));
      const dayBlocks = Math.max(1, Math.round(1440 / o.blockMinutes));
      const resolveWindows = Math.max(1, Math.round((o.resolveMinutes * 60000) / windowMs));
      const agents = [...new Set(mine.map((w) => w.agent))].sort();
      const S = new Set([...Object.keys(st.scopes).filter((a) => a !== '*'), ...agents]).size + 1;

      // ---- the threshold, counted in scope-windows holding a closed session (before this window) ----
      const u = st.upd;
      if (u.first === null) u.first = key;
      if (u.cur && u.cur[0] !== key) {
        u.blocks = [...u.blocks, u.cur];
        u.cur = null;
      }
      u.blocks = u.blocks.filter((b) => b[0] > key - Math.max(dayBlocks, keepBlocks));
      let h = Math.log(arlWindows * S * G);
      const span = key - Math.max(u.first, key - Math.max(dayBlocks, keepBlocks));
      if (span >= dayBlocks) {
        let total = 0;
        let day = u.cur ? u.cur[1] : 0;
        for (const b of u.blocks) {
          total += b[1];
          if (b[0] > key - dayBlocks) day += b[1];
        }
        const perArl = (o.arlDays * 1440) / o.blockMinutes;
        const E = Math.max((total + 1) / span, (day + 1) / dayBlocks) * perArl;
        h = Math.min(h, Math.log(E * G));
      }
      st.h = h;
      let withSessions = 0;

      for (const agent of ['*', ...agents]) {
        const ws: WindowCounts[] = agent === '*' ? mine : mine.filter((w) => w.agent === agent);
        const prevScope = st.scopes[agent] ?? freshScope(key, G);
        const sc: ScopeSlice = { ...prevScope, s: prevScope.s.slice(), n: prevScope.n.slice(), since: prevScope.since.slice(), near: { ...prevScope.near } };
        // a new scope starts against the fit's reference (when the model states one)
        if (!st.scopes[agent] && fitRef) sc.fit = { s: new Array(G).fill(0), n: new Array(G).fill(0), since: new Array(G).fill(null), on: new Array(G).fill(true) };
        if (sc.fit) sc.fit = { s: sc.fit.s.slice(), n: sc.fit.n.slice(), since: sc.fit.since.slice(), on: sc.fit.on.slice() };
        if (!fitRef) sc.fit = null;
        st.scopes[agent] = sc;
        if (sc.cur && sc.cur.k !== key) {
          sc.blocks = [...sc.blocks, sc.cur];
          sc.cur = null;
        }
        sc.blocks = sc.blocks.filter((b) => b.k > key - keepBlocks);

        const rows: { agent: string; cell: SessionCell }[] = [];
        for (const w of ws) for (const cell of w.closedSessions ?? []) rows.push({ agent: w.agent, cell });
        const sessions = sessionSummaries(rows, deepBands);
        if (sessions.length) withSessions++;

        // ---- the reference: blocks without a firing, before the current evidence segment (keeping half) ----
        const clean = sc.blocks.filter((b) => !b.f);
        const segStart = sc.since.reduce<number | null>((a, x, g) => (x !== null && sc.s[g] > 0 && (a === null || x < a) ? x : a), null);
        let ref = clean;
        if (segStart !== null) {
          const cut = Math.floor(segStart / blockMs);
          const before = clean.filter((b) => b.k < cut);
          ref = before.length >= Math.ceil(clean.length / 2) ? before : clean.slice(0, Math.ceil(clean.length / 2));
        }
        // (computed once per reference: it changes only when a block closes or the segment's start moves)
        const memoKey = `${agent}|${key}|${ref.length}|${ref[0]?.k ?? -1}|${ref[ref.length - 1]?.k ?? -1}|${sc.first}`;
        let r = memo.get(memoKey);
        if (!r) {
          const gsum: Counts = new Array<number>(GROUPS).fill(0);
          const hist = new Map<string, number>();
          let nref = 0;
          for (const b of ref) {
            for (let g = 0; g < GROUPS; g++) gsum[g] += b.g[g] ?? 0;
            nref += b.n;
            for (const [k, c] of Object.entries(b.sig)) hist.set(k, (hist.get(k) ?? 0) + c);
          }
          const cells = gsum.reduce((a, b) => a + b, 0);
          // the reference's share of distinct cells per group, with half a cell of each group added (no log 0)
          const p = gsum.map((x) => (x + 0.5) / (cells + 0.5 * GROUPS));
          const logRatio = qg.map((x, g) => Math.log(Math.max(x, 1e-9) / p[g]));
          const ready = nref >= o.warmupSessions && key - sc.first >= (o.warmupHours * 60) / o.blockMinutes;
          let C = Infinity;
          let novelLike = 0;
          const W = Math.min(o.cap, Math.max(o.minCap, (o.capShare * nref) / Math.log(2 / o.delta)));
          if (ready) {
            const vals = [...hist.entries()].map(([k, c]) => ({ x: cappedRatio(k, logRatio, W), c }));
            C = bettingUpper(vals, W, o.delta);
            novelLike = vals.reduce((a, v) => a + (v.x > 1 ? v.c : 0), 0) / Math.max(1, nref);
          }
          r = { ready, C, W, logRatio, novelLike, nref };
          if (memo.size > 64) memo.clear();
          memo.set(memoKey, r);
        }
        const { ready, C, W, logRatio } = r;
        const refNovelLike = r.novelLike;

        // ---- the evidence: one e-value per closed session, one CUSUM per mix ----
        let stat = 0;
        let best = 0;
        let alarm = false;
        let nowNovelLike = 0;
        if (ready && Number.isFinite(C) && C > 0) {
          const Ls = sessions.map((x) => cappedRatio(summaryKey(x.n), logRatio, W) / C);
          nowNovelLike = Ls.filter((L) => L * C > 1).length;
          for (let g = 0; g < G; g++) {
            stepMixture(sc, g, Ls, o.mixes[g], t0);
            if (sc.s[g] > stat) {
              stat = sc.s[g];
              best = g;
            }
            if (sc.s[g] >= h && sc.n[g] >= o.minSegmentSessions) alarm = true;
          }
        }
        // ---- against the fit's reference: until production's is ready, then until each segment ends ----
        // (a segment of these CUSUMs starts only before production's reference is ready, and one of
        // production's only after: at most one start per mix and window, as the threshold counts)
        let fitAlarm = false;
        let fitStat = 0;
        let fitBest = 0;
        const f = sc.fit;
        if (f) {
          const Lf = sessions.map((x) => fitSessionEvalue(fitRef!, x.n));
          for (let g = 0; g < G; g++) {
            if (!f.on[g]) continue;
            if (ready && f.s[g] <= 0) {
              f.on[g] = false;
              continue;
            }
            if (stepMixture(f, g, Lf, o.mixes[g], t0) && ready) f.on[g] = false;
            if (f.s[g] > fitStat) {
              fitStat = f.s[g];
              fitBest = g;
            }
            if (f.s[g] >= h && f.n[g] >= o.minSegmentSessions) fitAlarm = true;
          }
        }
        const useFit = fitStat > stat;
        if (useFit) {
          stat = fitStat;
          best = fitBest;
        }
        const segment = useFit ? f!.n[best] : sc.n[best];
        const wasFiring = sc.firing;
        if (alarm || fitAlarm) {
          sc.s.fill(0);
          sc.n.fill(0);
          sc.since.fill(null);
          if (f) {
            f.s.fill(0);
            f.n.fill(0);
            f.since.fill(null);
            if (ready) f.on.fill(false);
          }
          sc.lastAlarm = widx;
          if (!sc.firing) {
            sc.firing = true;
            sc.onset = start;
            sc.by = alarm ? 'production' : 'fit';
          }
        } else if (sc.firing && sc.lastAlarm !== null && widx - sc.lastAlarm >= resolveWindows && stat < h / 2) {
          sc.firing = false;
        }

        // ---- this window's sessions join the block in progress; the nearest clusters of deep cells ----
        const cur: Block = sc.cur ? { ...sc.cur, sig: { ...sc.cur.sig }, g: [...sc.cur.g] as Block['g'] } : { k: key, sig: {}, g: new Array<number>(GROUPS).fill(0), n: 0 };
        for (const x of sessions) {
          const k = summaryKey(x.n);
          cur.sig[k] = (cur.sig[k] ?? 0) + 1;
          for (let g = 0; g < GROUPS; g++) cur.g[g] += x.n[g];
          cur.n += 1;
        }
        if (sc.firing && sc.onset !== null && t0 - Date.parse(sc.onset) < o.freezeHours * 3600000) cur.f = 1;
        sc.cur = cur;
        const decay = Math.exp(-windowMs / 86400000);
        for (const c of Object.keys(sc.near)) {
          sc.near[c] *= decay;
          if (sc.near[c] < 1e-3) delete sc.near[c];
        }
        for (const x of sessions) for (const c of x.clusters) sc.near[c] = (sc.near[c] ?? 0) + 1;

        if (f && !f.on.some(Boolean)) sc.fit = null;
        const fitRunning = !ready && !!sc.fit;
        if (!ready && !fitRunning && !sc.firing && !wasFiring) continue;
        if (o.output === 'changes' && !sc.firing && !wasFiring) continue;
        const fromFit = sc.firing ? sc.by === 'fit' : !ready;
        const refText = fromFit
          ? `the fit's statement of how sessions of tested intents score (no production reference yet)`
          : `its production reference (${pct(refNovelLike)} of the reference's sessions look so)`;
        const nearTotal = Object.values(sc.near).reduce((a, b) => a + b, 0);
        const drivers: ClusterShare[] = Object.entries(sc.near)
          .sort((a, b) => b[1] - a[1])
          .slice(0, o.drivers)
          .map(([c, v]) => ({ cluster: Number(c), label: ctx.labels?.[Number(c)], shareNow: nearTotal > 0 ? v / nearTotal : 0, shareReference: 0, shareEval: ctx.evalShares[Number(c)] ?? 0 }));
        const eps = o.mixes[best];
        findings.push({
          rule: 'novel_sessions',
          scope: { agent, cluster: null },
          firing: sc.firing,
          severity: 'warning',
          ...(sc.firing && sc.onset ? { onset: sc.onset } : {}),
          windowStart: start,
          windowEnd: end,
          statistic: stat,
          threshold: h,
          // the share of sessions moving to topics the eval set lacks that the evidence points to (the mix ε of the largest statistic)
          effect: { name: 'novel_session_share', value: eps, lo: sc.firing ? o.mixes[0] : 0, hi: o.mixes[G - 1] },
          summary: sc.firing
            ? `sessions of ${scopeName(agent)} move onto topics the eval set does not test: whole sessions fall ` +
              `far below the eval set (several distinct turns in its ${deepBands} deepest coverage bands) more often than ${fromFit ? 'allowed by ' : 'in '}${refText}` +
              (drivers.length ? `; nearest clusters of the deep turns: ${drivers.map((d) => `cluster ${d.cluster}${d.label ? ` "${d.label}"` : ''} (${pct(d.shareNow)})`).join(', ')}` : '') +
              `; evidence over ${segment} closed session(s)`
            : fromFit
              ? `sessions of ${scopeName(agent)} are read against the fit's statement of how sessions of tested intents score, until a production reference is ready`
              : `sessions of ${scopeName(agent)}: ${pct(refNovelLike)} of the reference's closed sessions look like topics the eval set does not test`,
          clusters: drivers,
        });
        trends.push({
          windowStart: start,
          windowEnd: end,
          rule: 'novel_sessions',
          agent,
          cluster: null,
          modelVersion: ctx.modelVersion,
          // for this rule: the share of this window's closed sessions whose working ratio is above 1, and the reference's
          shareNow: sessions.length ? nowNovelLike / sessions.length : 0,
          shareReference: refNovelLike,
          shareEval: 0,
          escalationRate: 0,
          statistic: stat,
          threshold: h,
        });
      }
      u.cur = u.cur ? [key, u.cur[1] + withSessions] : [key, withSessions];
      return { state: st, findings, trends, notices };
    },
  };
}

/** the rule's threshold at the last window (null before any) */
export function novelSessionsThreshold(state: unknown): number | null {
  const s = (state as { sets?: Record<string, unknown> } | null)?.sets?.novel_sessions as NovelSessionsState | undefined;
  return s?.h ?? null;
}
