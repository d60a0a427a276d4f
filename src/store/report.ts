/**
 * Read-side queries for `evalgap report` (src/report renders; this file only reads). Every value
 * is bound as a query parameter; the only interpolated identifiers are the store's table names.
 */
import type { Store } from './store.js';

/** ClickHouse DateTime parameter text ('YYYY-MM-DD hh:mm:ss', UTC). */
export const chTime = (d: Date): string => d.toISOString().slice(0, 19).replace('T', ' ');

export async function tableExists(store: Store, table: string): Promise<boolean> {
  const r = await store.query<{ n: string }>(
    `SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {name:String}`,
    { db: store.database, name: table },
  );
  return Number(r[0]?.n ?? 0) > 0;
}

export interface DataSpan {
  first: Date;
  last: Date;
  requests: number;
  uncovered: number;
  escalated: number;
  /** the model version that scored the latest row */
  latestModel: string;
  /** rows stored with redacted text */
  redacted: number;
}

/** The stored traffic since `since`: its time span, totals and latest model version; null when none. */
export async function dataSpan(store: Store, since: Date): Promise<DataSpan | null> {
  const [r] = await store.query<{ n: string; first: string; last: string; unc: string; esc: string; v: string; red: string }>(
    `SELECT count() AS n, min(ts) AS first, max(ts) AS last, countIf(covered = 0) AS unc, countIf(escalated = 1) AS esc,
            argMax(model_version, (ts, ingested_at)) AS v, countIf(query_redacted = 1) AS red
     FROM ${store.t('requests')} WHERE ts >= {since:DateTime64(3, 'UTC')}`,
    { since: chTime(since) },
  );
  if (!r || Number(r.n) === 0) return null;
  const d = (s: string) => new Date(s.replace(' ', 'T') + 'Z');
  return {
    first: d(r.first),
    last: d(r.last),
    requests: Number(r.n),
    uncovered: Number(r.unc),
    escalated: Number(r.esc),
    latestModel: r.v,
    redacted: Number(r.red),
  };
}

export interface SeriesPoint {
  t: string; // bucket start, 'YYYY-MM-DD hh:mm:ss' UTC
  model_version: string;
  requests: number;
  uncovered: number;
  escalated: number;
}

/**
 * Requests, uncovered and escalated per time bucket and model version. Buckets of 5 minutes or
 * more come from the 5-minute aggregates (coverage_5m); finer ones from the rows.
 */
export async function coverageSeries(store: Store, since: Date, stepSeconds: number): Promise<SeriesPoint[]> {
  const fromAggregates = stepSeconds >= 300 && stepSeconds % 300 === 0;
  const sql = fromAggregates
    ? `SELECT toString(toStartOfInterval(bucket, toIntervalSecond({step:UInt32}))) AS t, model_version,
              sum(requests) AS requests, sum(uncovered) AS uncovered, sum(escalated) AS escalated
       FROM ${store.t('coverage_5m')} WHERE bucket >= toStartOfFiveMinutes({since:DateTime('UTC')})
       GROUP BY t, model_version ORDER BY t, model_version`
    : `SELECT toString(toStartOfInterval(ts, toIntervalSecond({step:UInt32}))) AS t, model_version,
              count() AS requests, countIf(covered = 0) AS uncovered, countIf(escalated = 1) AS escalated
       FROM ${store.t('requests')} WHERE ts >= {since:DateTime64(3, 'UTC')}
       GROUP BY t, model_version ORDER BY t, model_version`;
  const rows = await store.query<{ t: string; model_version: string; requests: string; uncovered: string; escalated: string }>(sql, {
    step: stepSeconds,
    since: chTime(since),
  });
  return rows.map((r) => ({
    t: r.t.slice(0, 19),
    model_version: r.model_version,
    requests: Number(r.requests),
    uncovered: Number(r.uncovered),
    escalated: Number(r.escalated),
  }));
}

export interface ClusterTraffic {
  /** the eval cluster; -1 for uncovered traffic (whatever its nearest cluster) */
  cluster: number;
  label: string;
  eval_share: number;
  /** rows before `split` (the production reference) and from `split` on (recent) */
  reference: number;
  recent: number;
  escalated: number;
  requests: number;
}

/**
 * Production traffic of one model version per eval cluster (covered rows) and uncovered (-1),
 * split into a reference period and a recent one, with the cluster's share of the eval set.
 */
export async function clusterTraffic(store: Store, modelVersion: string, since: Date, split: Date): Promise<ClusterTraffic[]> {
  const rows = await store.query<{ cluster: number; label: string; eval_share: number; reference: string; recent: string; escalated: string; requests: string }>(
    `SELECT r.cluster AS cluster, if(r.cluster = -1, 'uncovered', c.label) AS label, if(r.cluster = -1, 0, c.share) AS eval_share,
            r.reference AS reference, r.recent AS recent, r.escalated AS escalated, r.requests AS requests
     FROM (
       SELECT if(covered = 1, cluster, -1) AS cluster, countIf(ts < {split:DateTime64(3, 'UTC')}) AS reference,
              countIf(ts >= {split:DateTime64(3, 'UTC')}) AS recent, countIf(escalated = 1) AS escalated, count() AS requests
       FROM ${store.t('requests')}
       WHERE model_version = {v:String} AND ts >= {since:DateTime64(3, 'UTC')}
       GROUP BY cluster
     ) AS r
     LEFT JOIN (SELECT cluster, any(label) AS label, any(share) AS share FROM ${store.t('coverage_clusters')}
                WHERE model_version = {v:String} GROUP BY cluster) AS c ON r.cluster = c.cluster
     ORDER BY requests DESC`,
    { v: modelVersion, since: chTime(since), split: chTime(split) },
  );
  return rows.map((r) => ({
    cluster: Number(r.cluster),
    label: r.label || `cluster ${r.cluster}`,
    eval_share: Number(r.eval_share),
    reference: Number(r.reference),
    recent: Number(r.recent),
    escalated: Number(r.escalated),
    requests: Number(r.requests),
  }));
}

export interface EvalClusterShare {
  cluster: number;
  label: string;
  share: number;
}

/** The registered clusters of a model version (also those production never reached). */
export async function evalClusters(store: Store, modelVersion: string): Promise<EvalClusterShare[]> {
  const rows = await store.query<{ cluster: number; label: string; share: number }>(
    `SELECT cluster, any(label) AS label, any(share) AS share FROM ${store.t('coverage_clusters')}
     WHERE model_version = {v:String} GROUP BY cluster ORDER BY cluster`,
    { v: modelVersion },
  );
  return rows.map((r) => ({ cluster: Number(r.cluster), label: r.label, share: Number(r.share) }));
}

export interface SampledQuery {
  query: string;
  covered: 0 | 1;
  cluster: number;
}

/** A deterministic sample (by request id hash) of stored queries with text (not redacted). */
export async function sampleQueries(store: Store, modelVersion: string, since: Date, n: number): Promise<SampledQuery[]> {
  const rows = await store.query<{ query: string; covered: number; cluster: number }>(
    `SELECT query, covered, cluster FROM ${store.t('requests')}
     WHERE model_version = {v:String} AND ts >= {since:DateTime64(3, 'UTC')} AND query_redacted = 0
     ORDER BY cityHash64(request_id) LIMIT {n:UInt32}`,
    { v: modelVersion, since: chTime(since), n },
  );
  return rows.map((r) => ({ query: r.query, covered: Number(r.covered) ? 1 : 0, cluster: Number(r.cluster) }));
}

export interface AlertsTable {
  exists: boolean;
  columns: string[];
  rows: Record<string, unknown>[];
}

/** The alerts table's columns the report shows, when the monitor's schema has them all. */
const ALERT_COLUMNS = ['created_at', 'kind', 'severity', 'rule', 'agent', 'summary', 'window_start', 'window_end', 'id'];

/**
 * The most recent alerts, when the monitor's `alerts` table exists: the columns above, newest
 * notification first; for another schema every column, ordered by its first DateTime column.
 */
export async function recentAlerts(store: Store, limit = 20): Promise<AlertsTable> {
  if (!(await tableExists(store, 'alerts'))) return { exists: false, columns: [], rows: [] };
  const cols = await store.query<{ name: string; type: string }>(
    `SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'alerts' ORDER BY position`,
    { db: store.database },
  );
  const names = new Set(cols.map((c) => c.name));
  if (ALERT_COLUMNS.every((c) => names.has(c))) {
    const rows = await store.query<Record<string, unknown>>(
      `SELECT ${ALERT_COLUMNS.join(', ')} FROM ${store.t('alerts')} ORDER BY created_at DESC, id LIMIT {limit:UInt32}`,
      { limit },
    );
    return { exists: true, columns: ALERT_COLUMNS, rows };
  }
  const time = cols.find((c) => /DateTime/.test(c.type))?.name;
  const safe = time && /^[A-Za-z_][A-Za-z0-9_]*$/.test(time) ? time : null;
  const rows = await store.query<Record<string, unknown>>(
    `SELECT * FROM ${store.t('alerts')} ${safe ? `ORDER BY ${safe} DESC` : ''} LIMIT {limit:UInt32}`,
    { limit },
  );
  return { exists: true, columns: cols.map((c) => c.name), rows };
}
