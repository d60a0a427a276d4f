/**
 * The estimate stage's reads and writes: eval results per case (migration 15; loads, migration 20),
 * production traffic per cluster, and the daily production-weighted score (migration 16). Values are
 * always bound as query parameters; only the store's table names are interpolated.
 *
 * An eval run is replaced whole: each load of a (model version, run id) writes its rows under a load
 * id, then commits one row in eval_loads; the run reads as its latest committed load only (view
 * latest_eval_results), so a second file under the same run id never mixes with the first, and a
 * load that stopped before its commit is never read.
 */
import { createHash } from 'node:crypto';
import { BANDS } from '../coverage/bands.js';
import type { StoreReader, StoreWriter, Window } from './gaps.js';
import type { Store } from './store.js';

/** One row of {db}.eval_results as inserted (its load_id is set by storeEvalLoad). */
export interface EvalResultRow {
  model_version: string;
  run_id: string;
  case_id: string;
  cluster: number;
  tags: string[];
  passed: 0 | 1 | null;
  score: number | null;
  scores: Record<string, number>;
  value: number | null;
  source: string;
}

export interface EvalLoad {
  modelVersion: string;
  runId: string;
  /** identifies the load's content (the same file gives the same id) */
  loadId: string;
  /** the results file */
  source: string;
  rows: Omit<EvalResultRow, 'model_version' | 'run_id' | 'source'>[];
}

/** The committed load a run reads as (null: no committed load). */
export async function currentEvalLoad(r: StoreReader, modelVersion: string, runId: string): Promise<{ load_id: string; cases: number } | null> {
  const rows = await r.query<{ cur: string; n: string }>(
    `SELECT argMax(load_id, (loaded_at, load_id)) AS cur, argMax(cases, (loaded_at, load_id)) AS n
     FROM ${r.t('eval_loads')} FINAL WHERE model_version = {v:String} AND run_id = {run:String}
     HAVING count() > 0`,
    { v: modelVersion, run: runId },
  );
  return rows.length ? { load_id: rows[0].cur, cases: Number(rows[0].n) } : null;
}

/**
 * Store one load of an eval run, replacing whatever the run held: its rows first (under its load
 * id), then its commit in eval_loads, after checking every row is there. Until the commit, readers
 * see the run as it was; after it, exactly this load's rows. When the run already reads as this very
 * load (the same file again), nothing is written.
 */
export async function storeEvalLoad(w: Store, load: EvalLoad): Promise<{ unchanged: boolean; replaced: number | null }> {
  const key = { v: load.modelVersion, run: load.runId, load: load.loadId };
  const current = await currentEvalLoad(w, load.modelVersion, load.runId);
  if (current?.load_id === load.loadId && current.cases === load.rows.length) return { unchanged: true, replaced: null };
  const rows = load.rows.map((x) => ({ model_version: load.modelVersion, run_id: load.runId, load_id: load.loadId, ...x, source: load.source }));
  const token = `results:${load.modelVersion}:${load.runId}:${load.loadId}`;
  for (let i = 0; i < rows.length; i += 10_000) await w.insertJson('eval_results', rows.slice(i, i + 10_000), `${token}:${i}`);
  const [n] = await w.query<{ n: string }>(
    `SELECT count() AS n FROM ${w.t('eval_results')} FINAL WHERE model_version = {v:String} AND run_id = {run:String} AND load_id = {load:String}`,
    key,
  );
  if (Number(n?.n ?? 0) !== rows.length) {
    throw new Error(`eval run ${load.runId}: ${n?.n ?? 0} of the ${rows.length} rows of load ${load.loadId} are stored; not committed (the run reads as before)`);
  }
  await w.insertJson('eval_loads', [{ model_version: load.modelVersion, run_id: load.runId, load_id: load.loadId, cases: rows.length, source: load.source }]);
  return { unchanged: false, replaced: current && current.load_id !== load.loadId ? current.cases : null };
}

/**
 * Store rows already keyed by model version and run id: each run among them as one load (storeEvalLoad)
 * whose id derives from `token`, so repeating the same import is a no-op and another replaces the run.
 */
export async function insertEvalResults(w: Store, rows: EvalResultRow[], token: string): Promise<void> {
  const runs = new Map<string, EvalResultRow[]>();
  for (const x of rows) {
    const k = JSON.stringify([x.model_version, x.run_id]);
    const run = runs.get(k);
    if (run) run.push(x);
    else runs.set(k, [x]);
  }
  const loadId = createHash('sha256').update(token).digest('hex').slice(0, 16);
  for (const run of runs.values()) {
    const { model_version, run_id, source } = run[0];
    await storeEvalLoad(w, { modelVersion: model_version, runId: run_id, loadId, source, rows: run.map(({ model_version: _m, run_id: _r, source: _s, ...x }) => x) });
  }
}

export interface EvalRunInfo {
  run_id: string;
  cases: number;
  /** mean of passed/score (null: per-metric scores only) */
  mean: number | null;
  /** when the run's current load was committed */
  stored_at: string;
}

/** The eval runs stored for a coverage model version (each as its latest load), latest load first. */
export async function listEvalRuns(r: StoreReader, modelVersion: string): Promise<EvalRunInfo[]> {
  const rows = await r.query<{ run_id: string; cases: string; mean: number | null; committed: string }>(
    `SELECT e.run_id AS run_id, count() AS cases, avgOrNull(e.value) AS mean, toString(any(l.loaded_at)) AS committed
     FROM ${r.t('latest_eval_results')} AS e
     INNER JOIN (SELECT run_id, max(loaded_at) AS loaded_at FROM ${r.t('eval_loads')} FINAL WHERE model_version = {v:String} GROUP BY run_id) AS l
       ON l.run_id = e.run_id
     WHERE e.model_version = {v:String}
     GROUP BY e.run_id ORDER BY committed DESC, run_id`,
    { v: modelVersion },
  );
  return rows.map((x) => ({ run_id: x.run_id, cases: Number(x.cases), mean: x.mean === null ? null : Number(x.mean), stored_at: x.committed }));
}

/** Model versions that have eval results, latest first. */
export async function modelsWithResults(r: StoreReader): Promise<string[]> {
  const rows = await r.query<{ v: string }>(
    `SELECT model_version AS v FROM ${r.t('eval_loads')} FINAL GROUP BY v ORDER BY max(loaded_at) DESC`,
  );
  return rows.map((x) => x.v);
}

/**
 * Per cluster: cases with a result and the sum of their results (passes, or scores; or one metric's
 * scores), and the same per sub-group (the case's first tag, '' without tags).
 */
export async function evalResultsByCluster(
  r: StoreReader,
  modelVersion: string,
  runId: string,
  metric?: string,
): Promise<Map<number, { cases: number; passed: number; subgroups: { n: number; s: number }[] }>> {
  const value = metric ? `scores[{metric:String}]` : 'value';
  const cond = metric ? ` AND mapContains(scores, {metric:String})` : ' AND value IS NOT NULL';
  const rows = await r.query<{ cluster: number; g: string; n: string; s: number }>(
    `SELECT cluster, if(empty(tags), '', tags[1]) AS g, count() AS n, sum(${value}) AS s FROM ${r.t('latest_eval_results')}
     WHERE model_version = {v:String} AND run_id = {run:String}${cond} GROUP BY cluster, g ORDER BY cluster, g`,
    { v: modelVersion, run: runId, ...(metric ? { metric } : {}) },
  );
  const out = new Map<number, { cases: number; passed: number; subgroups: { n: number; s: number }[] }>();
  for (const x of rows) {
    const c = out.get(Number(x.cluster)) ?? { cases: 0, passed: 0, subgroups: [] };
    c.cases += Number(x.n);
    c.passed += Number(x.s);
    c.subgroups.push({ n: Number(x.n), s: Number(x.s) });
    out.set(Number(x.cluster), c);
  }
  return out;
}

/** Metric names present in an eval run. */
export async function evalRunMetrics(r: StoreReader, modelVersion: string, runId: string): Promise<string[]> {
  const rows = await r.query<{ m: string }>(
    `SELECT DISTINCT arrayJoin(mapKeys(scores)) AS m FROM ${r.t('latest_eval_results')}
     WHERE model_version = {v:String} AND run_id = {run:String} ORDER BY m`,
    { v: modelVersion, run: runId },
  );
  return rows.map((x) => x.m);
}

const iso = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

export interface ClusterTraffic {
  covered: number;
  uncovered: number;
  deep: number;
  unbanded: number;
}

export interface TrafficCounts {
  /**
   * covered / uncovered requests per cluster (for uncovered rows: the nearest cluster); `deep`: covered requests in
   * the deepest coverage depth band, `unbanded`: covered requests stored without a band (a model without bands)
   */
  byCluster: Map<number, ClusterTraffic>;
  requests: number;
  /** distinct sessions (a request without a session id counts as its own) */
  sessions: number;
}

export interface DailyTraffic extends TrafficCounts {
  day: string; // YYYY-MM-DD
  agent: string; // '' = all agents
}

/**
 * Production traffic of a window scored by one coverage model, per cluster, for the whole window,
 * and per UTC day, per agent ('' = the window's agent or all agents) when `daily`.
 */
export async function trafficByCluster(
  r: StoreReader,
  w: Window & { modelVersion: string },
): Promise<{ total: TrafficCounts; days: DailyTraffic[] }> {
  let cond = `ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} AND model_version = {v:String}`;
  const params: Record<string, unknown> = { since: iso(w.since), until: iso(w.until), v: w.modelVersion };
  if (w.agent) {
    cond += ` AND agent = {agent:String}`;
    params.agent = w.agent;
  }
  const rows = await r.query<{ day: string; cluster: number; cov: string; unc: string; deep: string; unbanded: string }>(
    `SELECT toString(toDate(ts)) AS day, cluster, countIf(covered = 1) AS cov, countIf(covered = 0) AS unc,
            countIf(covered = 1 AND coverage_band = {deepest:Int8}) AS deep, countIf(covered = 1 AND coverage_band < 0) AS unbanded
     FROM ${r.t('requests')} WHERE ${cond} GROUP BY day, cluster ORDER BY day, cluster`,
    { ...params, deepest: BANDS - 1 },
  );
  const sessionKey = `uniqExact(if(session_id = '', concat('r:', request_id), concat('s:', session_id)))`;
  const perDay = await r.query<{ day: string; n: string; s: string }>(
    `SELECT toString(toDate(ts)) AS day, count() AS n, ${sessionKey} AS s FROM ${r.t('requests')} WHERE ${cond} GROUP BY day`,
    params,
  );
  const whole = await r.query<{ day: string; n: string; s: string }>(
    `SELECT '' AS day, count() AS n, ${sessionKey} AS s FROM ${r.t('requests')} WHERE ${cond}`,
    params,
  );
  const sess = [...perDay, ...whole];
  const total: TrafficCounts = { byCluster: new Map(), requests: 0, sessions: 0 };
  const days = new Map<string, DailyTraffic>();
  for (const x of rows) {
    const d = days.get(x.day) ?? { day: x.day, agent: w.agent ?? '', byCluster: new Map(), requests: 0, sessions: 0 };
    days.set(x.day, d);
    const c = Number(x.cluster);
    const v: ClusterTraffic = { covered: Number(x.cov), uncovered: Number(x.unc), deep: Number(x.deep), unbanded: Number(x.unbanded) };
    d.byCluster.set(c, v);
    const t = total.byCluster.get(c) ?? { covered: 0, uncovered: 0, deep: 0, unbanded: 0 };
    t.covered += v.covered;
    t.uncovered += v.uncovered;
    t.deep += v.deep;
    t.unbanded += v.unbanded;
    total.byCluster.set(c, t);
  }
  for (const s of sess) {
    const target = s.day === '' ? total : days.get(s.day);
    if (!target) continue;
    target.requests = Number(s.n);
    target.sessions = Number(s.s);
  }
  return { total, days: [...days.values()] };
}

/** Agents with traffic of a coverage model in the window, busiest first. */
export async function agentsInWindow(r: StoreReader, w: Window & { modelVersion: string }): Promise<string[]> {
  const rows = await r.query<{ agent: string }>(
    `SELECT agent FROM ${r.t('requests')}
     WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} AND model_version = {v:String}
     GROUP BY agent ORDER BY count() DESC, agent`,
    { since: iso(w.since), until: iso(w.until), v: w.modelVersion },
  );
  return rows.map((x) => x.agent);
}

/** Example production queries of a cluster (covered rows, text not redacted), distinct, spread by a hash. */
export async function clusterExamples(
  r: StoreReader,
  w: Window & { modelVersion: string },
  cluster: number,
  n: number,
): Promise<string[]> {
  let cond = `ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} AND model_version = {v:String}
    AND cluster = {c:Int32} AND covered = 1 AND query_redacted = 0`;
  const params: Record<string, unknown> = { since: iso(w.since), until: iso(w.until), v: w.modelVersion, c: cluster, n };
  if (w.agent) {
    cond += ` AND agent = {agent:String}`;
    params.agent = w.agent;
  }
  // one row per normalised text; a hash of it orders them (a spread sample, not the first ones stored)
  const rows = await r.query<{ q: string }>(
    `SELECT any(query) AS q FROM ${r.t('requests')} WHERE ${cond}
     GROUP BY lower(trimBoth(replaceRegexpAll(query, '\\\\s+', ' '))) AS norm
     ORDER BY cityHash64(norm) LIMIT {n:UInt32}`,
    params,
  );
  return rows.map((x) => x.q);
}

/** One row of {db}.production_weighted_score. */
export interface WeightedScoreRow {
  day: string;
  agent: string;
  computed_at: string;
  model_version: string;
  run_id: string;
  metric: string;
  requests: number;
  covered: number;
  untested_share: number;
  eval_cases: number;
  raw_score: number;
  estimate: number;
  low: number;
  high: number;
  level: number;
  all_traffic_all_fail: number;
  all_traffic_all_pass: number;
  all_traffic_nearest: number;
}

export async function writeWeightedScores(w: StoreWriter, rows: WeightedScoreRow[]): Promise<void> {
  await w.insertJson('production_weighted_score', rows);
}

/** The stored daily scores of an agent ('' = all agents) since a day, oldest first (the latest computation of each day). */
export async function readWeightedScores(r: StoreReader, agent: string, sinceDay: string): Promise<WeightedScoreRow[]> {
  const rows = await r.query<Omit<WeightedScoreRow, 'day' | 'computed_at'> & { day_text: string; computed_text: string }>(
    `SELECT toString(day) AS day_text, agent, toString(computed_at) AS computed_text, model_version, run_id, metric, requests, covered,
            untested_share, eval_cases, raw_score, estimate, low, high, level, all_traffic_all_fail, all_traffic_all_pass, all_traffic_nearest
     FROM ${r.t('production_weighted_score')} FINAL
     WHERE agent = {agent:String} AND day >= {since:Date} ORDER BY day`,
    { agent, since: sinceDay },
  );
  return rows.map(({ day_text, computed_text, ...x }) => ({ ...x, day: day_text, computed_at: computed_text, requests: Number(x.requests), covered: Number(x.covered), eval_cases: Number(x.eval_cases) }));
}

/** Each cluster's most frequent eval tag in one eval run (its group, toward which small clusters shrink). */
export async function clusterGroups(r: StoreReader, modelVersion: string, runId: string): Promise<Map<number, string>> {
  const rows = await r.query<{ cluster: number; g: string }>(
    `SELECT cluster, topK(1)(tag)[1] AS g FROM ${r.t('latest_eval_results')} ARRAY JOIN tags AS tag
     WHERE model_version = {v:String} AND run_id = {run:String} GROUP BY cluster`,
    { v: modelVersion, run: runId },
  );
  return new Map(rows.map((x) => [Number(x.cluster), x.g]));
}
