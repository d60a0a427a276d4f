/**
 * The estimate stage's edge: reads eval results and production traffic through src/store, runs the
 * pure cores (./poststratify.ts, ./plan.ts), writes the daily production-weighted score.
 */
import { clusterLabels, latestModelVersion, readLatestGaps, canWrite, type StoreReader, type Window } from '../store/gaps.js';
import {
  agentsInWindow,
  clusterGroups,
  clusterExamples,
  evalResultsByCluster,
  evalRunMetrics,
  listEvalRuns,
  modelsWithResults,
  trafficByCluster,
  writeWeightedScores,
  type TrafficCounts,
  type WeightedScoreRow,
  type ClusterTraffic,
} from '../store/estimate.js';
import { estimateScore, passRatePosterior, type ClusterCounts, type Estimate, type EstimateOptions } from './poststratify.js';
import { planCases, type Plan, type PlanGap } from './plan.js';

export class EstimateError extends Error {}

export interface EstimateQuery {
  since: number;
  until: number;
  /** one agent ('' or undefined: all agents) */
  agent?: string;
  /** coverage model version: 'latest' (the window's latest request's) or a version */
  modelVersion?: string;
  /** eval run id (default: the latest stored for the model) */
  runId?: string;
  /** a per-metric score instead of passed/score */
  metric?: string;
  level?: number;
  draws?: number;
  seed?: number;
  /** the within-cluster term: tilt (default) or off (plain post-stratification) */
  withinCluster?: 'tilt' | 'off';
}

export interface EstimateReport {
  modelVersion: string;
  runId: string;
  metric: string;
  since: number;
  until: number;
  agent: string;
  estimate: Estimate;
  /** per UTC day of the window */
  days: { day: string; estimate: Estimate }[];
  /** per agent (only when the query is over all agents and more than one has traffic) */
  agents: { agent: string; estimate: Estimate }[];
  /** metric names present in the run */
  metrics: string[];
}

const designEffect = (t: TrafficCounts) => (t.sessions > 0 && t.requests > t.sessions ? t.requests / t.sessions : 1);

async function resolveModelAndRun(r: StoreReader, q: EstimateQuery): Promise<{ modelVersion: string; runId: string }> {
  let modelVersion = q.modelVersion && q.modelVersion !== 'latest' ? q.modelVersion : null;
  if (!modelVersion) {
    modelVersion = await latestModelVersion(r, { since: q.since, until: q.until, agent: q.agent || undefined });
    if (!modelVersion) {
      const withResults = await modelsWithResults(r);
      if (!withResults.length) throw new EstimateError('no production traffic in this period and no eval results stored (evalgap results FILE --model M)');
      modelVersion = withResults[0];
    }
  }
  const runs = await listEvalRuns(r, modelVersion);
  if (!runs.length) {
    throw new EstimateError(
      `no eval results stored for coverage model ${modelVersion}: load them with evalgap results FILE --model <that model's folder>`,
    );
  }
  const runId = q.runId ?? runs[0].run_id;
  if (!runs.some((x) => x.run_id === runId)) {
    throw new EstimateError(`no eval run ${runId} for coverage model ${modelVersion} (stored: ${runs.map((x) => x.run_id).join(', ')})`);
  }
  return { modelVersion, runId };
}

/** a cluster's covered requests in the deepest depth band: undefined when its rows lack bands, 0 without traffic */
const deepCovered = (t: ClusterTraffic | undefined): number | undefined => (!t ? 0 : t.unbanded > 0 ? undefined : t.deep);

function countsOf(
  results: Map<number, { cases: number; passed: number; subgroups: { n: number; s: number }[] }>,
  traffic: TrafficCounts,
  labels: Map<number, string>,
  groups: Map<number, string>,
): ClusterCounts[] {
  const ids = [...new Set([...results.keys(), ...traffic.byCluster.keys()])].sort((a, b) => a - b);
  return ids.map((c) => ({
    cluster: c,
    label: labels.get(c) ?? `cluster ${c}`,
    group: groups.get(c) ?? '',
    evalCases: results.get(c)?.cases ?? 0,
    evalPassed: results.get(c)?.passed ?? 0,
    covered: traffic.byCluster.get(c)?.covered ?? 0,
    uncovered: traffic.byCluster.get(c)?.uncovered ?? 0,
    subgroups: results.get(c)?.subgroups,
    // the deepest band's requests, where the within-cluster term fits production's lean (none when rows lack bands)
    deepCovered: deepCovered(traffic.byCluster.get(c)),
  }));
}

export async function computeEstimate(r: StoreReader, q: EstimateQuery): Promise<EstimateReport> {
  const { modelVersion, runId } = await resolveModelAndRun(r, q);
  const metrics = await evalRunMetrics(r, modelVersion, runId);
  if (q.metric && !metrics.includes(q.metric)) {
    throw new EstimateError(`eval run ${runId} has no metric "${q.metric}" (metrics: ${metrics.join(', ') || 'none'})`);
  }
  const results = await evalResultsByCluster(r, modelVersion, runId, q.metric);
  if (![...results.values()].some((x) => x.cases > 0)) {
    throw new EstimateError(`eval run ${runId} has no passed/score results (only per-metric scores: use --metric ${metrics[0] ?? ''})`);
  }
  const labels = await clusterLabels(r, modelVersion);
  const groups = await clusterGroups(r, modelVersion, runId);
  const opts: Partial<EstimateOptions> = { level: q.level, draws: q.draws, seed: q.seed, withinCluster: q.withinCluster };
  const run = (t: TrafficCounts, draws = opts.draws) => estimateScore(countsOf(results, t, labels, groups), { ...opts, draws, designEffect: designEffect(t) });
  // the period's estimate with the full draws; each day's and agent's with fewer (bounded work for long periods and many agents)
  const part = Math.min(opts.draws ?? 4000, 1000);
  const w: Window & { modelVersion: string } = { since: q.since, until: q.until, agent: q.agent || undefined, modelVersion };
  const traffic = await trafficByCluster(r, w);
  const days = traffic.days.map((d) => ({ day: d.day, estimate: run(d, part) }));
  const agents: EstimateReport['agents'] = [];
  if (!q.agent) {
    const names = await agentsInWindow(r, w);
    if (names.length > 1) {
      for (const a of names) agents.push({ agent: a, estimate: run((await trafficByCluster(r, { ...w, agent: a })).total, part) });
    }
  }
  return { modelVersion, runId, metric: q.metric ?? '', since: q.since, until: q.until, agent: q.agent ?? '', estimate: run(traffic.total), days, agents, metrics };
}

/** The report's days as rows of production_weighted_score (one per day and agent). */
export function weightedScoreRows(rep: EstimateReport, now = Date.now()): WeightedScoreRow[] {
  const at = new Date(now).toISOString().replace('T', ' ').replace('Z', '');
  const nan = (x: number | null | undefined) => (x === null || x === undefined ? Number.NaN : x);
  return rep.days.map(({ day, estimate: e }) => ({
    day,
    agent: rep.agent,
    computed_at: at,
    model_version: rep.modelVersion,
    run_id: rep.runId,
    metric: rep.metric,
    requests: e.requests,
    covered: e.covered,
    untested_share: e.untested,
    eval_cases: e.evalCases,
    raw_score: e.raw,
    estimate: nan(e.estimate),
    low: nan(e.interval?.[0]),
    high: nan(e.interval?.[1]),
    level: e.level,
    all_traffic_all_fail: nan(e.bounds?.allFail.estimate),
    all_traffic_all_pass: nan(e.bounds?.allPass.estimate),
    all_traffic_nearest: nan(e.bounds?.nearest.estimate),
  }));
}

/** Store the daily rows; false when the reader cannot write (a running instance's read-only endpoint). */
export async function storeWeightedScores(r: StoreReader, rep: EstimateReport, now = Date.now()): Promise<boolean> {
  if (!canWrite(r)) return false;
  // JSON has no NaN: the engine reads null into a Float64 column as its default (0), so NaN is sent as the string 'nan'
  const rows = weightedScoreRows(rep, now).map((x) =>
    Object.fromEntries(Object.entries(x).map(([k, v]) => [k, typeof v === 'number' && Number.isNaN(v) ? 'nan' : v])),
  );
  await writeWeightedScores(r, rows as unknown as WeightedScoreRow[]);
  return true;
}

export interface PlanReport {
  report: EstimateReport;
  plan: Plan;
  /** example production queries per planned cluster (empty when the text is redacted), and per gap */
  examples: Map<string, string[]>;
  /** gaps used: from the latest stored discovery of the scope */
  gapsFrom: string | null;
}

export async function computePlan(
  r: StoreReader,
  q: EstimateQuery & { budget: number; coveredOnly?: boolean; examples?: number },
): Promise<PlanReport> {
  const report = await computeEstimate(r, q);
  const stored = q.coveredOnly ? [] : (await readLatestGaps(r, q.agent ?? '')).filter((g) => g.status !== 'closed' && g.members > 0);
  // the gap's share is of its discovery's period; rescaled so the gaps fill at most this window's untested share
  const sum = stored.reduce((s, g) => s + g.share, 0);
  const fit = sum > report.estimate.untested && sum > 0 ? report.estimate.untested / sum : 1;
  const gaps: PlanGap[] = stored.map((g) => ({
    gapId: g.gap_id,
    label: g.label,
    share: g.share * fit,
    escalationRate: g.escalation_rate,
    priority: g.priority,
  }));
  const plan = planCases(report.estimate, gaps, q.budget, { coveredOnly: q.coveredOnly });
  const n = q.examples ?? 3;
  const examples = new Map<string, string[]>();
  const w = { since: q.since, until: q.until, agent: q.agent || undefined, modelVersion: report.modelVersion };
  for (const it of plan.items) {
    if (it.cases === 0 || n === 0) continue;
    if (it.kind === 'cluster') examples.set(`cluster:${it.id}`, await clusterExamples(r, w, Number(it.id), Math.min(n, it.cases)));
    else if (it.kind === 'gap') {
      const g = stored.find((x) => x.gap_id === it.id)!;
      // redacted requests' examples are sha256 hex, not text: left out
      examples.set(`gap:${it.id}`, g.examples.filter((e) => !/^[0-9a-f]{64}$/.test(e)).slice(0, Math.min(n, it.cases)));
    }
  }
  return { report, plan, examples, gapsFrom: stored.length ? stored[0].run_day : null };
}

/**
 * Each cluster's pass rate in the latest stored eval run of a coverage model (the posterior mean
 * `evalgap estimate` uses: shrunk toward its tag's clusters or the whole set), for the monitor's
 * weighted_score rule; null when the model has no stored results.
 */
export async function evalPassRates(r: StoreReader, modelVersion: string, clusterIds: readonly number[]): Promise<Record<number, number> | null> {
  const runs = await listEvalRuns(r, modelVersion);
  if (!runs.length) return null;
  const results = await evalResultsByCluster(r, modelVersion, runs[0].run_id);
  if (![...results.values()].some((x) => x.cases > 0)) return null;
  const groups = await clusterGroups(r, modelVersion, runs[0].run_id);
  const ids = [...new Set([...clusterIds, ...results.keys()])].sort((a, b) => a - b);
  const counts: ClusterCounts[] = ids.map((c) => ({
    cluster: c,
    label: '',
    group: groups.get(c) ?? '',
    evalCases: results.get(c)?.cases ?? 0,
    evalPassed: results.get(c)?.passed ?? 0,
    covered: 0,
    uncovered: 0,
  }));
  const post = passRatePosterior(counts);
  return Object.fromEntries(ids.map((c, i) => [c, post.mean[i]]));
}
