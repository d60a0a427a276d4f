/**
 * Monitor rules for agents (a RuleSet beside the core rules, src/monitor/compose.ts): conversation
 * depth and tool chains against what the eval set tests (the model's agent.json). Pure: the state
 * goes in and comes out as plain JSON; no I/O, no clock (hours come from window timestamps).
 *
 *   depth_mix        the share of turns at depth ≥ 2, ≥ 4 or ≥ 8 rises (a) against the production
 *                    reference, where the eval set tests that depth less than a doubling would
 *                    bring, and (b) from the first window, above the eval set's own share of it
 *                    (the upper end of its 95% interval: the eval set is a sample); (b) is a
 *                    standing fact, reported once and again only above the level reported
 *   untested_chains  the share of requests whose tool chain no eval case tests rises against the
 *                    production reference
 *   chain_failure    one tool chain's failure rate (failed or escalated) rises against its own
 *                    history
 *
 * Every detector is a one-sided Bernoulli CUSUM (detectors.ts) with the core's odds-ratio
 * alternatives; thresholds split each rule's alarm budget (1 per `arlDays`) over its scopes and
 * alternatives (Lorden: ARL ≥ e^h windows). Sessions are the unit of evidence as in the core
 * (docs/monitor.md): whole closed sessions measure each family's design effect, and every
 * detector's evidence is divided by it.
 */
import { z } from 'zod';
import { BernoulliCusum, type BernoulliCusumState, type Verdict } from './detectors.js';
import { klInterval, oddsShift } from './stats.js';
import type { RuleSet, RuleSetEvaluation } from './compose.js';
import type { AgentCell, AgentContext, AgentSessionCell, Finding, MonitorContext, RuleName, TrendRow, WindowCounts } from './types.js';
import { DEPTH_BANDS, chainBigrams, chainKey } from '../coverage/agent.js';
import { pct, scopeName, CI_LEVEL } from './wording.js';
import { windowClock } from './clock.js';

export interface AgentRulesOptions {
  /** false: the agent rules do not run */
  enabled: boolean;
  /** false-alarm guarantee of each rule, summed over its scopes: average run length in days */
  arlDays: number;
  /** production reference: the last `referenceDays` of closed hours */
  referenceDays: number;
  /** production-relative parts wait for this many hours of reference… */
  warmupHours: number;
  /** …and this many closed sessions in it (traffic with session ids) */
  warmupSessions: number;
  /** closed sessions needed before the design effect is known; until then rules on session traffic wait */
  minSessions: number;
  /** minimum evidence in a detector's segment before an alarm: requests… */
  minRequests: number;
  /** …and events (deep turns, untested chains, failures) */
  minEvents: number;
  /** odds ratios watched by every detector */
  ratios: number[];
  /** chain_failure watches the chains with the most requests in the reference, at most this many */
  maxChains: number;
  /** a firing finding resolves after this many minutes without a new alarm (and statistic < h/2) */
  resolveMinutes: number;
  /** while a rule fires, the scope's reference is frozen for at most this many hours of the episode */
  freezeHours: number;
  /** pseudo-requests shrinking an hour-of-day reference toward the whole reference */
  hourShrink: number;
}

export const DEFAULT_AGENT_RULES: AgentRulesOptions = {
  enabled: true,
  arlDays: 30,
  referenceDays: 7,
  warmupHours: 24,
  warmupSessions: 200,
  minSessions: 50,
  minRequests: 200,
  minEvents: 10,
  ratios: [1.25, 1.5, 2, 3, 5],
  maxChains: 50,
  resolveMinutes: 60,
  freezeHours: 24,
  hourShrink: 200,
};

/** The config file's `agentRules` object (every key optional; unknown keys rejected). */
export const AgentRulesOptionsSchema = z
  .object({
    enabled: z.boolean(),
    arlDays: z.number().positive(),
    referenceDays: z.number().positive(),
    warmupHours: z.number().nonnegative(),
    warmupSessions: z.number().int().nonnegative(),
    minSessions: z.number().int().positive(),
    minRequests: z.number().int().nonnegative(),
    minEvents: z.number().int().nonnegative(),
    ratios: z.array(z.number().gt(1)).min(1),
    maxChains: z.number().int().positive().max(10_000),
    resolveMinutes: z.number().positive(),
    freezeHours: z.number().nonnegative(),
    hourShrink: z.number().nonnegative(),
  })
  .partial()
  .strict();

/** tails of the depth mix watched: turns at depth band ≥ 1 (turn 2+), ≥ 2 (turn 4+), ≥ 3 (turn 8+) */
const TAILS = [1, 2, 3] as const;
const TAIL_NAME = ['turn 2+', 'turn 4+', 'turn 8+'];
/** pseudo-requests shrinking a chain's failure rate toward all chains' rate */
const CHAIN_SHRINK = 20;
/** a chain needs this many requests of history before chain_failure watches it */
const CHAIN_MIN_HISTORY = 20;
const MAX_DISPERSION = 100;
const SEVERITY: Record<'depth_mix' | 'untested_chains' | 'chain_failure', Finding['severity']> = {
  depth_mix: 'warning',
  untested_chains: 'warning',
  chain_failure: 'critical',
};

interface Block {
  key: number;
  hour: number;
  /** requests with a turn, per depth band */
  depth: number[];
  /** all requests, and those whose tool chain is untested */
  n: number;
  untested: number;
  /** per chain (tools called): [requests, failed or escalated] */
  chains: Record<string, [number, number]>;
  tainted: boolean;
}

/** sums of one accumulation period of closed sessions (see sessionMoments) */
interface Acc {
  sessions: number;
  start: string;
  n: number;
  m2: number;
  dT: number[];
  dQ: number[];
  dn: number;
  dm2: number;
  /** per depth tail (TAILS) among the requests with a turn: Σy, Σy², Σm·y */
  tail: [number, number, number][];
  /** untested: Σy, Σy², Σm·y */
  u: [number, number, number];
  /** per chain: Σn, Σn², Σe, Σn·e, Σe² */
  f: Record<string, [number, number, number, number, number]>;
}

interface Entry {
  end: string;
  sessions: number;
  num: Record<string, number>;
  den: Record<string, number>;
}

interface Sess {
  /** closed sessions with a session id were seen (not only requests without one) */
  ids: boolean;
  acc: Acc | null;
  ring: Entry[];
}

interface Scope {
  blocks: Block[];
  cur: Block | null;
  det: {
    rel: (BernoulliCusumState | null)[];
    ev: (BernoulliCusumState | null)[];
    unt: BernoulliCusumState | null;
    fail: Record<string, BernoulliCusumState>;
  };
  /** depth_mix (b): per tail, the production share reported as established (the eval reference rises to it) */
  evalFact: (number | null)[];
  sess: Sess | null;
}

interface Episode {
  firing: boolean;
  onset?: string;
  lastAlarm: number;
  /** a production-relative detector alarmed in this episode (only then is the reference frozen) */
  relative?: boolean;
}

export interface AgentRulesState {
  version: 1;
  modelVersion: string;
  agents: string[];
  scopes: Record<string, Scope>;
  episodes: Record<string, Episode>;
}

const zeros = (k: number) => new Array<number>(k).fill(0);
const sum = (a: readonly number[]) => a.reduce((s, v) => s + v, 0);
const clamp = (p: number) => Math.min(0.999, Math.max(1e-4, p));
const tailOf = (depth: readonly number[], t: number) => depth.slice(t).reduce((s, v) => s + v, 0);

/** What the eval set's chains cover: exact per cluster, exact anywhere, bigrams per cluster (the view tool_chain_coverage's rule). */
interface Tested {
  exact: Map<number, Set<string>>;
  anywhere: Set<string>;
  bigrams: Map<number, Set<string>>;
}
const testedCache = new WeakMap<AgentContext, Tested>();

function testedOf(a: AgentContext): Tested {
  const hit = testedCache.get(a);
  if (hit) return hit;
  const t: Tested = { exact: new Map(), anywhere: new Set(), bigrams: new Map() };
  for (const c of a.chains) {
    const k = chainKey(c.tools);
    t.anywhere.add(k);
    if (!t.exact.has(c.cluster)) t.exact.set(c.cluster, new Set());
    t.exact.get(c.cluster)!.add(k);
    if (!t.bigrams.has(c.cluster)) t.bigrams.set(c.cluster, new Set());
    for (const b of chainBigrams(c.tools)) t.bigrams.get(c.cluster)!.add(b);
  }
  testedCache.set(a, t);
  return t;
}

/**
 * Whether a production chain is covered by the eval set: exact (its cluster), exact elsewhere (any
 * cluster) or relaxed (every bigram taken by a case of its cluster), as the view tool_chain_coverage
 * judges it. A request that called no tool has no chain (null).
 */
export function chainCovered(a: AgentContext, cluster: number, tools: readonly string[]): boolean | null {
  if (tools.length === 0) return null;
  const t = testedOf(a);
  const k = chainKey(tools);
  if (t.exact.get(cluster)?.has(k) || t.anywhere.has(k)) return true;
  const have = t.bigrams.get(cluster);
  return have !== undefined && chainBigrams(tools).every((b) => have.has(b));
}

interface Now {
  depth: number[];
  n: number;
  untested: number;
  chains: Map<string, [number, number]>;
  untestedChains: Map<string, number>;
}

function aggregate(cells: readonly AgentCell[], a: AgentContext): Now {
  const now: Now = { depth: zeros(DEPTH_BANDS.length), n: 0, untested: 0, chains: new Map(), untestedChains: new Map() };
  const tools = a.toolCases > 0;
  for (const c of cells) {
    if (c.requests <= 0) continue;
    now.n += c.requests;
    if (c.depthBand >= 0 && c.depthBand < DEPTH_BANDS.length) now.depth[c.depthBand] += c.requests;
    if (c.tools.length === 0) continue;
    const k = chainKey(c.tools);
    const e = now.chains.get(k) ?? [0, 0];
    e[0] += c.requests;
    e[1] += c.failed;
    now.chains.set(k, e);
    if (tools && chainCovered(a, c.cluster, c.tools) === false) {
      now.untested += c.requests;
      now.untestedChains.set(k, (now.untestedChains.get(k) ?? 0) + c.requests);
    }
  }
  return now;
}

const emptyAcc = (start: string): Acc => ({ sessions: 0, start, n: 0, m2: 0, dT: zeros(DEPTH_BANDS.length), dQ: zeros(DEPTH_BANDS.length), dn: 0, dm2: 0, tail: TAILS.map(() => [0, 0, 0]), u: [0, 0, 0], f: {} });
const cloneAcc = (a: Acc): Acc => ({ ...a, dT: a.dT.slice(), dQ: a.dQ.slice(), tail: a.tail.map((x) => [x[0], x[1], x[2]]), u: [a.u[0], a.u[1], a.u[2]], f: Object.fromEntries(Object.entries(a.f).map(([k, v]) => [k, [...v] as Acc['f'][string]])) });

/** Add whole closed sessions (rows without a session id: each request its own session). */
function addSessions(acc: Acc, rows: { key: string; c: AgentSessionCell }[], a: AgentContext): void {
  const untested = (c: AgentCell) => c.tools.length > 0 && a.toolCases > 0 && chainCovered(a, c.cluster, c.tools) === false;
  const by = new Map<string, AgentSessionCell[]>();
  for (const r of rows) {
    const c = r.c;
    if (c.requests <= 0) continue;
    if (c.session !== '') {
      const l = by.get(r.key);
      if (l) l.push(c);
      else by.set(r.key, [c]);
      continue;
    }
    // requests without a session id: each its own session of one request (y ∈ {0, 1}: Σy² = Σy)
    const n = c.requests;
    const f = Math.min(c.failed, n);
    acc.sessions += n;
    acc.n += n;
    acc.m2 += n;
    if (c.depthBand >= 0 && c.depthBand < DEPTH_BANDS.length) {
      acc.dT[c.depthBand] += n;
      acc.dQ[c.depthBand] += n;
      acc.dn += n;
      acc.dm2 += n;
      TAILS.forEach((t, i) => {
        if (c.depthBand >= t) for (let j = 0; j < 3; j++) acc.tail[i][j] += n;
      });
    }
    if (untested(c)) for (let j = 0; j < 3; j++) acc.u[j] += n;
    if (c.tools.length) {
      const t = (acc.f[chainKey(c.tools)] ??= [0, 0, 0, 0, 0]);
      t[0] += n;
      t[1] += n;
      t[2] += f;
      t[3] += f;
      t[4] += f;
    }
  }
  for (const cells of by.values()) {
    let m = 0;
    let y = 0;
    let mb = 0;
    const band = zeros(DEPTH_BANDS.length);
    const ch = new Map<string, [number, number]>();
    for (const c of cells) {
      m += c.requests;
      if (c.depthBand >= 0 && c.depthBand < DEPTH_BANDS.length) {
        band[c.depthBand] += c.requests;
        mb += c.requests;
      }
      if (c.tools.length) {
        const k = chainKey(c.tools);
        const e = ch.get(k) ?? [0, 0];
        e[0] += c.requests;
        e[1] += Math.min(c.failed, c.requests);
        ch.set(k, e);
      }
      if (untested(c)) y += c.requests;
    }
    acc.sessions += 1;
    acc.n += m;
    acc.m2 += m * m;
    for (let b = 0; b < band.length; b++) {
      acc.dT[b] += band[b];
      acc.dQ[b] += band[b] * band[b];
    }
    acc.dn += mb;
    acc.dm2 += mb * mb;
    TAILS.forEach((t, i) => {
      const yt = tailOf(band, t);
      acc.tail[i][0] += yt;
      acc.tail[i][1] += yt * yt;
      acc.tail[i][2] += mb * yt;
    });
    acc.u[0] += y;
    acc.u[1] += y * y;
    acc.u[2] += m * y;
    for (const [k, [n, e]] of ch) {
      const t = (acc.f[k] ??= [0, 0, 0, 0, 0]);
      t[0] += n;
      t[1] += n * n;
      t[2] += e;
      t[3] += n * e;
      t[4] += e * e;
    }
  }
}

/**
 * The cluster-robust Pearson statistic of whole sessions over what it would be for independent
 * requests, per family (the core's design effect, docs/monitor.md): each depth tail (binary: a long
 * session puts many turns in the deep tails at once), the depth bands (multinomial, not used by a
 * detector: reported for reference), untested chains (binary) and each chain's failures (binary,
 * pooled over chains).
 */
function sessionMoments(a: Acc): { num: Record<string, number>; den: Record<string, number> } {
  const num: Record<string, number> = {};
  const den: Record<string, number> = {};
  const cats = a.dT.filter((v) => v > 0).length;
  if (cats >= 2 && a.dn > 0) {
    let x = -a.dm2;
    for (let c = 0; c < a.dT.length; c++) if (a.dT[c] > 0) x += (a.dQ[c] * a.dn) / a.dT[c];
    num.depth = x;
    den.depth = (cats - 1) * (a.dn - a.dm2 / a.dn);
  }
  const binary = (sy: number, sy2: number, smy: number, sn: number, sm2: number): [number, number] | null => {
    if (sn <= 0) return null;
    const p = sy / sn;
    if (!(p > 0 && p < 1)) return null;
    return [(sy2 - 2 * p * smy + p * p * sm2) / (p * (1 - p)), sn - sm2 / sn];
  };
  TAILS.forEach((_, i) => {
    const b = binary(a.tail[i][0], a.tail[i][1], a.tail[i][2], a.dn, a.dm2);
    if (b) [num[`tail${i}`], den[`tail${i}`]] = b;
  });
  const u = binary(a.u[0], a.u[1], a.u[2], a.n, a.m2);
  if (u) [num.untested, den.untested] = u;
  for (const [sn, sn2, se, sne, se2] of Object.values(a.f)) {
    const b = binary(se, se2, sne, sn, sn2);
    if (!b) continue;
    num.fail = (num.fail ?? 0) + b[0];
    den.fail = (den.fail ?? 0) + b[1];
  }
  return { num, den };
}

const sessCache = new WeakMap<Sess, { sessions: number; num: Record<string, number>; den: Record<string, number> }>();
function sessTotals(s: Sess) {
  const hit = sessCache.get(s);
  if (hit) return hit;
  const r = { sessions: 0, num: {} as Record<string, number>, den: {} as Record<string, number> };
  const add = (x: { sessions: number; num: Record<string, number>; den: Record<string, number> }) => {
    r.sessions += x.sessions;
    for (const f of Object.keys(x.den)) {
      r.num[f] = (r.num[f] ?? 0) + x.num[f];
      r.den[f] = (r.den[f] ?? 0) + x.den[f];
    }
  };
  for (const e of s.ring) add(e);
  if (s.acc && s.acc.sessions > 0) add({ sessions: s.acc.sessions, ...sessionMoments(s.acc) });
  sessCache.set(s, r);
  return r;
}

interface Reference {
  blocks: number;
  pooled: Block;
  byHour: Block[];
}
const refCache = new WeakMap<Block[], Reference>();
const emptyBlock = (key: number, hour: number): Block => ({ key, hour, depth: zeros(DEPTH_BANDS.length), n: 0, untested: 0, chains: {}, tainted: false });
function addBlock(into: Block, b: Block): void {
  for (let i = 0; i < into.depth.length; i++) into.depth[i] += b.depth[i] ?? 0;
  into.n += b.n;
  into.untested += b.untested;
  for (const [k, [n, f]] of Object.entries(b.chains)) {
    const e = (into.chains[k] ??= [0, 0]);
    e[0] += n;
    e[1] += f;
  }
}
function reference(blocks: Block[]): Reference {
  const hit = refCache.get(blocks);
  if (hit) return hit;
  const r: Reference = { blocks: blocks.length, pooled: emptyBlock(0, 0), byHour: Array.from({ length: 24 }, (_, h) => emptyBlock(0, h)) };
  for (const b of blocks) {
    addBlock(r.pooled, b);
    addBlock(r.byHour[b.hour], b);
  }
  refCache.set(blocks, r);
  return r;
}

/** keep a block's chain map bounded: the `keep` chains with most requests, the rest summed under '…' */
function capChains(chains: Record<string, [number, number]>, keep: number): Record<string, [number, number]> {
  const e = Object.entries(chains);
  if (e.length <= keep) return chains;
  e.sort((x, y) => y[1][0] - x[1][0] || (x[0] < y[0] ? -1 : 1));
  const out = Object.fromEntries(e.slice(0, keep));
  const rest: [number, number] = [0, 0];
  for (const [, [n, f]] of e.slice(keep)) {
    rest[0] += n;
    rest[1] += f;
  }
  out['…'] = rest;
  return out;
}

const idle = (h: number): Verdict => ({ alarm: false, statistic: 0, threshold: h, segmentRequests: 0, segmentEvents: 0, ratio: 1 });

/** The agent rule set: depth_mix, untested_chains and chain_failure (see the file comment). */
export function createAgentRules(options: Partial<AgentRulesOptions> = {}): RuleSet<AgentRulesState> {
  const o: AgentRulesOptions = { ...DEFAULT_AGENT_RULES, ...options };
  const G = o.ratios.length;
  const cusum = (h: number, state: BernoulliCusumState | null | undefined) =>
    new BernoulliCusum({ ratios: o.ratios, threshold: h, minRequests: o.minRequests, minEvents: o.minEvents }, state ?? undefined);

  function evaluate(prev: AgentRulesState | null, windows: WindowCounts[], ctx: MonitorContext): RuleSetEvaluation<AgentRulesState> {
    const notices: string[] = [];
    const findings: Finding[] = [];
    const trends: TrendRow[] = [];
    const fresh = (): AgentRulesState => ({ version: 1, modelVersion: ctx.modelVersion, agents: [], scopes: {}, episodes: {} });
    const st: AgentRulesState = !prev || prev.modelVersion !== ctx.modelVersion ? fresh() : { ...prev, scopes: { ...prev.scopes }, episodes: { ...prev.episodes } };
    const a = ctx.agent;
    const mine = windows.filter((w) => w.modelVersion === ctx.modelVersion);
    if (!o.enabled || !a || mine.length === 0) return { state: st, findings, trends, notices };
    const withCells = mine.filter((w) => (w.agentCells?.length ?? 0) > 0 || (w.agentSessions?.length ?? 0) > 0);
    if (withCells.length === 0 && Object.keys(st.scopes).length === 0) return { state: st, findings, trends, notices };

    const { start, end, t0, windowMs, widx, arlWindows } = windowClock(mine[0], o.arlDays);
    const hourKey = Math.floor(t0 / 3_600_000);
    const hour = new Date(hourKey * 3_600_000).getUTCHours();
    const maxBlocks = Math.round(o.referenceDays * 24);
    const resolveWindows = Math.max(1, Math.round((o.resolveMinutes * 60_000) / windowMs));
    const agents = [...new Set(withCells.map((w) => w.agent))].sort();
    st.agents = [...new Set([...st.agents, ...agents])].sort();
    const S = st.agents.length + 1;
    const depthOn = a.depthCases > 0;
    const toolsOn = a.toolCases > 0;
    // thresholds: each rule's alarm budget 1/ARL split over its scopes and alternatives
    const hDepth = Math.log(arlWindows * S * G * 2 * TAILS.length);
    const hUnt = Math.log(arlWindows * S * G);
    const hFail = Math.log(arlWindows * S * G * o.maxChains);
    // the eval set's share of each tail and the upper end of its 95% interval (it is a sample of cases)
    const evalTail = TAILS.map((t) => tailOf(a.depthShares, t));
    const evalUp = evalTail.map((e) => (depthOn ? klInterval(Math.round(e * a.depthCases), a.depthCases, CI_LEVEL)[1] : 1));

    for (const agent of ['*', ...agents.filter((x) => x !== '*')]) {
      const scopeWindows = agent === '*' ? mine : mine.filter((w) => w.agent === agent);
      const cells = scopeWindows.flatMap((w) => w.agentCells ?? []);
      const now = aggregate(cells, a);
      const prevScope: Scope = st.scopes[agent] ?? { blocks: [], cur: null, det: { rel: TAILS.map(() => null), ev: TAILS.map(() => null), unt: null, fail: {} }, evalFact: TAILS.map(() => null), sess: null };
      const sc: Scope = { ...prevScope, det: { ...prevScope.det, rel: prevScope.det.rel.slice(), ev: prevScope.det.ev.slice(), fail: { ...prevScope.det.fail } }, evalFact: prevScope.evalFact.slice() };
      st.scopes[agent] = sc;

      // ---- blocks of an hour: the production reference ----
      let blocks = sc.blocks;
      let cur: Block | null = sc.cur ? { ...sc.cur, depth: sc.cur.depth.slice(), chains: { ...sc.cur.chains } } : null;
      if (cur && cur.key !== hourKey) {
        if (!cur.tainted && cur.n > 0) blocks = [...blocks, { ...cur, chains: capChains(cur.chains, 2 * o.maxChains) }].slice(-maxBlocks);
        cur = null;
      }
      cur ??= emptyBlock(hourKey, hour);
      for (let b = 0; b < cur.depth.length; b++) cur.depth[b] += now.depth[b];
      cur.n += now.n;
      cur.untested += now.untested;
      for (const [k, [n, f]] of now.chains) {
        const e: [number, number] = cur.chains[k] ? [cur.chains[k][0], cur.chains[k][1]] : [0, 0];
        e[0] += n;
        e[1] += f;
        cur.chains[k] = e;
      }
      sc.blocks = blocks;
      sc.cur = cur;
      const ref = reference(blocks);

      // ---- closed sessions: the design effect of each family ----
      const closed = scopeWindows.flatMap((w) => (w.agentSessions ?? []).map((c) => ({ key: `${w.agent}\u0000${c.session}`, c })));
      if (sc.sess || closed.length > 0) {
        let ss: Sess = sc.sess ?? { ids: false, acc: null, ring: [] };
        if (!ss.ids && closed.some((x) => x.c.session !== '')) ss = { ...ss, ids: true };
        if (closed.length > 0) {
          const acc = ss.acc ? cloneAcc(ss.acc) : emptyAcc(start);
          addSessions(acc, closed, a);
          ss = { ...ss, acc };
        }
        if (ss.acc && ss.acc.sessions >= o.minSessions && t0 - Date.parse(ss.acc.start) >= 3_600_000) {
          ss = { ids: ss.ids, ring: [...ss.ring, { end: start, sessions: ss.acc.sessions, ...sessionMoments(ss.acc) }].filter((x) => t0 - Date.parse(x.end) < o.referenceDays * 86_400_000), acc: null };
        }
        sc.sess = ss;
      }
      const sessions = sc.sess ? sessTotals(sc.sess) : null;
      const hasIds = sc.sess?.ids === true;
      const sessOk = sessions !== null && sessions.sessions >= o.minSessions;
      const up = sessions && sessions.sessions > 0 ? 1 + 2 * Math.sqrt(2 / sessions.sessions) : 1;
      /** φ of a family: the sessions' design effect (upper bound); 1 without session ids; null while too few sessions have closed */
      const phi = (f: string): number | null => {
        if (!hasIds) return 1;
        if (!sessOk) return null;
        return sessions!.den[f] > 0 ? Math.min(MAX_DISPERSION, Math.max(1, (sessions!.num[f] / sessions!.den[f]) * up)) : 1;
      };
      const ready = ref.blocks >= o.warmupHours && (!hasIds || (sessOk && sessions!.sessions >= o.warmupSessions));

      // ---- episodes ----
      let freeze = false;
      const episode = (rule: RuleName, alarm: boolean, ratio: number, relative = true): Episode => {
        const key = `${rule}|${agent}`;
        const e: Episode = { ...(st.episodes[key] ?? { firing: false, lastAlarm: -1e15 }) };
        if (alarm) {
          if (!e.firing) {
            e.onset = start;
            delete e.relative;
          }
          e.firing = true;
          e.lastAlarm = widx;
          if (relative) e.relative = true;
        } else if (e.firing && widx - e.lastAlarm >= resolveWindows && ratio < 0.5) {
          e.firing = false;
          delete e.onset;
          delete e.relative;
        }
        st.episodes[key] = e;
        // a standing fact against the eval set (depth_mix (b)) does not freeze the production reference
        if (e.firing && e.relative && t0 - Date.parse(e.onset ?? start) < o.freezeHours * 3_600_000) freeze = true;
        return e;
      };
      const note = (firing: boolean) => (firing && !hasIds ? ' (No session ids: each request is counted as independent evidence.)' : '');
      const finding = (rule: 'depth_mix' | 'untested_chains' | 'chain_failure', e: Episode, stat: number, h: number, effect: Finding['effect'], summary: string) =>
        findings.push({
          rule,
          scope: { agent, cluster: null },
          firing: e.firing,
          severity: SEVERITY[rule],
          ...(e.firing && e.onset ? { onset: e.onset } : {}),
          windowStart: start,
          windowEnd: end,
          statistic: stat,
          threshold: h,
          effect,
          summary: summary + note(e.firing),
          clusters: [],
        });
      const trend = (rule: RuleName, sNow: number, sRef: number, sEval: number, stat: number, h: number) =>
        trends.push({ windowStart: start, windowEnd: end, rule, agent, cluster: null, modelVersion: ctx.modelVersion, shareNow: sNow, shareReference: sRef, shareEval: sEval, escalationRate: 0, statistic: stat, threshold: h });
      const P = ref.pooled;
      const H = ref.byHour[hour];
      const hourRef = (hx: number, hn: number, px: number, pn: number) => (hx + o.hourShrink * ((px + 0.5) / (pn + 1))) / (hn + o.hourShrink);

      // ---- depth_mix ----
      const seenDepth = sum(P.depth) + sum(cur.depth) > 0;
      if (depthOn && seenDepth) {
        const N = sum(now.depth);
        const PN = sum(P.depth);
        const HN = sum(H.depth);
        let best: { v: Verdict; tail: number; kind: 'rel' | 'ev'; p0: number } | null = null;
        let alarm = false;
        let relAlarm = false;
        let pdBest = 1;
        TAILS.forEach((t, i) => {
          const x = tailOf(now.depth, t);
          const pd = phi(`tail${i}`);
          // (b) against the eval set's own share (from the first window)
          const p0e = clamp(Math.max(evalUp[i], sc.evalFact[i] ?? 0));
          let ve = idle(hDepth);
          if (pd !== null && p0e < 0.999) {
            const d = cusum(hDepth, sc.det.ev[i]);
            ve = d.update(x, N, p0e, pd);
            sc.det.ev[i] = d.toJSON();
            if (ve.alarm && ve.segmentRequests > 0) {
              // a standing fact, reported once: from now on the eval reference is the level established
              const [, hi] = klInterval(ve.segmentEvents, ve.segmentRequests, CI_LEVEL, pd);
              sc.evalFact[i] = Math.min(0.999, Math.max(hi, p0e));
            }
          }
          // (a) against production, where a doubling of this tail's odds would pass what the eval set tests
          let vr = idle(hDepth);
          const p0r = clamp(hourRef(tailOf(H.depth, t), HN, tailOf(P.depth, t), PN));
          if (ready && pd !== null && evalUp[i] < oddsShift(p0r, 2)) {
            const d = cusum(hDepth, sc.det.rel[i]);
            const R = HN + o.hourShrink;
            vr = d.update(x, N, p0r, (seg: number) => pd * (1 + seg / R));
            sc.det.rel[i] = d.toJSON();
          } else sc.det.rel[i] = null;
          for (const [v, kind, p0] of [[ve, 'ev', p0e], [vr, 'rel', p0r]] as const) {
            if (v.alarm) alarm = true;
            if (v.alarm && kind === 'rel') relAlarm = true;
            if (!best || (v.alarm && !best.v.alarm) || (v.alarm === best.v.alarm && v.statistic > best.v.statistic)) {
              best = { v, tail: i, kind, p0 };
              pdBest = pd ?? 1;
            }
          }
        });
        const b = best!;
        const e = episode('depth_mix', alarm, b.v.statistic / hDepth, relAlarm);
        const curN = sum(cur.depth);
        const shareNow = (i: number) => (curN > 0 ? tailOf(cur!.depth, TAILS[i]) / curN : 0);
        const segShare = b.v.segmentRequests > 0 ? b.v.segmentEvents / b.v.segmentRequests : shareNow(b.tail);
        const [lo, hi] = b.v.segmentRequests > 0 ? klInterval(b.v.segmentEvents, b.v.segmentRequests, CI_LEVEL, pdBest) : [0, 1];
        const refShare = PN > 0 ? tailOf(P.depth, TAILS[b.tail]) / PN : 0;
        const evalText = `${pct(evalTail[b.tail])} of the eval set's cases (≤ ${pct(evalUp[b.tail])} at 95%, ${a.depthCases} cases give a depth)`;
        finding(
          'depth_mix',
          e,
          b.v.statistic,
          hDepth,
          { name: 'tail_share', value: segShare, lo, hi },
          e.firing
            ? `Conversations of ${scopeName(agent)} go deeper than the eval set tests: ${pct(segShare)} of turns are at ${TAIL_NAME[b.tail]} (95% ${pct(lo)}–${pct(hi)})` +
                (b.kind === 'rel' ? ` against ${pct(b.p0)} in the production reference at this hour` : ` against ${evalText}; reported once, again only if it rises above ${pct(sc.evalFact[b.tail] ?? b.p0)}`) +
                (b.kind === 'rel' ? `, and ${evalText}.` : '.')
            : `${pct(shareNow(b.tail))} of ${scopeName(agent)}'s turns this hour are at ${TAIL_NAME[b.tail]} (reference ${pct(refShare)}, ${evalText})` +
                (hasIds && !sessOk ? `; waiting for ${o.minSessions} closed sessions.` : ready ? '.' : '; production reference warming up.'),
        );
        trend('depth_mix', shareNow(b.tail), refShare, evalTail[b.tail], b.v.statistic, hDepth);
      }

      // ---- untested_chains ----
      // (only on traffic that calls tools)
      if (toolsOn && Object.keys(P.chains).length + Object.keys(cur.chains).length > 0) {
        const pu = phi('untested');
        const p0 = clamp(hourRef(H.untested, H.n, P.untested, P.n));
        let v = idle(hUnt);
        if (ready && pu !== null && now.n > 0) {
          const d = cusum(hUnt, sc.det.unt);
          const R = H.n + o.hourShrink;
          v = d.update(now.untested, now.n, p0, (seg: number) => pu * (1 + seg / R));
          sc.det.unt = d.toJSON();
        } else if (!ready) sc.det.unt = null;
        const e = episode('untested_chains', v.alarm, v.statistic / hUnt);
        const shareNow = cur.n > 0 ? cur.untested / cur.n : 0;
        const top = [...now.untestedChains].sort((x, y) => y[1] - x[1]).slice(0, 3);
        const segShare = v.segmentRequests > 0 ? v.segmentEvents / v.segmentRequests : shareNow;
        const [lo, hi] = v.segmentRequests > 0 ? klInterval(v.segmentEvents, v.segmentRequests, CI_LEVEL, pu ?? 1) : [0, 1];
        finding(
          'untested_chains',
          e,
          v.statistic,
          hUnt,
          { name: 'untested_share', value: segShare, lo, hi },
          e.firing
            ? `${pct(segShare)} of ${scopeName(agent)}'s requests (95% ${pct(lo)}–${pct(hi)}) call a tool chain no eval case tests, against ${pct(p0)} in the production reference at this hour` +
                (top.length ? `; now mostly ${top.map(([k, n]) => `${k} (${n})`).join(', ')}.` : '.')
            : `${pct(shareNow)} of ${scopeName(agent)}'s requests this hour call an untested tool chain (reference ${pct(P.n > 0 ? P.untested / P.n : 0)})` +
                (pu === null ? `; waiting for ${o.minSessions} closed sessions.` : ready ? '.' : '; production reference warming up.'),
        );
        trend('untested_chains', shareNow, P.n > 0 ? P.untested / P.n : 0, 0, v.statistic, hUnt);
      }

      // ---- chain_failure ----
      const refChains = Object.entries(P.chains).filter(([k, [n]]) => k !== '…' && n >= CHAIN_MIN_HISTORY);
      if (refChains.length > 0 || Object.keys(sc.det.fail).length > 0) {
        const pf = phi('fail');
        refChains.sort((x, y) => y[1][0] - x[1][0] || (x[0] < y[0] ? -1 : 1));
        const watched = new Map(refChains.slice(0, o.maxChains));
        let fn = 0;
        let ff = 0;
        for (const [n, f] of Object.values(P.chains)) {
          fn += n;
          ff += f;
        }
        const all = (ff + 0.5) / (fn + 1);
        const det: Record<string, BernoulliCusumState> = {};
        const alarmed: { chain: string; v: Verdict; p0: number }[] = [];
        let best: { chain: string; v: Verdict; p0: number } | null = null;
        for (const [k, [n, f]] of watched) {
          const p0 = clamp((f + CHAIN_SHRINK * all) / (n + CHAIN_SHRINK));
          const d = cusum(hFail, sc.det.fail[k]);
          const x = now.chains.get(k);
          let v = idle(hFail);
          if (ready && pf !== null && x && x[0] > 0) {
            const R = n + CHAIN_SHRINK;
            v = d.update(x[1], x[0], p0, (seg: number) => pf * (1 + seg / R));
          }
          det[k] = d.toJSON();
          if (v.alarm) alarmed.push({ chain: k, v, p0 });
          if (!best || v.statistic > best.v.statistic) best = { chain: k, v, p0 };
        }
        sc.det.fail = ready ? det : {};
        const top = alarmed.length ? alarmed.sort((x, y) => y.v.statistic - x.v.statistic)[0] : best;
        const v = top?.v ?? idle(hFail);
        const e = episode('chain_failure', alarmed.length > 0, v.statistic / hFail);
        const rate = v.segmentRequests > 0 ? v.segmentEvents / v.segmentRequests : 0;
        const [lo, hi] = v.segmentRequests > 0 ? klInterval(v.segmentEvents, v.segmentRequests, CI_LEVEL, pf ?? 1) : [0, 1];
        finding(
          'chain_failure',
          e,
          v.statistic,
          hFail,
          { name: 'failure_rate', value: rate, lo, hi },
          e.firing && top
            ? `Tool chain ${top.chain} of ${scopeName(agent)} fails or escalates more often: ${pct(rate)} (95% ${pct(lo)}–${pct(hi)}) of ${v.segmentRequests} requests against ${pct(top.p0)} in its history` +
                (alarmed.length > 1 ? `; also ${alarmed.slice(1, 4).map((x) => x.chain).join(', ')}.` : '.')
            : `${watched.size} tool chain(s) of ${scopeName(agent)} watched for a rising failure rate` +
                (pf === null ? `; waiting for ${o.minSessions} closed sessions.` : ready ? '.' : '; production reference warming up.'),
        );
        trend('chain_failure', rate, top?.p0 ?? 0, 0, v.statistic, hFail);
      }
      if (freeze) sc.cur = { ...sc.cur!, tainted: true };
    }
    return { state: st, findings, trends, notices };
  }

  return { key: 'agent', evaluate };
}

/** The monitor's view of the eval set's agent profile (src/coverage/agent.ts → MonitorContext.agent). */
export function agentContextOf(p: { depth: { cases: number; shares: number[] }; tools: { cases: number; chains: { cluster: number; tools: string[] }[] } }): AgentContext {
  return { depthCases: p.depth.cases, depthShares: p.depth.shares.slice(), toolCases: p.tools.cases, chains: p.tools.chains.map((c) => ({ cluster: c.cluster, tools: c.tools.slice() })) };
}
