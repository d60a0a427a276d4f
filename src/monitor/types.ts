/**
 * The contract between the monitor's pure core (src/monitor: detectors and the rules that combine
 * them) and the alert lifecycle (src/alert). Everything here is plain, JSON-serialisable data.
 *
 * Flow, once per closed evaluation window:
 *   store (window counts) → Monitor.evaluate(state, window, context) → { state, findings, trends }
 *   findings → alert lifecycle (firing / resolved / reminders, dedup) → outbox → webhooks
 *   state → durable checkpoint (after the outbox write)
 */

import type { SessionReference } from '../coverage/session-reference.js';

/** Counts of one eval cluster (or of the uncovered share inside it) in one window, for one agent. */
export interface ClusterCounts {
  /** nearest eval cluster id; the uncovered rows are counted inside their nearest cluster too */
  cluster: number;
  requests: number;
  uncovered: number;
  escalated: number;
  refused: number;
  failed: number;
  /** escalated requests among the uncovered ones (for the uncovered_escalation rule; optional) */
  uncoveredEscalated?: number;
  /**
   * requests per coverage depth band, deepest below the threshold first (src/coverage/bands.ts);
   * optional: without them (or with all zero) the novel-topic detector does not run
   */
  bands?: number[];
}

/** One closed evaluation window of one agent ('' = traffic with no agent) under one coverage model. */
export interface WindowCounts {
  /** ISO-8601 UTC, inclusive */
  start: string;
  /** ISO-8601 UTC, exclusive */
  end: string;
  agent: string;
  modelVersion: string;
  clusters: ClusterCounts[];
  /**
   * distinct sessions seen in the window (requests with a session_id). When it is > 0 the monitor
   * treats sessions as the unit of evidence: the rules that need a dispersion wait until closed
   * sessions have measured it (see `closedSessions`)
   */
  sessions?: number;
  /**
   * the sessions of this agent that closed in this window (idle for the runner's session gap),
   * whole: one row per session and coverage cell with its counts. The monitor measures from them
   * how much of each rule's evidence a session repeats (a design effect, see docs/monitor.md)
   */
  closedSessions?: SessionCell[];
  /**
   * the window's requests by conversation depth band and tool chain (src/monitor/agent-rules.ts);
   * optional: without them the agent rules stay silent
   */
  agentCells?: AgentCell[];
  /** the agent cells of the sessions that closed since the last evaluated window, whole (design effect) */
  agentSessions?: AgentSessionCell[];
}

/** Requests of one window in one conversation depth band, nearest cluster and tool chain. */
export interface AgentCell {
  /** 0: turn 1, 1: turns 2-3, 2: turns 4-7, 3: turn 8+; -1: the request carries no turn */
  depthBand: number;
  /** nearest eval cluster; -1 when the request called no tool (the cluster does not matter then) */
  cluster: number;
  /** the tools called, in order ([] = none) */
  tools: string[];
  requests: number;
  /** failed or escalated */
  failed: number;
}

/** One closed session's requests in one agent cell ('' = requests without a session id: each its own session). */
export interface AgentSessionCell extends AgentCell {
  session: string;
}

/** One closed session's requests in one coverage cell (nearest cluster, covered or not, depth band). */
export interface SessionCell {
  /** the session id ('' = requests without one: each is its own session) */
  session: string;
  cluster: number;
  uncovered: boolean;
  /** coverage depth band, or -1 (a model without bands) */
  band: number;
  requests: number;
  escalated: number;
  refused: number;
  failed: number;
  /**
   * Σ over the clock hours the whole session touched of its requests in that hour, squared (the
   * same on every row of the session; m² when it stayed within one hour, less when it straddled
   * hours, whose requests then correlate adjacent hour-of-day reference cells). Optional: absent =
   * unknown, counted as if every pair of the session's requests fell in different hours
   */
  hourSq?: number;
}

/** What the monitor knows about the coverage model in force (from its manifest). */
export interface MonitorContext {
  modelVersion: string;
  /** the false-uncovered rate calibrated at fit time (and its interval when the fit reports one) */
  calibratedRate: number;
  calibratedRateInterval?: [number, number];
  /** each eval cluster's share of the eval set (cluster id → share) */
  evalShares: Record<number, number>;
  /** optional cluster labels for summaries */
  labels?: Record<number, string>;
  /**
   * the band mix of a topic the eval set does not test (the model's novel-topic profile, one
   * share per band); absent for a model without bands: the novel-topic detector is then off
   */
  novelProfile?: number[];
  /**
   * the deep-band share of new phrasings of tested intents with its interval (the model's
   * calibration.bands.heldOut): the fixed reference of novel_vs_calibrated; absent: that rule is off.
   * `belowFloor`: a statement fitted before the deep bands' 1% floor (fewer than 3 bands, resting
   * on the eval set's few oddest phrasings, measured false on a second dataset): novel_vs_calibrated
   * stays off and novel_sessions does not use the fit's session reference; `deepBands` still groups
   * novel_sessions' production evidence, so state saved before stays comparable
   */
  heldOutDeep?: { deepBands: number; share: number; interval: [number, number]; novelShare: number; belowFloor?: boolean };
  /**
   * how closed sessions of tested intents score on novel_sessions' statistic, stated at fit time
   * (the model's calibration.bands.sessions, src/coverage/session-reference.ts): that rule's
   * reference until production's own is ready; absent: the rule waits for production history
   */
  sessionReference?: SessionReferenceContext;
  /** what the eval set tests of conversation depth and tool chains (the model's agent.json); absent: the agent rules stay silent */
  agent?: AgentContext;
  /**
   * each eval cluster's pass rate in the model's latest stored eval run (shrunk as evalgap estimate
   * does; cluster id → rate in [0, 1]); absent: the weighted_score rule is off
   */
  evalPassRates?: Record<number, number>;
}

/**
 * The fit-time session reference as novel_sessions reads it (src/coverage/session-reference.ts):
 * the band groups' caps it was computed with, p and q per band group, the cap W, the shape f(k) and
 * the bound on the mean of min(Λ, W) / f(k) over sessions of tested intents.
 */
export type SessionReferenceContext = Pick<SessionReference, 'caps' | 'deepBands' | 'groupShares' | 'novelShares' | 'cap' | 'shape' | 'bound'>;

export interface AgentContext {
  /** eval cases that give a depth, and their share per depth band (1, 2-3, 4-7, 8+) */
  depthCases: number;
  depthShares: number[];
  /** eval cases that list tools, and the distinct chains they expect per cluster */
  toolCases: number;
  chains: { cluster: number; tools: string[] }[];
}

export type RuleName =
  | 'uncovered_share' // uncovered share rises against the production reference
  | 'uncovered_vs_calibrated' // uncovered share above the rate calibrated at fit time
  | 'novel_vs_calibrated' // more traffic far below the eval set than new phrasings of tested intents reach (fit-time reference, no history needed)
  | 'uncovered_budget' // more than X% of traffic untested, established with confidence
  | 'cluster_mix' // the mix of nearest clusters (uncovered as its own category) shifts
  | 'eval_mismatch' // production share per cluster vs eval-set share changed materially (static fact)
  | 'escalation' // escalation / refusal / failure rate of a cluster rises against its own history
  | 'uncovered_escalation' // uncovered traffic escalates more than covered traffic
  | 'depth_mix' // conversations move toward depths the eval set does not test (src/monitor/agent-rules.ts)
  | 'untested_chains' // the share of requests calling a tool chain no eval case tests rises
  | 'chain_failure' // one tool chain's failure rate rises against its own history
  | 'version_regression' // a canary's candidate version meets a rollback condition (or earns promote); src/alert/version-guard.ts
  | 'weighted_score' // the eval score reweighted to production traffic falls (src/monitor/score-rules.ts)
  | 'novel_sessions'; // whole closed sessions fall far below the eval set more often than in the production reference (src/monitor/session-novel.ts)

/** Who an alert is about: agent '*' = all agents together; cluster null = not cluster-specific. */
export interface Scope {
  agent: string;
  cluster: number | null;
}

export interface ClusterShare {
  cluster: number;
  label?: string;
  shareNow: number;
  shareReference: number;
  shareEval: number;
  /** filled by the alert layer from the store (hashes when the text is redacted) */
  examples?: string[];
}

export interface Effect {
  /** e.g. 'uncovered_share_diff', 'total_variation', 'rate_ratio' */
  name: string;
  value: number;
  lo: number;
  hi: number;
}

/** The verdict of one rule for one scope after a window. */
export interface Finding {
  rule: RuleName;
  scope: Scope;
  /** true while the condition holds (detector alarmed and not yet cleared with hysteresis) */
  firing: boolean;
  severity: Severity;
  /** the window in which the detector first alarmed for this episode (ISO), when firing */
  onset?: string;
  windowStart: string;
  windowEnd: string;
  statistic: number;
  threshold: number;
  effect: Effect;
  /** one sentence a person can act on */
  summary: string;
  /** the clusters that drive it, most important first */
  clusters: ClusterShare[];
  /** version_regression only: the two versions' rates and intervals behind the verdict */
  comparison?: VersionComparison;
}

/** `rollback`: the canary guard's rollback conditions hold (version_regression). */
export type Severity = 'info' | 'warning' | 'critical' | 'rollback';

/** One (segment, outcome) of a canary guard's verdict: both versions' rates with their intervals. */
export interface VersionSegment {
  /** eval cluster id, -1 uncovered traffic, -2 all traffic */
  cluster: number;
  segment: 'cluster' | 'uncovered' | 'all';
  label: string | null;
  /** the segment's share of the baseline's units */
  share: number;
  outcome: string;
  /** the rollback condition's ratio (the candidate's rate above ratio × the baseline's) */
  conditionRatio: number;
  baseline: { units: number; rate: number | null; lo: number; hi: number };
  candidate: { units: number; rate: number | null; lo: number; hi: number };
  difference: { lo: number; hi: number };
  /** hi null: unbounded */
  ratio: { lo: number; hi: number | null };
  examples: string[];
}

/** What a version_regression alert (or promote notice) carries besides the common fields. */
export interface VersionComparison {
  verdict: 'rollback' | 'promote';
  baseline: string;
  candidate: string;
  /** the canary's start (ISO) */
  since: string;
  alpha: number;
  /** Bonferroni: every (segment, outcome) pair of the guard is tested at alpha / tests */
  tests: number;
  /** the rollback findings (empty for promote) */
  segments: VersionSegment[];
}

/** One row per rule and scope per evaluated window: the trend table users plot. */
export interface TrendRow {
  windowStart: string;
  windowEnd: string;
  rule: RuleName;
  agent: string;
  cluster: number | null;
  modelVersion: string;
  shareNow: number;
  shareReference: number;
  shareEval: number;
  escalationRate: number;
  statistic: number;
  threshold: number;
}

/** Serialisable detector state (checkpointed durably by the runner). */
export type MonitorState = { version: 1; modelVersion: string; [key: string]: unknown };

export interface MonitorEvaluation {
  state: MonitorState;
  findings: Finding[];
  trends: TrendRow[];
  /** notices that are not alerts, e.g. "coverage model changed: references restart" */
  notices: string[];
}

/**
 * The pure monitor: given the previous state (null on first start), every agent's counts of one
 * closed window, and the model context, returns the new state, the findings (firing or not, one per
 * rule and scope evaluated), trend rows and notices. Deterministic; no I/O, no clock.
 */
export type EvaluateWindow = (state: MonitorState | null, windows: WindowCounts[], ctx: MonitorContext) => MonitorEvaluation;
