/** The report's input: everything `renderReport` draws, already computed (src/cli/report.ts assembles it). */
import type { AlertsTable } from '../store/report.js';

export interface ReportGap {
  rank: number;
  id: string;
  status: 'new' | 'open' | 'reopened' | 'closed';
  /** topic: a topic the eval set does not test; thin: near misses of a tested cluster (`nearest`) */
  kind: 'topic' | 'thin';
  /** distinctive terms */
  label: string;
  requests: number;
  /** share of the period's traffic */
  share: number;
  escalationRate: number;
  /** UTC, '' for a closed gap */
  firstSeen: string;
  lastSeen: string;
  /** the nearest eval cluster's label */
  nearest: string;
  priority: number;
  /** diverse representatives (medoid, then farthest-first); `redacted` ones are sha256 hex and shown as hashes only */
  examples: { text: string; redacted: boolean }[];
}

export interface ReportData {
  title: string;
  generatedAt: string;
  period: { since: string; first: string; last: string; split: string };
  totals: { requests: number; uncovered: number; escalated: number; redacted: number };
  model: { version: string; k: number; cases: number; threshold: number; targetRate: number } | null;
  /** one point per time bucket (labels, UTC); uncovered share per model version (null where it scored nothing) */
  series: {
    stepSeconds: number;
    labels: string[];
    requests: number[];
    escalationRate: (number | null)[];
    uncoveredShare: { version: string; values: (number | null)[] }[];
  };
  /** the latest model's clusters (and "uncovered"): eval share, production reference and recent shares, escalation */
  clusters: { label: string; evalShare: number; referenceShare: number; recentShare: number; escalationRate: number | null; requests: number }[];
  /** 2-D PCA map of eval cases and sampled production queries */
  map: {
    eval: [number, number][];
    covered: [number, number][];
    uncovered: [number, number][];
    note: string;
  };
  gaps: ReportGap[];
  /** where the gaps come from (and how they are ranked) */
  gapsNote: string;
  alerts: AlertsTable;
  /** conversation depth, tool chains and sessions against the eval set (src/store/agent.ts); null before any request carries a turn, tools or a session */
  agent: AgentSection | null;
  /** the eval score reweighted to the period's traffic (evalgap estimate); null without stored eval results */
  productionScore?: ReportProductionScore | null;
  /** per-cluster comparisons of the agent versions in the period (evalgap compare); empty with fewer than two versions */
  versions?: ReportVersionComparison[];
}

/** One candidate version against the baseline (the version with the most requests in the period). */
export interface ReportVersionComparison {
  baseline: string;
  candidate: string;
  modelVersion: string;
  alpha: number;
  tests: number;
  units: { baseline: number; candidate: number };
  /** the candidate's traffic mix differs from the baseline's, with confidence */
  mixDiffers: boolean;
  /** all traffic (every outcome), then each (segment, outcome) with a verdict */
  rows: {
    segment: string;
    label: string;
    outcome: string;
    baseline: number | null;
    candidate: number | null;
    /** anytime-valid interval of the difference (candidate - baseline) */
    lo: number;
    hi: number;
    verdict: 'worse' | 'better' | 'no evidence yet';
  }[];
  /** segment names called worse / better */
  worse: string[];
  better: string[];
}

export interface AgentSection {
  depth: { band: string; requests: number; share: number; uncoveredShare: number; evalShare: number | null }[];
  /** eval cases that give a depth (the depth profile's cases) */
  evalCases: number;
  /** requests that carry a turn index, of all in the period */
  withTurn: number;
  total: number;
  chainVerdicts: Record<string, number>;
  untestedChains: { chain: string; requests: number; failureRate: number; missingBigram: string; example: string }[];
  sessions: { sessions: number; leftCoverage: number; firstUncoveredByBand: number[]; deepestTurn: number };
}

export interface ReportProductionScore {
  /** "your eval says X%; on this traffic it would be Y% [interval], and Z% of traffic is untested" */
  headline: string;
  modelVersion: string;
  runId: string;
  raw: number;
  estimate: number | null;
  interval: [number, number] | null;
  level: number;
  untested: number;
  bounds: { allFail: number; nearest: number; allPass: number } | null;
  /** stored daily rows (production_weighted_score, all agents), oldest first */
  days: { day: string; raw: number; estimate: number; low: number; high: number; untested: number }[];
}
