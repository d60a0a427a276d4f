/**
 * Gap discovery's reads and writes. Every function takes a `StoreReader`, which the embedded or
 * server `Store` is, and so is the read-only client of a running `evalgap run` (./http-query.ts);
 * writes need the `Store`. Values are always bound as query parameters.
 */
import { dequantizeInto } from './embeddings.js';

export interface StoreReader {
  query<T>(sql: string, params?: Record<string, unknown>): Promise<T[]>;
  t(table: string): string;
  readonly location: string;
}

export interface StoreWriter extends StoreReader {
  insertJson(table: string, rows: object[]): Promise<void>;
}

export function canWrite(s: StoreReader): s is StoreWriter {
  return typeof (s as Partial<StoreWriter>).insertJson === 'function';
}

export interface Window {
  /** epoch ms, inclusive */
  since: number;
  /** epoch ms, exclusive */
  until: number;
  /** one agent, or all when undefined/empty */
  agent?: string;
  /** one coverage model's rows, or all when undefined/empty */
  modelVersion?: string;
}

const iso = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

/** The SQL filter of a window (time, agent, model version) on `requests`-like rows, with its parameters. */
export function where(w: Window, alias = ''): { sql: string; params: Record<string, unknown> } {
  const a = alias ? `${alias}.` : '';
  let sql = `${a}ts >= {since:DateTime64(3, 'UTC')} AND ${a}ts < {until:DateTime64(3, 'UTC')}`;
  const params: Record<string, unknown> = { since: iso(w.since), until: iso(w.until) };
  if (w.agent) {
    sql += ` AND ${a}agent = {agent:String}`;
    params.agent = w.agent;
  }
  if (w.modelVersion) {
    sql += ` AND ${a}model_version = {modelVersion:String}`;
    params.modelVersion = w.modelVersion;
  }
  return { sql, params };
}

/** The coverage model that scored the latest request of the window, or null when there is none. */
export async function latestModelVersion(r: StoreReader, w: Window): Promise<string | null> {
  const q = where({ ...w, modelVersion: undefined });
  const rows = await r.query<{ v: string; n: string }>(
    `SELECT argMax(model_version, ts) AS v, count() AS n FROM ${r.t('requests')} WHERE ${q.sql}`,
    q.params,
  );
  return rows[0] && Number(rows[0].n) > 0 ? rows[0].v : null;
}

export interface Totals {
  requests: number;
  uncovered: number;
  bad: number;
  badUncovered: number;
  /** share of requests in covered regions */
  coverage: number;
  /** share of bad outcomes (escalated, refused, failed) in covered regions */
  riskCoverage: number;
}

function totalsOf(x: { requests: string; uncovered: string; bad: string; bad_uncovered: string }): Totals {
  const requests = Number(x.requests);
  const uncovered = Number(x.uncovered);
  const bad = Number(x.bad);
  const badUncovered = Number(x.bad_uncovered);
  return {
    requests,
    uncovered,
    bad,
    badUncovered,
    coverage: requests ? 1 - uncovered / requests : 1,
    riskCoverage: bad ? 1 - badUncovered / bad : 1,
  };
}

const TOTALS = `count() AS requests, countIf(covered = 0) AS uncovered,
  countIf(escalated = 1 OR outcome IN ('refused', 'failed')) AS bad,
  countIf(covered = 0 AND (escalated = 1 OR outcome IN ('refused', 'failed'))) AS bad_uncovered`;

export async function readTotals(r: StoreReader, w: Window): Promise<Totals> {
  const q = where(w);
  const rows = await r.query<Parameters<typeof totalsOf>[0]>(`SELECT ${TOTALS} FROM ${r.t('requests')} WHERE ${q.sql}`, q.params);
  return totalsOf(rows[0]);
}

/** Traffic-weighted coverage per agent over the window. */
export async function coverageByAgent(r: StoreReader, w: Window): Promise<(Totals & { agent: string })[]> {
  const q = where(w);
  const rows = await r.query<Parameters<typeof totalsOf>[0] & { agent: string }>(
    `SELECT agent, ${TOTALS} FROM ${r.t('requests')} WHERE ${q.sql} GROUP BY agent ORDER BY requests DESC`,
    q.params,
  );
  return rows.map((x) => ({ agent: x.agent, ...totalsOf(x) }));
}

/** Coverage per hour or day (bucket start as ISO-8601), oldest first. */
export async function coverageOverTime(
  r: StoreReader,
  w: Window & { bucket?: 'hour' | 'day' },
): Promise<(Totals & { bucket: string })[]> {
  const q = where(w);
  const fn = w.bucket === 'day' ? 'toStartOfDay' : 'toStartOfHour';
  const rows = await r.query<Parameters<typeof totalsOf>[0] & { bucket: string }>(
    `SELECT formatDateTime(${fn}(ts), '%Y-%m-%dT%H:%i:%SZ') AS bucket, ${TOTALS}
     FROM ${r.t('requests')} WHERE ${q.sql} GROUP BY bucket ORDER BY bucket`,
    q.params,
  );
  return rows.map((x) => ({ bucket: x.bucket, ...totalsOf(x) }));
}

export interface UncoveredData {
  rows: {
    request_id: string;
    ts: number;
    agent: string;
    query: string;
    query_redacted: 0 | 1;
    escalated: 0 | 1;
    outcome: string;
    cluster: number;
    coverage: number;
    /** coverage depth band (src/coverage/bands.ts); -1 or absent: a model without bands or an older row */
    band?: number;
    /** the conversation the request belongs to; '' or absent: none (each request its own session) */
    session_id?: string;
  }[];
  vectors: Float32Array;
  dim: number;
  /** uncovered requests of the window without a stored embedding (ingested before migration 5) */
  missingEmbeddings: number;
}

/** Uncovered requests of the window with their (dequantised, unit) embeddings. */
export async function readUncovered(r: StoreReader, w: Window): Promise<UncoveredData> {
  const q = where(w, 'q');
  const qe = where({ since: w.since, until: w.until, agent: w.agent });
  type Raw = {
    request_id: string;
    ts: string;
    agent: string;
    query: string;
    query_redacted: number;
    escalated: number;
    outcome: string;
    cluster: number;
    coverage: number;
    band: number;
    session_id: string;
    scale: number;
    /** the int8 embedding as hex of (value + 128) bytes: 2 characters per component instead of up to 5 */
    emb: string;
    has: number;
  };
  const raw = await r.query<Raw>(
    `SELECT q.request_id AS request_id, toString(toUnixTimestamp64Milli(q.ts)) AS ts, q.agent AS agent, q.query AS query,
            q.query_redacted AS query_redacted, q.escalated AS escalated, q.outcome AS outcome, q.cluster AS cluster,
            q.coverage AS coverage, q.coverage_band AS band, q.session_id AS session_id, e.scale AS scale,
            hex(arrayStringConcat(arrayMap(x -> char(toUInt8(toInt16(x) + 128)), e.embedding))) AS emb, e.request_id != '' AS has
     FROM ${r.t('requests')} AS q
     LEFT JOIN (
       SELECT request_id, scale, embedding FROM ${r.t('request_embeddings')}
       WHERE covered = 0 AND ${qe.sql} LIMIT 1 BY request_id
     ) AS e ON e.request_id = q.request_id
     WHERE q.covered = 0 AND ${q.sql}
     ORDER BY q.ts, q.request_id`,
    { ...qe.params, ...q.params },
  );
  const kept = raw.filter((x) => Number(x.has) === 1 && x.emb.length > 0);
  const dim = (kept[0]?.emb.length ?? 0) / 2;
  const vectors = new Float32Array(kept.length * dim);
  const qv = new Int16Array(dim);
  kept.forEach((x, i) => {
    const b = Buffer.from(x.emb, 'hex');
    for (let d = 0; d < dim; d++) qv[d] = b[d] - 128;
    dequantizeInto(x.scale, qv, vectors, i * dim);
  });
  return {
    rows: kept.map((x) => ({
      request_id: x.request_id,
      ts: Number(x.ts),
      agent: x.agent,
      query: x.query,
      query_redacted: Number(x.query_redacted) ? 1 : 0,
      escalated: Number(x.escalated) ? 1 : 0,
      outcome: x.outcome,
      cluster: Number(x.cluster),
      coverage: Number(x.coverage),
      band: Number(x.band),
      session_id: x.session_id,
    })),
    vectors,
    dim,
    missingEmbeddings: raw.length - kept.length,
  };
}

/** A turn's text as gap discovery keys it (src/gaps/discover.ts phrasingKey): lower case, whitespace collapsed; redacted: the stored hash. */
const TURN_KEY = `if(query_redacted = 1, query, trimBoth(replaceRegexpAll(lowerUTF8(query), '\\\\s+', ' ')))`;

export interface SessionEvidence {
  /**
   * per session (id ≠ '') with an uncovered request in the window: the coverage depth band of each
   * of its distinct covered turns (texts, retries once; src/coverage/bands.ts)
   */
  coveredTurns: { session: string; bands: number[] }[];
  /**
   * distinct turns of sessions (one per session and text) per coverage depth band, over every
   * request of the window that has a session id and a band: what a typical turn looks like
   */
  turnBands: number[];
}

/** sessions the typical turn's band profile is read from at most (about): a hash sample of whole sessions beyond */
export const TYPICAL_TURN_SESSIONS = 100_000;

/**
 * What the stored sessions say about the uncovered requests of a window: the covered turns of the
 * sessions that hold an uncovered request (their bands), and the band profile of all distinct
 * session turns. Requests without a session id take no part (both are then empty). The profile is
 * read from at most about `maxSessions` sessions (a sample of whole sessions by id hash beyond).
 */
export async function readSessionEvidence(r: StoreReader, w: Window, maxSessions = TYPICAL_TURN_SESSIONS): Promise<SessionEvidence> {
  const q = where(w);
  // the typical turn's profile from at most about TYPICAL_TURN_SESSIONS sessions: beyond, a sample
  // of whole sessions by the hash of their id (a profile of 9 shares needs no more, and a week at
  // a flood would otherwise group tens of millions of turns in memory)
  const [u] = await r.query<{ n: string }>(
    `SELECT uniq(session_id) AS n FROM ${r.t('requests')} WHERE ${q.sql} AND session_id != '' AND coverage_band >= 0`,
    q.params,
  );
  const mod = Math.max(1, Math.ceil(Number(u?.n ?? 0) / Math.max(1, maxSessions)));
  const [cov, tb] = await Promise.all([
    r.query<{ session: string; bands: number[] }>(
      `SELECT session, groupArray(turn_band) AS bands
       FROM (SELECT session_id AS session, ${TURN_KEY} AS turn_key, min(coverage_band) AS turn_band
             FROM ${r.t('requests')}
             WHERE ${q.sql} AND covered = 1 AND session_id != ''
               AND session_id IN (SELECT session_id FROM ${r.t('requests')} WHERE ${q.sql} AND covered = 0 AND session_id != '')
             GROUP BY session, turn_key)
       GROUP BY session`,
      q.params,
    ),
    r.query<{ band: number; turns: string }>(
      `SELECT turn_band AS band, count() AS turns
       FROM (SELECT session_id, ${TURN_KEY} AS turn_key, min(coverage_band) AS turn_band FROM ${r.t('requests')}
             WHERE ${q.sql} AND session_id != '' AND coverage_band >= 0 AND cityHash64(session_id) % {mod:UInt64} = 0
             GROUP BY session_id, turn_key)
       GROUP BY band ORDER BY band`,
      { ...q.params, mod: String(mod) },
    ),
  ]);
  const turnBands: number[] = [];
  for (const x of tb) turnBands[Number(x.band)] = Number(x.turns);
  return {
    coveredTurns: cov.map((x) => ({ session: x.session, bands: x.bands.map(Number) })),
    turnBands: Array.from(turnBands, (x) => x ?? 0),
  };
}

/** Eval cluster labels of a coverage model (or of every model, latest registration first). */
export async function clusterLabels(r: StoreReader, modelVersion?: string): Promise<Map<number, string>> {
  const rows = await r.query<{ cluster: number; label: string }>(
    `SELECT cluster, argMax(label, registered_at) AS label FROM ${r.t('coverage_clusters')}
     ${modelVersion ? 'WHERE model_version = {mv:String}' : ''} GROUP BY cluster`,
    modelVersion ? { mv: modelVersion } : {},
  );
  return new Map(rows.map((x) => [Number(x.cluster), x.label]));
}

/** Requests per eval cluster in the window, with that cluster's eval-set share. */
export async function clusterTraffic(r: StoreReader, w: Window & { modelVersion: string }) {
  const q = where(w, 'q');
  return (
    await r.query<{
      model_version: string;
      cluster: number;
      label: string;
      eval_share: number;
      requests: string;
      uncovered: string;
      escalated: string;
      bad: string;
    }>(
      `SELECT q.model_version AS model_version, q.cluster AS cluster, any(c.label) AS label, any(c.share) AS eval_share,
              count() AS requests, countIf(q.covered = 0) AS uncovered, countIf(q.escalated = 1) AS escalated,
              countIf(q.escalated = 1 OR q.outcome IN ('refused', 'failed')) AS bad
       FROM ${r.t('requests')} AS q
       LEFT JOIN (SELECT model_version, cluster, argMax(label, registered_at) AS label, argMax(share, registered_at) AS share
                  FROM ${r.t('coverage_clusters')} WHERE model_version = {modelVersion:String} GROUP BY model_version, cluster) AS c
         ON c.model_version = q.model_version AND c.cluster = q.cluster
       WHERE ${q.sql}
       GROUP BY model_version, cluster ORDER BY cluster`,
      q.params,
    )
  ).map((x) => ({
    model_version: x.model_version,
    cluster: Number(x.cluster),
    label: x.label,
    eval_share: Number(x.eval_share),
    requests: Number(x.requests),
    uncovered: Number(x.uncovered),
    escalated: Number(x.escalated),
    bad: Number(x.bad),
  }));
}

export interface StoredGapRef {
  gap_id: string;
  status: 'new' | 'open' | 'reopened' | 'closed';
  kind: 'topic' | 'thin';
  label: string;
  centroid: Float32Array;
}

/** The latest state of every gap of a scope seen since `fromDay` (YYYY-MM-DD). */
export async function previousGaps(r: StoreReader, scope: string, fromDay: string): Promise<StoredGapRef[]> {
  const rows = await r.query<{ gap_id: string; status: StoredGapRef['status']; kind: StoredGapRef['kind']; label: string; centroid: number[] }>(
    `SELECT gap_id, argMax(status, version) AS status, argMax(kind, version) AS kind, argMax(label, version) AS label, argMax(centroid, version) AS centroid
     FROM ${r.t('coverage_gaps')} WHERE scope = {scope:String} AND run_day >= {fromDay:Date}
     GROUP BY gap_id ORDER BY gap_id`,
    { scope, fromDay },
  );
  return rows.map((x) => ({ gap_id: x.gap_id, status: x.status, kind: x.kind === 'thin' ? 'thin' : 'topic', label: x.label, centroid: Float32Array.from(x.centroid) }));
}

/**
 * When the latest stored discovery of a scope was made (ms since the epoch; null: none stored, or
 * none that found a gap). Periodic discovery reads it to skip a round another instance just did.
 */
export async function latestDiscoveryAt(r: StoreReader, scope: string): Promise<number | null> {
  const rows = await r.query<{ at: string | null }>(
    `SELECT if(count() = 0, NULL, toUnixTimestamp64Milli(max(version))) AS at FROM ${r.t('coverage_gaps')} WHERE scope = {scope:String}`,
    { scope },
  );
  const at = rows[0]?.at;
  return at === null || at === undefined ? null : Number(at);
}

/** One row of {db}.coverage_gaps as read back. */
export interface GapRow {
  scope: string;
  run_day: string;
  gap_id: string;
  version: string;
  run_id: string;
  period_start: string;
  period_end: string;
  model_version: string;
  status: 'new' | 'open' | 'reopened' | 'closed';
  /** topic | thin (topic for gaps stored before migration 17) */
  kind: 'topic' | 'thin';
  rank: number;
  label: string;
  terms: string[];
  members: number;
  share: number;
  uncovered_share: number;
  escalation_rate: number;
  refusal_rate: number;
  failure_rate: number;
  bad_rate: number;
  first_seen: string;
  last_seen: string;
  trend: string;
  growth: number;
  nearest_cluster: number;
  nearest_cluster_label: string;
  examples: string[];
  example_ids: string[];
  redacted_share: number;
  cases_needed: number;
  priority: number;
  depth: number | null;
  deep_share: number | null;
  phrasings: number;
}

const GAP_COLUMNS = `scope, run_day, gap_id, version, run_id, period_start, period_end, model_version, status, kind, rank, label, terms,
  members, share, uncovered_share, escalation_rate, refusal_rate, failure_rate, bad_rate, first_seen, last_seen, trend, growth,
  nearest_cluster, nearest_cluster_label, examples, example_ids, redacted_share, cases_needed, priority, depth, deep_share, phrasings`;

function gapRow(x: GapRow): GapRow {
  return {
    ...x,
    rank: Number(x.rank),
    members: Number(x.members),
    nearest_cluster: Number(x.nearest_cluster),
    cases_needed: Number(x.cases_needed),
    depth: x.depth === null ? null : Number(x.depth),
    deep_share: x.deep_share === null ? null : Number(x.deep_share),
    phrasings: Number(x.phrasings),
  };
}

/** The gaps of the latest stored run of a scope ('' = all agents), open ones by rank, then closed ones. */
export async function readLatestGaps(r: StoreReader, scope: string): Promise<GapRow[]> {
  const rows = await r.query<GapRow>(
    `SELECT ${GAP_COLUMNS} FROM ${r.t('coverage_gaps')} FINAL
     WHERE scope = {scope:String} AND run_day = (SELECT max(run_day) FROM ${r.t('coverage_gaps')} WHERE scope = {scope:String})
     ORDER BY status = 'closed', kind = 'thin', rank, gap_id`,
    { scope },
  );
  return rows.map(gapRow);
}

/** A gap's history: one row per day it was (re)discovered in a scope, oldest first. */
export async function readGapHistory(r: StoreReader, scope: string, gapId: string): Promise<GapRow[]> {
  const rows = await r.query<GapRow>(
    `SELECT ${GAP_COLUMNS} FROM ${r.t('coverage_gaps')} FINAL WHERE scope = {scope:String} AND gap_id = {gapId:String} ORDER BY run_day`,
    { scope, gapId },
  );
  return rows.map(gapRow);
}

export interface GapMemberContext {
  request_id: string;
  gap_id: string;
  query: string;
  query_redacted: number;
  agent: string;
  outcome: string;
  escalated: number;
  ts: string;
}

/** Stored context (text, agent, outcome) of requests by id. */
/**
 * For requests deep in a conversation (a session id and turn > 1), the session's earlier user
 * messages in order (at most `max`, the latest kept; redacted ones left out, so the list is then
 * shorter than the turn says). Requests without a session or at turn ≤ 1 are absent.
 */
export async function earlierTurns(r: StoreReader, ids: string[], max = 20): Promise<Map<string, { turn: number; turns: string[] }>> {
  if (ids.length === 0) return new Map();
  const rows = await r.query<{ request_id: string; turn: number; turns: string[] }>(
    `SELECT t.request_id AS request_id, any(t.turn) AS turn,
            arraySlice(arrayMap(x -> x.2, arraySort(x -> x.1, groupArrayIf((e.ts, e.query), e.ts < t.ts AND e.query_redacted = 0))), -{max:UInt32}) AS turns
     FROM (SELECT request_id, any(session_id) AS session_id, any(turn) AS turn, any(ts) AS ts
           FROM ${r.t('requests')} WHERE request_id IN {ids:Array(String)} GROUP BY request_id) AS t
     INNER JOIN (SELECT session_id, ts, query, query_redacted FROM ${r.t('requests')}
                 WHERE session_id IN (SELECT session_id FROM ${r.t('requests')} WHERE request_id IN {ids:Array(String)} AND session_id != '')) AS e
       ON e.session_id = t.session_id
     WHERE t.session_id != '' AND t.turn > 1
     GROUP BY t.request_id`,
    { ids, max },
  );
  return new Map(rows.map((x) => [x.request_id, { turn: Number(x.turn), turns: x.turns }]));
}

export async function requestContext(r: StoreReader, ids: string[]): Promise<Map<string, Omit<GapMemberContext, 'gap_id'>>> {
  if (ids.length === 0) return new Map();
  const rows = await r.query<Omit<GapMemberContext, 'gap_id'>>(
    `SELECT request_id, any(query) AS query, any(query_redacted) AS query_redacted, any(agent) AS agent, any(outcome) AS outcome,
            any(escalated) AS escalated, toString(any(ts)) AS ts
     FROM ${r.t('requests')} WHERE request_id IN {ids:Array(String)} GROUP BY request_id`,
    { ids },
  );
  return new Map(rows.map((x) => [x.request_id, x]));
}
