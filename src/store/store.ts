/**
 * The storage edge: applies migrations, writes assigned request rows, answers queries.
 * Values are always bound as query parameters; only validated identifiers are interpolated.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import { randomUUID } from 'node:crypto';
import type { Config } from '../config/index.js';
import { createStoreClient, type StoreKind } from './client.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import type { EmbeddingRow } from './embeddings.js';

/** One row of {db}.requests, as inserted (JSONEachRow). */
export interface RequestRow {
  request_id: string;
  ts: string; // ISO-8601 UTC
  agent: string;
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
}

export interface ClusterRow {
  model_version: string;
  cluster: number;
  label: string;
  size: number;
  share: number;
  examples: string[];
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
      throw new Error(`ClickHouse at ${sc.location} did not answer: ${String(ping.error?.message ?? ping.error)}`);
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
      requests: `toDateTime(ts) + toIntervalDay(${this.retentionDays})`,
      coverage_5m: `bucket + toIntervalDay(${this.retentionDays})`,
      request_embeddings: `toDateTime(ts) + toIntervalDay(${this.retentionDays})`,
    };
    const rows = await this.query<{ name: string; q: string }>(
      `SELECT name, create_table_query AS q FROM system.tables WHERE database = {db:String} AND name IN ('requests', 'coverage_5m', 'request_embeddings')`,
      { db: this.database },
    );
    for (const r of rows) {
      if (r.q.includes(`toIntervalDay(${this.retentionDays})`) || r.q.includes(`INTERVAL ${this.retentionDays} DAY`)) continue;
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
        max_insert_block_size: '10000000',
        min_insert_block_size_rows: '0',
        min_insert_block_size_bytes: '0',
      },
    });
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
