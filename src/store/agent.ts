/**
 * Conversation depth, tool chains and sessions: the eval side registered from the model's agent
 * profile, and the reads behind `evalgap agent-coverage` and the report (views of migration 19).
 * Values are always bound as query parameters.
 */
import { DEPTH_BANDS, chainBigrams, type AgentProfile } from '../coverage/agent.js';
import { where, type StoreReader, type StoreWriter, type Window } from './gaps.js';
import { closedSessionsCte } from './monitor.js';

const filter = where;

/** Register what a model's eval set tests of depth and tools (idempotent: the latest registration wins). */
export async function registerAgentProfile(store: StoreWriter, p: AgentProfile): Promise<void> {
  await store.insertJson(
    'eval_depth_profile',
    DEPTH_BANDS.map((band, i) => ({ model_version: p.modelVersion, depth_band: i, band, eval_share: p.depth.shares[i]!, eval_cases: Math.round(p.depth.shares[i]! * p.depth.cases) })),
  );
  if (p.tools.chains.length) {
    await store.insertJson(
      'eval_tool_chains',
      p.tools.chains.map((c) => ({ model_version: p.modelVersion, cluster: c.cluster, tools: c.tools, bigrams: chainBigrams(c.tools), cases: c.cases })),
    );
  }
}

export interface DepthRow {
  band: string;
  requests: number;
  share: number;
  uncovered: number;
  uncoveredShare: number;
  /** share of the eval cases that give a depth, in this band; null when the eval set gives none */
  evalShare: number | null;
}

/** Production traffic by conversation depth band (requests that carry a turn), with the eval set's profile. */
export async function depthCoverage(s: StoreReader, w: Window): Promise<{ rows: DepthRow[]; withTurn: number; total: number; evalCases: number }> {
  const f = filter(w);
  const rows = await s.query<{ depth_band: number; requests: string; uncovered: string }>(
    `SELECT toUInt8(multiIf(turn <= 1, 0, turn <= 3, 1, turn <= 7, 2, 3)) AS depth_band, count() AS requests, countIf(covered = 0) AS uncovered
     FROM ${s.t('requests')} WHERE ${f.sql} AND turn > 0 GROUP BY depth_band ORDER BY depth_band`,
    f.params,
  );
  const [tot] = await s.query<{ total: string; with_turn: string }>(
    `SELECT count() AS total, countIf(turn > 0) AS with_turn FROM ${s.t('requests')} WHERE ${f.sql}`,
    f.params,
  );
  const profile = await s.query<{ depth_band: number; eval_share: number; eval_cases: string }>(
    `SELECT depth_band, argMax(eval_share, registered_at) AS eval_share, argMax(eval_cases, registered_at) AS eval_cases
     FROM ${s.t('eval_depth_profile')}
     WHERE model_version IN (SELECT DISTINCT model_version FROM ${s.t('requests')} WHERE ${f.sql})
     GROUP BY model_version, depth_band`,
    f.params,
  );
  const withTurn = Number(tot?.with_turn ?? 0);
  const evalCases = profile.reduce((n, p) => n + Number(p.eval_cases), 0);
  return {
    withTurn,
    total: Number(tot?.total ?? 0),
    /** eval cases that give a depth (`turn` or `turns`), over the period's model versions */
    evalCases,
    rows: DEPTH_BANDS.map((band, i) => {
      const r = rows.find((x) => Number(x.depth_band) === i);
      const n = Number(r?.requests ?? 0);
      const u = Number(r?.uncovered ?? 0);
      const ev = profile.filter((p) => Number(p.depth_band) === i).reduce((a, p) => a + Number(p.eval_cases), 0);
      return { band, requests: n, share: withTurn ? n / withTurn : 0, uncovered: u, uncoveredShare: n ? u / n : 0, evalShare: evalCases ? ev / evalCases : null };
    }),
  };
}

export interface ChainRow {
  chain: string;
  verdict: string;
  missingBigram: string;
  requests: number;
  failed: number;
  escalated: number;
  failureRate: number;
  /** a few example queries (hashes when the text is redacted) */
  examples: string[];
}

/** Tool-chain coverage: counts per verdict, and the chains with most traffic that no eval case tests. */
export async function toolChains(s: StoreReader, w: Window, limit = 10): Promise<{ verdicts: Record<string, number>; untested: ChainRow[] }> {
  const f = filter(w);
  const v = await s.query<{ verdict: string; n: string }>(
    `SELECT verdict, count() AS n FROM ${s.t('tool_chain_coverage')} WHERE ${f.sql} GROUP BY verdict`,
    f.params,
  );
  // a chain's requests fall in several clusters, and the first step no case of the cluster takes
  // (the missing bigram) can differ between them: report the one most of its requests miss (ties:
  // the larger string), not whichever row the engine reads first
  const untested = await s.query<{ chain: string; missing: string; requests: string; failed: string; escalated: string; examples: string[] }>(
    `SELECT chain, argMax(m, (n, m)) AS missing, sum(n) AS requests, sum(f) AS failed, sum(e) AS escalated,
            arraySlice(arrayDistinct(arrayFlatten(groupArray(ex))), 1, 3) AS examples
     FROM (SELECT chain, missing_bigram AS m, count() AS n, countIf(outcome = 'failed') AS f,
                  countIf(escalated = 1) AS e, groupUniqArray(3)(query) AS ex
           FROM ${s.t('tool_chain_coverage')} WHERE ${f.sql} AND verdict = 'untested'
           GROUP BY chain, m)
     GROUP BY chain ORDER BY requests DESC, chain LIMIT {limit:UInt32}`,
    { ...f.params, limit },
  );
  return {
    verdicts: Object.fromEntries(v.map((r) => [r.verdict, Number(r.n)])),
    untested: untested.map((r) => ({
      chain: r.chain,
      verdict: 'untested',
      missingBigram: r.missing,
      requests: Number(r.requests),
      failed: Number(r.failed),
      escalated: Number(r.escalated),
      failureRate: Number(r.requests) ? (Number(r.failed) + Number(r.escalated)) / Number(r.requests) : 0,
      examples: r.examples,
    })),
  };
}

export interface SessionSummary {
  sessions: number;
  /** sessions with at least one uncovered turn */
  leftCoverage: number;
  /** sessions whose first uncovered turn falls in each depth band */
  firstUncoveredByBand: number[];
  deepestTurn: number;
}

/** Sessions of the window (requests with a session id): how many left coverage, and how deep. */
export async function sessionSummary(s: StoreReader, w: Window): Promise<SessionSummary> {
  const f = filter(w);
  const rows = await s.query<{ sessions: string; left: string; b0: string; b1: string; b2: string; b3: string; deepest: string }>(
    `SELECT count() AS sessions, countIf(first_uncovered > 0) AS left,
            countIf(first_uncovered = 1) AS b0, countIf(first_uncovered BETWEEN 2 AND 3) AS b1,
            countIf(first_uncovered BETWEEN 4 AND 7) AS b2, countIf(first_uncovered >= 8) AS b3, max(deepest) AS deepest
     FROM (SELECT session_id, max(turn) AS deepest, if(countIf(covered = 0) > 0, greatest(minIf(turn, covered = 0), 1), 0) AS first_uncovered
           FROM ${s.t('requests')} WHERE ${f.sql} AND session_id != '' GROUP BY session_id)`,
    f.params,
  );
  const r = rows[0];
  return {
    sessions: Number(r?.sessions ?? 0),
    leftCoverage: Number(r?.left ?? 0),
    firstUncoveredByBand: [r?.b0, r?.b1, r?.b2, r?.b3].map((x) => Number(x ?? 0)),
    deepestTurn: Number(r?.deepest ?? 0),
  };
}

/** The turns of one session in order (for `evalgap gaps --session`). */
export async function sessionTurns(s: StoreReader, sessionId: string): Promise<{ turn: number; ts: string; query: string; covered: number; cluster: number; tools: string[]; outcome: string }[]> {
  return s.query(
    `SELECT turn, toString(ts) AS ts, query, covered, cluster, tools, outcome FROM ${s.t('requests')}
     WHERE session_id = {sid:String} ORDER BY ts, turn LIMIT 1000`,
    { sid: sessionId },
  );
}

/** The depth band of `turn` in SQL (-1: the request carries no turn). */
const DEPTH_BAND_SQL = 'toInt8(if(turn = 0, -1, multiIf(turn <= 1, 0, turn <= 3, 1, turn <= 7, 2, 3)))';
/** A request failed for the agent rules: outcome failed, or handed to a human. */
const FAILED_SQL = "countIf(escalated = 1 OR outcome = 'failed')";

/** Requests of one monitor window in one depth band, nearest cluster (-1 without tools) and tool chain. */
export interface AgentCellRow {
  /** window start (ISO) */
  window: string;
  agent: string;
  model_version: string;
  depth_band: number;
  cluster: number;
  tools: string[];
  requests: number;
  failed: number;
}

const chTime = (iso: string) => new Date(iso).toISOString().slice(0, 23).replace('T', ' ');
const fromChTime = (s: string) => new Date(s.replace(' ', 'T') + (s.endsWith('Z') ? '' : 'Z')).toISOString();

/**
 * The monitor's agent rules: requests of [from, to) per window (of `windowSeconds`, aligned to the
 * epoch), agent, model version, conversation depth band and tool chain, with their failures.
 */
export async function agentCellsByWindow(s: StoreReader, from: string, to: string, windowSeconds: number): Promise<AgentCellRow[]> {
  const rows = await s.query<Record<string, unknown>>(
    `SELECT toStartOfInterval(ts, toIntervalSecond({w:UInt32}), 'UTC') AS window, agent, model_version,
            ${DEPTH_BAND_SQL} AS depth_band, if(length(tools) = 0, -1, cluster) AS chain_cluster, tools,
            count() AS requests, ${FAILED_SQL} AS failed
     FROM ${s.t('requests')}
     WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
     GROUP BY window, agent, model_version, depth_band, chain_cluster, tools`,
    { from: chTime(from), to: chTime(to), w: windowSeconds },
  );
  return rows.map((r) => ({
    window: fromChTime(String(r.window)),
    agent: String(r.agent),
    model_version: String(r.model_version),
    depth_band: Number(r.depth_band),
    cluster: Number(r.chain_cluster),
    tools: (r.tools as string[]) ?? [],
    requests: Number(r.requests),
    failed: Number(r.failed),
  }));
}

/** One closed session's requests in one agent cell ('' = a request without a session id). */
export interface AgentSessionRow extends Omit<AgentCellRow, 'window'> {
  session: string;
  /** ISO: last request + the idle gap */
  closedAt: string;
}

/**
 * The sessions that closed in [from, to) (idle for `idleSeconds` since their last request, read
 * whole over at most `maxSpanSeconds` before it), one row per session and agent cell, plus the
 * requests of [from, to) without a session id: the same sessions as MonitorStore.closedSessions.
 */
export async function closedAgentSessions(s: StoreReader, from: string, to: string, idleSeconds: number, maxSpanSeconds = 4 * 3600): Promise<AgentSessionRow[]> {
  const R = s.t('requests');
  const q = closedSessionsCte(R, from, to, idleSeconds, maxSpanSeconds);
  const rows = await s.query<Record<string, unknown>>(
    `${q.cte}
     SELECT agent, model_version, session_id, depth_band, chain_cluster, tools, requests, failed, last_ms FROM (
       SELECT r.agent AS agent, r.model_version AS model_version, r.session_id AS session_id,
              ${DEPTH_BAND_SQL.replace(/turn/g, 'r.turn')} AS depth_band, if(length(r.tools) = 0, -1, r.cluster) AS chain_cluster, r.tools AS tools,
              count() AS requests, countIf(r.escalated = 1 OR r.outcome = 'failed') AS failed, toUnixTimestamp64Milli(any(s.last)) AS last_ms
       FROM ${R} AS r INNER JOIN s ON r.agent = s.agent AND r.session_id = s.session_id
       WHERE r.ts >= {lo:DateTime64(3, 'UTC')} AND r.ts < {b:DateTime64(3, 'UTC')}
       GROUP BY agent, model_version, session_id, depth_band, chain_cluster, tools
       UNION ALL
       SELECT agent, model_version, '' AS session_id, ${DEPTH_BAND_SQL} AS depth_band, if(length(tools) = 0, -1, cluster) AS chain_cluster, tools,
              count() AS requests, ${FAILED_SQL} AS failed, toUnixTimestamp64Milli(max(ts)) - {idle:Int64} * 1000 AS last_ms
       FROM ${R} WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')} AND session_id = ''
       GROUP BY agent, model_version, depth_band, chain_cluster, tools)`,
    q.params,
  );
  return rows.map((r) => ({
    agent: String(r.agent),
    model_version: String(r.model_version),
    session: String(r.session_id),
    depth_band: Number(r.depth_band),
    cluster: Number(r.chain_cluster),
    tools: (r.tools as string[]) ?? [],
    requests: Number(r.requests),
    failed: Number(r.failed),
    closedAt: new Date(Number(r.last_ms) + idleSeconds * 1000).toISOString(),
  }));
}
