/**
 * The monitor's reads and writes: closed windows from coverage_5m, example queries from requests,
 * alerts, trends and the durable checkpoint. Values always bound as query parameters.
 * coverage_5m is a SummingMergeTree: rows of one key may not be merged yet, so every read sums.
 */
import { randomUUID } from 'node:crypto';
import { joinCheckpoint, partRefs, splitCheckpoint } from './checkpoint-parts.js';
import { BAND_COLUMNS, type Store } from './store.js';

/** One aggregate row of coverage_5m, already summed over its key. */
export interface BucketRow {
  bucket: string; // ISO-8601 UTC
  agent: string;
  model_version: string;
  cluster: number;
  requests: number;
  uncovered: number;
  escalated: number;
  refused: number;
  failed: number;
  /** escalated among the uncovered */
  uncovered_escalated: number;
  /** requests per coverage depth band (all 0 for rows of a model without bands) */
  bands: number[];
}

/** Per-day totals (for late rows: compared with what was already evaluated). */
export interface DayTotalRow extends Omit<BucketRow, 'bucket'> {
  day: string; // YYYY-MM-DD
}

/** One closed session's requests in one coverage cell (closedSessions). */
export interface ClosedSessionRow {
  agent: string;
  model_version: string;
  /** '' = requests without a session id */
  session: string;
  cluster: number;
  uncovered: boolean;
  band: number;
  requests: number;
  escalated: number;
  refused: number;
  failed: number;
  /** Σ over the clock hours of the whole session of its requests in the hour, squared (SessionCell.hourSq) */
  hourSq: number;
  /** ISO: last request + the idle gap */
  closedAt: string;
}

export interface AlertRow {
  id: string;
  webhook_id: string;
  kind: string;
  status: string;
  rule: string;
  agent: string;
  cluster: number | null;
  severity: string;
  onset: string;
  window_start: string;
  window_end: string;
  statistic: number;
  threshold: number;
  effect_name: string;
  effect: number;
  effect_lo: number;
  effect_hi: number;
  summary: string;
  clusters: string;
  sql: string;
  group_key: string;
  notified: 0 | 1;
  model_version: string;
  created_at: string;
}

export interface TrendInsertRow {
  window_start: string;
  window_end: string;
  rule: string;
  agent: string;
  cluster: number | null;
  model_version: string;
  share_now: number;
  share_reference: number;
  share_eval: number;
  escalation_rate: number;
  statistic: number;
  threshold: number;
}

export interface Checkpoint {
  seq: number;
  windowEnd: string;
  state: string;
}

export interface ClusterInfo {
  cluster: number;
  label: string;
  share: number;
}

/** ClickHouse DateTime parameter text from an ISO time (seconds precision, UTC). */
export function chTime(iso: string | Date): string {
  return new Date(iso).toISOString().slice(0, 19).replace('T', ' ');
}
const fromChTime = (s: string) => new Date(s.replace(' ', 'T') + (s.endsWith('Z') ? '' : 'Z')).toISOString();

type Raw = Record<string, string | number | null>;
const n = (v: unknown) => Number(v ?? 0);

function toBucket(r: Raw): BucketRow {
  return {
    bucket: fromChTime(String(r.bucket)),
    agent: String(r.agent),
    model_version: String(r.model_version),
    cluster: n(r.cluster),
    requests: n(r.requests),
    uncovered: n(r.uncovered),
    escalated: n(r.escalated),
    refused: n(r.refused),
    failed: n(r.failed),
    uncovered_escalated: n(r.uncovered_escalated),
    bands: BAND_COLUMNS.map((c) => n(r[c])),
  };
}

const SUMS = 'sum(requests) AS requests, sum(uncovered) AS uncovered, sum(escalated) AS escalated, sum(refused) AS refused, sum(failed) AS failed, sum(uncovered_escalated) AS uncovered_escalated, ' + BAND_COLUMNS.map((c) => `sum(${c}) AS ${c}`).join(', ');

export class MonitorStore {
  /** per monitor, the parts the checkpoint this instance last wrote or read references (id → text; all stored) */
  private readonly parts = new Map<string, Map<string, string>>();
  private readonly lastSaved = new Map<string, { seq: number; bytes: number; partBytes: number }>();

  constructor(readonly store: Store) {}

  get database(): string {
    return this.store.database;
  }

  /** Aggregates of the buckets in [from, to), summed per bucket, agent, model version and cluster. */
  async windowRows(from: string, to: string): Promise<BucketRow[]> {
    const rows = await this.store.query<Raw>(
      `SELECT bucket, agent, model_version, cluster, ${SUMS}
       FROM ${this.store.t('coverage_5m')}
       WHERE bucket >= {from:DateTime('UTC')} AND bucket < {to:DateTime('UTC')}
       GROUP BY bucket, agent, model_version, cluster
       ORDER BY bucket, agent, model_version, cluster`,
      { from: chTime(from), to: chTime(to) },
    );
    return rows.map(toBucket);
  }

  /** Per-day totals of the buckets in [from, to): what has been stored so far, late rows included. */
  async dayTotals(from: string, to: string): Promise<DayTotalRow[]> {
    const rows = await this.store.query<Raw>(
      `SELECT toString(toDate(bucket)) AS day, agent, model_version, cluster, ${SUMS}
       FROM ${this.store.t('coverage_5m')}
       WHERE bucket >= {from:DateTime('UTC')} AND bucket < {to:DateTime('UTC')}
       GROUP BY day, agent, model_version, cluster`,
      { from: chTime(from), to: chTime(to) },
    );
    return rows.map((r) => ({ ...toBucket({ ...r, bucket: '1970-01-01 00:00:00' }), day: String(r.day) }));
  }

  /** Distinct sessions per agent and model version among the requests of [from, to) (empty session ids not counted). */
  async sessions(from: string, to: string): Promise<{ agent: string; model_version: string; sessions: number }[]> {
    const rows = await this.store.query<Raw>(
      `SELECT agent, model_version, uniqExactIf(session_id, session_id != '') AS sessions FROM ${this.store.t('requests')}
       WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
       GROUP BY agent, model_version`,
      { from: chTime(from), to: chTime(to) },
    );
    return rows.map((r) => ({ agent: String(r.agent), model_version: String(r.model_version), sessions: n(r.sessions) }));
  }

  /** Distinct sessions per window (of `windowSeconds`, aligned to the epoch), agent and model version in [from, to). */
  async sessionsByWindow(from: string, to: string, windowSeconds: number): Promise<{ window: string; agent: string; model_version: string; sessions: number }[]> {
    const rows = await this.store.query<Raw>(
      `SELECT toStartOfInterval(ts, toIntervalSecond({w:UInt32}), 'UTC') AS window, agent, model_version,
              uniqExactIf(session_id, session_id != '') AS sessions
       FROM ${this.store.t('requests')}
       WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
       GROUP BY window, agent, model_version`,
      { from: chTime(from), to: chTime(to), w: windowSeconds },
    );
    return rows.map((r) => ({ window: fromChTime(String(r.window)), agent: String(r.agent), model_version: String(r.model_version), sessions: n(r.sessions) }));
  }

  /**
   * The sessions that closed in [from, to): their last request is `idleSeconds` before a time in
   * it (none after it so far), read whole over at most `maxSpanSeconds` before that. One row per
   * session and coverage cell, with the session's close time; plus the requests of [from, to)
   * without a session id (session '', each its own session). A session is (agent, session_id).
   */
  async closedSessions(from: string, to: string, idleSeconds: number, maxSpanSeconds = 4 * 3600): Promise<ClosedSessionRow[]> {
    const R = this.store.t('requests');
    const q = closedSessionsCte(R, from, to, idleSeconds, maxSpanSeconds);
    const rows = await this.store.query<Raw>(
      `${q.cte}
       SELECT r.agent AS agent, r.model_version AS model_version, r.session_id AS session_id, r.cluster AS cluster,
              r.covered AS covered, r.coverage_band AS band, count() AS requests, countIf(r.escalated = 1) AS escalated,
              countIf(r.outcome = 'refused') AS refused, countIf(r.outcome = 'failed') AS failed,
              toUnixTimestamp64Milli(any(s.last)) AS last_ms, any(s.hour_sq) AS hour_sq
       FROM ${R} AS r INNER JOIN s ON r.agent = s.agent AND r.session_id = s.session_id
       WHERE r.ts >= {lo:DateTime64(3, 'UTC')} AND r.ts < {b:DateTime64(3, 'UTC')}
       GROUP BY agent, model_version, session_id, cluster, covered, band
       UNION ALL
       SELECT agent, model_version, '' AS session_id, cluster, covered, coverage_band AS band, count() AS requests,
              countIf(escalated = 1) AS escalated, countIf(outcome = 'refused') AS refused, countIf(outcome = 'failed') AS failed,
              toUnixTimestamp64Milli(max(ts)) - {idle:Int64} * 1000 AS last_ms, count() AS hour_sq
       FROM (SELECT * FROM ${R} WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')} AND session_id = '')
       GROUP BY agent, model_version, cluster, covered, band`,
      q.params,
    );
    return rows.map((r) => ({
      agent: String(r.agent),
      model_version: String(r.model_version),
      session: String(r.session_id),
      cluster: n(r.cluster),
      uncovered: n(r.covered) === 0,
      band: n(r.band),
      requests: n(r.requests),
      escalated: n(r.escalated),
      refused: n(r.refused),
      failed: n(r.failed),
      hourSq: n(r.hour_sq),
      closedAt: new Date(n(r.last_ms) + idleSeconds * 1000).toISOString(),
    }));
  }

  /** The first bucket at or after `from` that holds rows, or null. */
  async nextBucket(from: string): Promise<string | null> {
    const [r] = await this.store.query<{ b: string; n: string }>(
      `SELECT min(bucket) AS b, count() AS n FROM ${this.store.t('coverage_5m')} WHERE bucket >= {from:DateTime('UTC')}`,
      { from: chTime(from) },
    );
    return r && Number(r.n) > 0 ? fromChTime(r.b) : null;
  }

  /** The most frequent queries of a cluster in [from, to) (hashes when the text was redacted). */
  async examples(q: { from: string; to: string; cluster: number; agent: string; modelVersion: string; uncoveredOnly: boolean; limit: number }): Promise<string[]> {
    if (q.limit <= 0) return [];
    const rows = await this.store.query<{ query: string }>(
      `SELECT query, count() AS n FROM ${this.store.t('requests')}
       WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
         AND cluster = {cluster:Int32} AND model_version = {mv:String}
         AND ({agent:String} = '*' OR agent = {agent:String})
         AND (NOT {unc:Bool} OR covered = 0)
       GROUP BY query ORDER BY n DESC, query LIMIT {limit:UInt32}`,
      { from: chTime(q.from), to: chTime(q.to), cluster: q.cluster, mv: q.modelVersion, agent: q.agent, unc: q.uncoveredOnly, limit: q.limit },
    );
    return rows.map((r) => r.query);
  }

  async clusters(modelVersion: string): Promise<ClusterInfo[]> {
    const rows = await this.store.query<{ cluster: number; label: string; share: number }>(
      `SELECT cluster, label, share FROM ${this.store.t('coverage_clusters')} FINAL WHERE model_version = {mv:String} ORDER BY cluster`,
      { mv: modelVersion },
    );
    return rows.map((r) => ({ cluster: n(r.cluster), label: r.label, share: n(r.share) }));
  }

  /** Production requests per cluster in [from, to) for one model version. */
  async productionByCluster(from: string, to: string, modelVersion: string): Promise<{ cluster: number; requests: number; uncovered: number }[]> {
    const rows = await this.store.query<Raw>(
      `SELECT cluster, sum(requests) AS requests, sum(uncovered) AS uncovered FROM ${this.store.t('coverage_5m')}
       WHERE bucket >= {from:DateTime('UTC')} AND bucket < {to:DateTime('UTC')} AND model_version = {mv:String}
       GROUP BY cluster ORDER BY cluster`,
      { from: chTime(from), to: chTime(to), mv: modelVersion },
    );
    return rows.map((r) => ({ cluster: n(r.cluster), requests: n(r.requests), uncovered: n(r.uncovered) }));
  }

  /** Insert alert state changes; a retry with the same token is a no-op (and ReplacingMergeTree collapses repeats). */
  async insertAlerts(rows: AlertRow[], token: string): Promise<void> {
    if (rows.length === 0) return;
    await this.store.client.insert({
      table: this.store.t('alerts'),
      values: rows.map((r) => ({ ...r, onset: chTime(r.onset), window_start: chTime(r.window_start), window_end: chTime(r.window_end) })),
      format: 'JSONEachRow',
      clickhouse_settings: { insert_deduplication_token: token },
    });
  }

  async insertTrends(rows: TrendInsertRow[], token: string): Promise<void> {
    if (rows.length === 0) return;
    await this.store.client.insert({
      table: this.store.t('monitor_trends'),
      values: rows.map((r) => ({ ...r, window_start: chTime(r.window_start), window_end: chTime(r.window_end) })),
      format: 'JSONEachRow',
      clickhouse_settings: { insert_deduplication_token: token },
    });
  }

  /** The latest alert state of every alert whose last state is firing. */
  async firingAlerts(): Promise<AlertRow[]> {
    const rows = await this.store.query<AlertRow>(
      `SELECT * FROM ${this.store.t('alerts')} FINAL
       WHERE (id, created_at) IN (SELECT id, max(created_at) FROM ${this.store.t('alerts')} GROUP BY id)
         AND status = 'firing'
       ORDER BY onset`,
    );
    return rows;
  }

  async alerts(q: { since?: string } = {}): Promise<AlertRow[]> {
    return this.store.query<AlertRow>(
      `SELECT * FROM ${this.store.t('alerts')} FINAL WHERE created_at >= {since:DateTime64(3, 'UTC')} ORDER BY created_at, webhook_id`,
      { since: chTime(q.since ?? '1970-01-01T00:00:00Z') },
    );
  }

  /**
   * The latest checkpoint of a monitor (election group), its reference histories joined back in
   * (src/store/checkpoint-parts.ts): the JSON text exactly as it was saved. The parts this instance
   * last wrote or read are not read again (their ids are checked to be stored).
   */
  async loadCheckpoint(monitor: string): Promise<Checkpoint | null> {
    const [r] = await this.store.query<{ seq: string; window_end: string; state: string }>(
      `SELECT seq, window_end, state FROM ${this.store.t('monitor_checkpoints')}
       WHERE monitor = {m:String} ORDER BY seq DESC LIMIT 1`,
      { m: monitor },
    );
    if (!r) return null;
    const refs = partRefs(r.state);
    const cached = this.parts.get(monitor) ?? new Map<string, string>();
    const bodies = new Map<string, string>();
    if (refs.length) {
      const prefix = partKey(monitor, '').length;
      const stored = await this.store.query<{ monitor: string }>(
        `SELECT DISTINCT monitor FROM ${this.store.t('monitor_checkpoints')} WHERE monitor IN {keys:Array(String)}`,
        { keys: refs.map((id) => partKey(monitor, id)) },
      );
      for (const x of stored) {
        const id = x.monitor.slice(prefix);
        const body = cached.get(id);
        if (body !== undefined) bodies.set(id, body);
      }
      const missing = stored.map((x) => x.monitor.slice(prefix)).filter((id) => !bodies.has(id));
      if (missing.length) {
        const rows = await this.store.query<{ monitor: string; state: string }>(
          `SELECT monitor, any(state) AS state FROM ${this.store.t('monitor_checkpoints')}
           WHERE monitor IN {keys:Array(String)} GROUP BY monitor`,
          { keys: missing.map((id) => partKey(monitor, id)) },
        );
        for (const x of rows) bodies.set(x.monitor.slice(prefix), x.state);
      }
    }
    const state = joinCheckpoint(r.state, bodies);
    this.parts.set(monitor, bodies);
    return { seq: Number(r.seq), windowEnd: fromChTime(r.window_end), state };
  }

  /** The seq of a monitor's latest checkpoint (0: none), without reading its state or parts. */
  async checkpointSeq(monitor: string): Promise<number> {
    const [r] = await this.store.query<{ seq: string }>(
      `SELECT max(seq) AS seq FROM ${this.store.t('monitor_checkpoints')} WHERE monitor = {m:String}`,
      { m: monitor },
    );
    return Number(r?.seq ?? 0);
  }

  /**
   * Saves a window's checkpoint: the reference histories that are not stored yet first (one row
   * each, keyed by their content), then the checkpoint row with references to them. Parts no longer
   * referenced by the latest durable checkpoint are deleted (dropUnreferencedParts).
   */
  async saveCheckpoint(monitor: string, c: Checkpoint): Promise<void> {
    const { skeleton, parts } = splitCheckpoint(c.state);
    const known = this.parts.get(monitor) ?? new Map<string, string>();
    const fresh = parts.filter((p) => !known.has(p.id));
    if (fresh.length) {
      await this.store.client.insert({
        table: this.store.t('monitor_checkpoints'),
        values: fresh.map((p) => ({ monitor: partKey(monitor, p.id), seq: c.seq, window_end: chTime(c.windowEnd), state: p.body })),
        format: 'JSONEachRow',
        // (a part deleted and needed again later must not be taken for a duplicate insert; seq: the first checkpoint to reference it)
        clickhouse_settings: { insert_deduplication_token: `${monitor}:parts:${c.seq}:${randomUUID()}` },
      });
    }
    await this.store.client.insert({
      table: this.store.t('monitor_checkpoints'),
      values: [{ monitor, seq: c.seq, window_end: chTime(c.windowEnd), state: skeleton }],
      format: 'JSONEachRow',
      clickhouse_settings: { insert_deduplication_token: `${monitor}:${c.seq}` },
    });
    // the parts this checkpoint references, all stored now
    this.parts.set(monitor, new Map(parts.map((p) => [p.id, p.body])));
    this.lastSaved.set(monitor, { seq: c.seq, bytes: Buffer.byteLength(skeleton), partBytes: fresh.reduce((a, p) => a + Buffer.byteLength(p.body), 0) });
    if (fresh.length) await this.dropUnreferencedParts(monitor);
  }

  /** What the last saveCheckpoint of a monitor wrote: the checkpoint row's JSON bytes and the new parts' */
  lastCheckpointWrite(monitor: string): { seq: number; bytes: number; partBytes: number } | null {
    return this.lastSaved.get(monitor) ?? null;
  }

  /**
   * Deletes the parts of a monitor that the latest durable checkpoint does not reference and that
   * were first written by a checkpoint at least PART_GRACE_SEQ checkpoints before it (a leader that
   * took over meanwhile saves checkpoints referencing what it loaded or wrote since).
   */
  async dropUnreferencedParts(monitor: string): Promise<void> {
    const [r] = await this.store.query<{ seq: string; state: string }>(
      `SELECT seq, state FROM ${this.store.t('monitor_checkpoints')} WHERE monitor = {m:String} ORDER BY seq DESC LIMIT 1`,
      { m: monitor },
    );
    if (!r || Number(r.seq) <= PART_GRACE_SEQ) return;
    const keep = partRefs(r.state).map((id) => partKey(monitor, id));
    // (a latest checkpoint without references was not written by this release: leave the parts alone)
    if (!keep.length) return;
    await this.store.client.command({
      query: `DELETE FROM ${this.store.t('monitor_checkpoints')}
              WHERE startsWith(monitor, {prefix:String}) AND monitor NOT IN {keep:Array(String)} AND seq < {before:UInt64}`,
      query_params: { prefix: partKey(monitor, ''), keep, before: String(Number(r.seq) - PART_GRACE_SEQ) },
    });
  }
}

/**
 * a part the latest checkpoint does not reference is deleted only when first written at least this
 * many checkpoints (windows: half an hour at 30 s) before it: what another leader wrote meanwhile stays
 */
export const PART_GRACE_SEQ = 60;

/**
 * The row key of a checkpoint part: beside the monitor's own row in monitor_checkpoints (seq 0),
 * never read as a checkpoint (those are read by their exact election group name).
 */
const partKey = (monitor: string, id: string) => `${monitor}/checkpoint-part/${id}`;

/** SQL literal for display text only (never executed by evalgap). */
function displayLiteral(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * The SQL a person pastes to see the stored requests behind an alert (display text: evalgap never
 * runs it). Times are ClickHouse DateTime64 literals ('YYYY-MM-DD hh:mm:ss.sss', UTC).
 */
export function requestsSql(
  database: string,
  q: { from: string; to: string; modelVersion: string; agent: string | null; cluster: number | null; uncoveredOnly: boolean; escalatedOnly: boolean },
): string {
  const where = [`ts >= ${displayLiteral(q.from)}`, `ts < ${displayLiteral(q.to)}`, `model_version = ${displayLiteral(q.modelVersion)}`];
  if (q.agent !== null) where.push(`agent = ${displayLiteral(q.agent)}`);
  if (q.cluster !== null) where.push(`cluster = ${q.cluster}`);
  if (q.uncoveredOnly) where.push('covered = 0');
  if (q.escalatedOnly) where.push("(escalated = 1 OR outcome IN ('refused', 'failed'))");
  return `SELECT ts, agent, cluster, covered, coverage, escalated, outcome, query FROM ${database}.requests WHERE ${where.join(' AND ')} ORDER BY ts LIMIT 100`;
}

/**
 * The sessions that closed in [from, to) (last request `idleSeconds` before a time in it, none
 * after it so far, read whole over at most `maxSpanSeconds` before that): the CTE `s` (agent,
 * session_id, last, hour_sq: Σ over the session's clock hours of its requests in the hour, squared)
 * and the parameters every closed-session reader binds: lo (the earliest request
 * read), a and b (the last request's range), from and to, idle (seconds).
 */
export function closedSessionsCte(R: string, from: string, to: string, idleSeconds: number, maxSpanSeconds: number) {
  const f = Date.parse(from);
  const t = Date.parse(to);
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    cte: `WITH s AS (
         SELECT agent, session_id, max(hour_last) AS last, sum(hour_n * hour_n) AS hour_sq FROM (
           SELECT agent, session_id, toStartOfHour(ts) AS hour, max(ts) AS hour_last, count() AS hour_n FROM ${R}
           WHERE ts >= {lo:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')} AND session_id != ''
           GROUP BY agent, session_id, hour
         )
         GROUP BY agent, session_id
         HAVING last >= {a:DateTime64(3, 'UTC')} AND last < {b:DateTime64(3, 'UTC')}
       )`,
    params: {
      lo: chTime(iso(f - (idleSeconds + maxSpanSeconds) * 1000)),
      a: chTime(iso(f - idleSeconds * 1000)),
      b: chTime(iso(t - idleSeconds * 1000)),
      from: chTime(from),
      to: chTime(to),
      idle: idleSeconds,
    },
  };
}
