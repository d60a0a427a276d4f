/**
 * The storage edge: applies migrations, writes assigned request rows, answers queries.
 * Values are always bound as query parameters; only validated identifiers are interpolated.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import { randomUUID } from 'node:crypto';
import type { Config } from '../config/index.js';
import { createStoreClient, type StoreKind } from './client.js';
import { BANDS } from '../coverage/bands.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import type { EmbeddingRow } from './embeddings.js';

/** One row of {db}.requests, as inserted (JSONEachRow). */
export interface RequestRow {
  request_id: string;
  ts: string; // ISO-8601 UTC
  agent: string;
  /** the agent or prompt version of the message ('' when absent; migration 14) */
  version?: string;
  session_id: string;
  turn: number;
  query: string;
  query_redacted: 0 | 1;
  truncated: 0 | 1;
  cluster: number;
  similarity: number;
  /** second most similar eval cluster and its similarity (columns added by migration 5) */
  runner_up?: number;
  runner_up_similarity?: number;
  coverage: number;
  covered: 0 | 1;
  /** coverage depth band 0…BANDS-1; -1 when the model has no bands (migration 12) */
  coverage_band?: number;
  escalated: 0 | 1;
  outcome: string;
  latency_ms: number | null;
  cost_usd: number | null;
  tools: string[];
  metadata: string;
  model_version: string;
  kafka_topic: string;
  kafka_partition: number;
  kafka_offset: string; // UInt64 as a decimal string
  /** 1 when lone surrogates were replaced by U+FFFD (migration 2) */
  repaired?: 0 | 1;
}

/** One row of {db}.coverage_5m as inserted. */
export interface CoverageAggRow {
  bucket: string;
  agent: string;
  model_version: string;
  /** the agent or prompt version (migration 14; part of the key) */
  version: string;
  cluster: number;
  requests: number;
  uncovered: number;
  uncovered_escalated: number;
  escalated: number;
  refused: number;
  failed: number;
  truncated: number;
  latency_ms_sum: number;
  cost_usd_sum: number;
  /** requests per coverage depth band (band0 … band8; migration 12) */
  [band: `band${number}`]: number;
}

/** band0, band1, … band8: the per-band count columns of coverage_5m */
export const BAND_COLUMNS = Array.from({ length: BANDS }, (_, b) => `band${b}` as const);

/**
 * Length of the aggregate buckets of `coverage_5m` (seconds). The table kept its name from when
 * buckets were 5 minutes; since then rows are written in 30-second buckets so the monitor can
 * evaluate 30-second windows. Older 5-minute rows stay valid: every reader sums over ranges.
 */
export const BUCKET_SECONDS = 30;
const BUCKET_MS = BUCKET_SECONDS * 1000;

/** The 30-second aggregates of some rows, exactly as the repair query computes them from raw rows. */
export function aggregateRows(rows: readonly RequestRow[]): CoverageAggRow[] {
  const out = new Map<string, CoverageAggRow>();
  for (const r of rows) {
    const ms = Date.parse(r.ts);
    const bucket = new Date(ms - (((ms % BUCKET_MS) + BUCKET_MS) % BUCKET_MS)).toISOString().slice(0, 19).replace('T', ' ');
    const key = JSON.stringify([bucket, r.agent, r.model_version, r.version ?? '', r.cluster]);
    let a = out.get(key);
    if (!a) {
      a = { bucket, agent: r.agent, model_version: r.model_version, version: r.version ?? '', cluster: r.cluster, requests: 0, uncovered: 0, uncovered_escalated: 0, escalated: 0, refused: 0, failed: 0, truncated: 0, latency_ms_sum: 0, cost_usd_sum: 0 };
      for (const c of BAND_COLUMNS) a[c] = 0;
      out.set(key, a);
    }
    const band = r.coverage_band ?? -1;
    if (band >= 0 && band < BANDS) a[`band${band}`] += 1;
    a.requests++;
    a.uncovered += r.covered === 0 ? 1 : 0;
    a.uncovered_escalated += r.covered === 0 && r.escalated === 1 ? 1 : 0;
    a.escalated += r.escalated === 1 ? 1 : 0;
    a.refused += r.outcome === 'refused' ? 1 : 0;
    a.failed += r.outcome === 'failed' ? 1 : 0;
    a.truncated += r.truncated === 1 ? 1 : 0;
    a.latency_ms_sum += r.latency_ms ?? 0;
    a.cost_usd_sum += r.cost_usd ?? 0;
  }
  return [...out.values()];
}

/**
 * ClickHouse exception codes that mean the data of an insert is bad (a retry cannot help), as
 * opposed to an outage: the rows are isolated and dead-lettered instead of retried.
 */
const DATA_ERROR_CODES = new Set([
  6, // CANNOT_PARSE_TEXT
  25, // CANNOT_PARSE_ESCAPE_SEQUENCE (e.g. a lone surrogate)
  26, // CANNOT_PARSE_QUOTED_STRING
  27, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  32, // ATTEMPT_TO_READ_AFTER_EOF
  33, // CANNOT_READ_ALL_DATA
  38, // CANNOT_PARSE_DATE
  41, // CANNOT_PARSE_DATETIME
  53, // TYPE_MISMATCH
  69, // ARGUMENT_OUT_OF_BOUND
  70, // CANNOT_CONVERT_TYPE
  72, // CANNOT_PARSE_NUMBER
  117, // INCORRECT_DATA
  131, // TOO_LARGE_STRING_SIZE
  321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
  349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
  407, // DECIMAL_OVERFLOW
]);

/** The error's ClickHouse code and name when it is a data error, else null (an outage: retry). */
export function dataError(e: unknown): { code: number; type: string } | null {
  const code = Number((e as { code?: unknown })?.code);
  if (!Number.isInteger(code) || !DATA_ERROR_CODES.has(code)) return null;
  return { code, type: String((e as { type?: unknown }).type ?? 'DATA_ERROR') };
}

export interface IngestProgress {
  /** highest offset whose raw rows are complete, -1 when none */
  raw: bigint;
  /** highest offset whose aggregates are complete, -1 when none */
  agg: bigint;
}

export interface ClusterRow {
  model_version: string;
  cluster: number;
  label: string;
  size: number;
  share: number;
  examples: string[];
}

const ONE_BLOCK = { max_insert_block_size: '10000000', min_insert_block_size_rows: '0', min_insert_block_size_bytes: '0' } as const;

/** The deduplication token of the aggregates of the offsets (from, to]: the same for the insert and its repair. */
export function aggToken(topic: string, partition: number, from: bigint, to: bigint): string {
  return `agg:${topic}:${partition}:${from}:${to}`;
}

/** The ClickHouse server (or the embedded engine) did not answer when the store was opened. */
export class StoreUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

export class Store {
  private constructor(
    readonly client: ClickHouseClient,
    readonly kind: StoreKind,
    readonly location: string,
    readonly database: string,
    private readonly retentionDays: number,
  ) {}

  static async open(cfg: Config['clickhouse'], opts: { migrate?: boolean } = {}): Promise<Store> {
    const sc = await createStoreClient(cfg);
    const store = new Store(sc.client, sc.kind, sc.location, cfg.database, cfg.retentionDays);
    const ping = await sc.client.ping();
    if (!ping.success) {
      await sc.client.close();
      throw new StoreUnavailableError(`ClickHouse at ${sc.location} did not answer: ${String(ping.error?.message ?? ping.error)}`);
    }
    if (opts.migrate !== false) await store.migrate();
    return store;
  }

  /** Fully qualified table name. */
  t(table: string): string {
    return `${this.database}.${table}`;
  }

  private render(sql: string): string {
    return sql.replaceAll('{db}', this.database).replaceAll('{retention}', String(this.retentionDays));
  }

  async migrate(migrations: Migration[] = MIGRATIONS): Promise<number[]> {
    await this.client.command({ query: `CREATE DATABASE IF NOT EXISTS ${this.database}` });
    await this.client.command({
      query: `CREATE TABLE IF NOT EXISTS ${this.t('schema_migrations')}
              (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now())
              ENGINE = ReplacingMergeTree ORDER BY version`,
    });
    const done = new Set(
      (await this.query<{ version: number }>(`SELECT DISTINCT version FROM ${this.t('schema_migrations')}`)).map((r) =>
        Number(r.version),
      ),
    );
    const applied: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      for (const s of m.statements) await this.client.command({ query: this.render(s) });
      await this.client.insert({
        table: this.t('schema_migrations'),
        values: [{ version: m.version, name: m.name }],
        format: 'JSONEachRow',
      });
      applied.push(m.version);
    }
    await this.applyRetention();
    return applied;
  }

  /** Make the TTL of the tables match the configured retention (it may change after creation). */
  private async applyRetention(): Promise<void> {
    const ttl: Record<string, string> = {
      // clamped: toDateTime(ts) wraps after 2106-02-07 (a 2299 row got a 2027 expiry)
      requests: `toDateTime(least(ts, toDateTime64('2105-12-31 23:59:59', 3, 'UTC'))) + toIntervalDay(${this.retentionDays})`,
      coverage_5m: `bucket + toIntervalDay(${this.retentionDays})`,
      request_embeddings: `toDateTime(least(ts, toDateTime64('2105-12-31 23:59:59', 3, 'UTC'))) + toIntervalDay(${this.retentionDays})`,
    };
    const rows = await this.query<{ name: string; q: string }>(
      `SELECT name, create_table_query AS q FROM system.tables WHERE database = {db:String} AND name IN ('requests', 'coverage_5m', 'request_embeddings')`,
      { db: this.database },
    );
    for (const r of rows) {
      const sameDays = r.q.includes(`toIntervalDay(${this.retentionDays})`) || r.q.includes(`INTERVAL ${this.retentionDays} DAY`);
      if (sameDays && (r.name !== 'requests' || r.q.includes('least('))) continue;
      await this.client.command({
        query: `ALTER TABLE ${this.t(r.name)} MODIFY TTL ${ttl[r.name]}`,
        clickhouse_settings: { materialize_ttl_after_modify: 0 },
      });
    }
  }

  async schemaVersion(): Promise<number> {
    const r = await this.query<{ v: number }>(`SELECT max(version) AS v FROM ${this.t('schema_migrations')}`);
    return Number(r[0]?.v ?? 0);
  }

  async query<T>(sql: string, params: Record<string, unknown> = {}): Promise<T[]> {
    const rs = await this.client.query({ query: sql, query_params: params, format: 'JSONEachRow' });
    return rs.json<T>();
  }

  /**
   * Insert rows as one block. `dedupToken` makes a retry of the very same insert a no-op,
   * in the table and in the aggregates' materialized view alike.
   */
  async insertRequests(rows: RequestRow[], dedupToken?: string): Promise<void> {
    if (rows.length === 0) return;
    await this.client.insert({
      table: this.t('requests'),
      values: rows,
      format: 'JSONEachRow',
      clickhouse_settings: {
        ...(dedupToken ? { insert_deduplication_token: dedupToken } : {}),
        ...ONE_BLOCK,
        // one insert per batch may span every day of the retention (a part per day)
        max_partitions_per_insert_block: String(Math.max(100, this.retentionDays + 2)),
      },
    });
  }

  /** Insert aggregate rows as one block; the token makes a repeat (or the repair) a no-op. */
  async insertAggregates(rows: CoverageAggRow[], dedupToken: string): Promise<void> {
    if (rows.length === 0) return;
    await this.client.insert({
      table: this.t('coverage_5m'),
      values: rows,
      format: 'JSONEachRow',
      clickhouse_settings: { insert_deduplication_token: dedupToken, ...ONE_BLOCK, max_partitions_per_insert_block: '0' },
    });
  }

  async progress(topic: string, partition: number): Promise<IngestProgress> {
    const r = await this.query<{ raw: string; agg: string }>(
      `SELECT toString(maxIf(offset, stage = 'raw')) AS raw, toString(maxIf(offset, stage = 'agg')) AS agg,
              countIf(stage = 'raw') AS nr, countIf(stage = 'agg') AS na
       FROM ${this.t('ingest_progress')} WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32}`,
      { topic, partition },
    );
    const row = r[0] as { raw: string; agg: string; nr?: string; na?: string } | undefined;
    return {
      raw: row && Number(row.nr) > 0 ? BigInt(row.raw) : -1n,
      agg: row && Number(row.na) > 0 ? BigInt(row.agg) : -1n,
    };
  }

  async setProgress(topic: string, partition: number, stage: 'raw' | 'agg', offset: bigint): Promise<void> {
    await this.client.insert({
      table: this.t('ingest_progress'),
      values: [{ kafka_topic: topic, kafka_partition: partition, stage, offset: offset.toString() }],
      format: 'JSONEachRow',
    });
  }

  /**
   * Make a partition consistent before consuming it (after a crash or a rebalance): raw rows above
   * the 'raw' mark are an unfinished insert and are deleted (their messages are consumed again);
   * aggregates missing between 'agg' and 'raw' are computed from the raw rows and inserted with the
   * very token the interrupted insert had, so whatever part of it landed is not counted twice.
   * Returns the progress after repair: messages at or below `raw` are already stored.
   */
  async repairPartition(topic: string, partition: number): Promise<IngestProgress & { deleted: number; aggregated: boolean }> {
    const p = await this.progress(topic, partition);
    let deleted = 0;
    const from = (p.raw + 1n).toString();
    const [above] = await this.query<{ n: string }>(
      `SELECT count() AS n FROM ${this.t('requests')}
       WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32} AND kafka_offset >= {from:UInt64}`,
      { topic, partition, from },
    );
    if (Number(above?.n ?? 0) > 0) {
      deleted = Number(above.n);
      await this.client.command({
        query: `DELETE FROM ${this.t('requests')}
                WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32} AND kafka_offset >= {from:UInt64}`,
        query_params: { topic, partition, from },
      });
    }
    // kept embeddings of that unfinished insert go with it (they are written again on redelivery)
    const [embAbove] = await this.query<{ n: string }>(
      `SELECT count() AS n FROM ${this.t('request_embeddings')}
       WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32} AND kafka_offset >= {from:UInt64}`,
      { topic, partition, from },
    );
    if (Number(embAbove?.n ?? 0) > 0) {
      await this.client.command({
        query: `DELETE FROM ${this.t('request_embeddings')}
                WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32} AND kafka_offset >= {from:UInt64}`,
        query_params: { topic, partition, from },
      });
    }
    let aggregated = false;
    if (p.agg < p.raw) {
      await this.client.command({
        query: `INSERT INTO ${this.t('coverage_5m')}
                  (bucket, agent, model_version, version, cluster, requests, uncovered, uncovered_escalated, escalated, refused, failed, truncated, latency_ms_sum, cost_usd_sum, ${BAND_COLUMNS.join(', ')})
                SELECT toStartOfInterval(ts, toIntervalSecond({bucketSeconds:UInt32}), 'UTC') AS bucket, agent, model_version, version, cluster,
                       count(), countIf(covered = 0), countIf(covered = 0 AND escalated = 1), countIf(escalated = 1), countIf(outcome = 'refused'),
                       countIf(outcome = 'failed'), countIf(truncated = 1), sum(ifNull(latency_ms, 0)), sum(ifNull(cost_usd, 0)),
                       ${BAND_COLUMNS.map((_, b) => `countIf(coverage_band = ${b})`).join(', ')}
                FROM ${this.t('requests')}
                WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32}
                  AND kafka_offset >= {lo:UInt64} AND kafka_offset <= {hi:UInt64}
                GROUP BY bucket, agent, model_version, version, cluster
                ORDER BY bucket, agent, model_version, version, cluster`,
        query_params: { topic, partition, lo: (p.agg + 1n).toString(), hi: p.raw.toString(), bucketSeconds: BUCKET_SECONDS },
        clickhouse_settings: { insert_deduplication_token: aggToken(topic, partition, p.agg, p.raw), ...ONE_BLOCK, max_partitions_per_insert_block: '0' },
      });
      await this.setProgress(topic, partition, 'agg', p.raw);
      aggregated = true;
    }
    return { raw: p.raw, agg: p.raw, deleted, aggregated };
  }

  /**
   * Insert the kept embeddings of a batch, with the same deduplication token as its requests
   * insert. Called BEFORE that insert: the stored-offset watermark is read from requests, so a
   * crash in between redelivers the batch and the embeddings are written again (deduplicated by
   * the token, or by the table's ReplacingMergeTree key and readers' LIMIT 1 BY request_id).
   */
  async insertEmbeddings(rows: EmbeddingRow[], dedupToken?: string): Promise<void> {
    if (rows.length === 0) return;
    await this.client.insert({
      table: this.t('request_embeddings'),
      values: rows,
      format: 'JSONEachRow',
      clickhouse_settings: {
        ...(dedupToken ? { insert_deduplication_token: dedupToken } : {}),
        max_insert_block_size: '10000000',
        min_insert_block_size_rows: '0',
        min_insert_block_size_bytes: '0',
      },
    });
  }

  /** The highest Kafka offset stored for a topic partition, or -1 when none is. */
  async storedHighWatermark(topic: string, partition: number): Promise<bigint> {
    const r = await this.query<{ n: string; o: string }>(
      `SELECT count() AS n, max(kafka_offset) AS o FROM ${this.t('requests')}
       WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32}`,
      { topic, partition },
    );
    return r[0] && BigInt(r[0].n) > 0n ? BigInt(r[0].o) : -1n;
  }

  /** Insert JSON rows into one of evalgap's tables (a plain identifier; values are data, never SQL). */
  async insertJson(table: string, rows: object[], dedupToken: string = randomUUID()): Promise<void> {
    if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error(`not a table name: ${table}`);
    if (rows.length === 0) return;
    // always an explicit token: chdb applies per-query settings to its session, so an earlier
    // insert's token would otherwise still be set and deduplicate this insert away
    await this.client.insert({
      table: this.t(table),
      values: rows,
      format: 'JSONEachRow',
      clickhouse_settings: { insert_deduplication_token: dedupToken },
    });
  }

  async registerClusters(rows: ClusterRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.client.insert({ table: this.t('coverage_clusters'), values: rows, format: 'JSONEachRow' });
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
