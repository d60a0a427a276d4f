import { BANDS } from '../coverage/bands.js';
import { MONITOR_MIGRATIONS } from './monitor-migrations.js';

/**
 * Versioned schema. Each migration is applied once, in order, and recorded in schema_migrations.
 * Statements are idempotent (IF NOT EXISTS) so that instances starting together cannot conflict.
 * `{db}` and `{retention}` are identifiers/integers validated by the config schema, never user text.
 */
export interface Migration {
  version: number;
  name: string;
  statements: string[];
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'requests, 5-minute coverage aggregates, coverage model registry',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.requests
       (
         request_id      String,
         ts              DateTime64(3, 'UTC'),
         ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
         agent           LowCardinality(String),
         session_id      String,
         turn            UInt32,
         query           String COMMENT 'the user text, or sha256 hex when ingested with --redact-text',
         query_redacted  UInt8,
         truncated       UInt8 COMMENT '1 when the text exceeded the embedding model limit',
         cluster         Int32 COMMENT 'nearest eval cluster (also for uncovered rows)',
         similarity      Float32 COMMENT 'cosine similarity to that cluster centroid',
         coverage        Float32 COMMENT 'coverage score: mean cosine to the nearest eval cases',
         covered         UInt8,
         escalated       UInt8,
         outcome         LowCardinality(String),
         latency_ms      Nullable(Float64),
         cost_usd        Nullable(Float64),
         tools           Array(LowCardinality(String)),
         metadata        String COMMENT 'JSON object: the message metadata and unknown fields',
         model_version   LowCardinality(String),
         kafka_topic     LowCardinality(String),
         kafka_partition UInt32,
         kafka_offset    UInt64
       )
       ENGINE = MergeTree
       PARTITION BY toDate(ts)
       ORDER BY (agent, cluster, ts, request_id)
       TTL toDateTime(ts) + INTERVAL {retention} DAY
       SETTINGS non_replicated_deduplication_window = 10000`,
      `CREATE TABLE IF NOT EXISTS {db}.coverage_5m
       (
         bucket         DateTime('UTC'),
         agent          LowCardinality(String),
         model_version  LowCardinality(String),
         cluster        Int32,
         requests       UInt64,
         uncovered      UInt64,
         escalated      UInt64,
         refused        UInt64,
         failed         UInt64,
         truncated      UInt64,
         latency_ms_sum Float64,
         cost_usd_sum   Float64
       )
       ENGINE = SummingMergeTree
       PARTITION BY toYYYYMM(bucket)
       ORDER BY (bucket, agent, model_version, cluster)
       TTL bucket + INTERVAL {retention} DAY
       SETTINGS non_replicated_deduplication_window = 10000`,
      `CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.coverage_5m_mv TO {db}.coverage_5m AS
       SELECT
         toStartOfFiveMinutes(ts)         AS bucket,
         agent, model_version, cluster,
         count()                          AS requests,
         countIf(covered = 0)             AS uncovered,
         countIf(escalated = 1)           AS escalated,
         countIf(outcome = 'refused')     AS refused,
         countIf(outcome = 'failed')      AS failed,
         countIf(truncated = 1)           AS truncated,
         sum(ifNull(latency_ms, 0))       AS latency_ms_sum,
         sum(ifNull(cost_usd, 0))         AS cost_usd_sum
       FROM {db}.requests
       GROUP BY bucket, agent, model_version, cluster`,
      `CREATE TABLE IF NOT EXISTS {db}.coverage_clusters
       (
         model_version LowCardinality(String),
         cluster       Int32,
         label         String,
         size          UInt32,
         share         Float64,
         examples      Array(String),
         registered_at DateTime('UTC') DEFAULT now()
       )
       ENGINE = ReplacingMergeTree(registered_at)
       ORDER BY (model_version, cluster)`,
    ],
  },
  {
    version: 2,
    name: 'repaired flag, offset index, ingest progress ledger; aggregates written by evalgap (no view)',
    statements: [
      `ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS repaired UInt8 DEFAULT 0
       COMMENT '1 when lone UTF-16 surrogates in the message were replaced by U+FFFD'`,
      `ALTER TABLE {db}.requests ADD INDEX IF NOT EXISTS kafka_position (kafka_partition, kafka_offset) TYPE minmax GRANULARITY 1`,
      // per topic partition: the highest offset whose raw rows ('raw') and aggregates ('agg') are
      // complete. Rows above 'raw' are an unfinished insert (removed on assignment); 'agg' below
      // 'raw' is an aggregate insert to repeat from the raw rows, with the same deduplication token.
      `CREATE TABLE IF NOT EXISTS {db}.ingest_progress
       (
         kafka_topic     LowCardinality(String),
         kafka_partition UInt32,
         stage           LowCardinality(String),
         offset          Int64,
         at              DateTime64(3, 'UTC') DEFAULT now64(3)
       )
       ENGINE = ReplacingMergeTree(offset)
       ORDER BY (kafka_topic, kafka_partition, stage)`,
      // what the view aggregated so far is complete up to the highest stored offset (seed once)
      `INSERT INTO {db}.ingest_progress (kafka_topic, kafka_partition, stage, offset)
       SELECT kafka_topic, kafka_partition, stage, toInt64(max(kafka_offset))
       FROM {db}.requests ARRAY JOIN ['raw', 'agg'] AS stage
       WHERE (SELECT count() FROM {db}.ingest_progress) = 0
       GROUP BY kafka_topic, kafka_partition, stage`,
      `DROP VIEW IF EXISTS {db}.coverage_5m_mv`,
    ],
  },
  {
    version: 5,
    name: 'what gap discovery keeps: runner-up cluster per request, embeddings of uncovered (and sampled covered) requests',
    statements: [
      `ALTER TABLE {db}.requests
         ADD COLUMN IF NOT EXISTS runner_up Int32 DEFAULT -1 COMMENT 'second most similar eval cluster (-1: none)' AFTER similarity,
         ADD COLUMN IF NOT EXISTS runner_up_similarity Float32 DEFAULT -1 COMMENT 'cosine similarity to its centroid' AFTER runner_up`,
      `CREATE TABLE IF NOT EXISTS {db}.request_embeddings
       (
         request_id      String,
         ts              DateTime64(3, 'UTC'),
         agent           LowCardinality(String),
         model_version   LowCardinality(String),
         covered         UInt8,
         kafka_topic     LowCardinality(String),
         kafka_partition UInt32,
         kafka_offset    UInt64,
         scale           Float32 COMMENT 'embedding ≈ scale × q (q: Int8, |q| ≤ 127)',
         embedding       Array(Int8) COMMENT 'int8-quantised unit embedding of the query'
       )
       ENGINE = ReplacingMergeTree
       PARTITION BY toDate(ts)
       ORDER BY (agent, covered, ts, request_id)
       TTL toDateTime(ts) + INTERVAL {retention} DAY
       SETTINGS non_replicated_deduplication_window = 10000`,
    ],
  },
  {
    version: 6,
    name: 'coverage gaps and their members, one row per gap (or request) per scope and day: the latest discovery run of the day wins',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.coverage_gaps
       (
         scope                 LowCardinality(String) COMMENT 'agent, or empty for all agents',
         run_day               Date,
         gap_id                String,
         version               DateTime64(3, 'UTC') COMMENT 'when the run discovered it; the latest of a day wins',
         run_id                String,
         period_start          DateTime64(3, 'UTC'),
         period_end            DateTime64(3, 'UTC'),
         model_version         LowCardinality(String) COMMENT 'coverage model whose uncovered rows were grouped; empty: all',
         status                LowCardinality(String) COMMENT 'new | open | reopened | closed',
         rank                  UInt32,
         label                 String,
         terms                 Array(String),
         members               UInt64,
         share                 Float64 COMMENT 'members / all requests of the scope and period',
         uncovered_share       Float64 COMMENT 'members / uncovered requests of the scope and period',
         escalation_rate       Float64,
         refusal_rate          Float64,
         failure_rate          Float64,
         bad_rate              Float64 COMMENT 'escalated, refused or failed',
         first_seen            DateTime64(3, 'UTC'),
         last_seen             DateTime64(3, 'UTC'),
         trend                 LowCardinality(String),
         growth                Float64,
         nearest_cluster       Int32,
         nearest_cluster_label String,
         examples              Array(String) COMMENT 'diverse representatives, medoid first (sha256 hex when the text was redacted)',
         example_ids           Array(String),
         redacted_share        Float64,
         cases_needed          UInt32,
         priority              Float64 COMMENT 'members × (1 + 4 × bad_rate)',
         centroid              Array(Float32)
       )
       ENGINE = ReplacingMergeTree(version)
       PARTITION BY toYYYYMM(run_day)
       ORDER BY (scope, run_day, gap_id)
       TTL run_day + INTERVAL {retention} DAY`,
      `CREATE TABLE IF NOT EXISTS {db}.gap_members
       (
         scope         LowCardinality(String),
         run_day       Date,
         request_id    String,
         version       DateTime64(3, 'UTC'),
         gap_id        String COMMENT 'empty: noise (uncovered, in no gap)',
         ts            DateTime64(3, 'UTC'),
         agent         LowCardinality(String),
         similarity    Float32 COMMENT 'cosine similarity to the gap centroid'
       )
       ENGINE = ReplacingMergeTree(version)
       PARTITION BY toYYYYMM(run_day)
       ORDER BY (scope, run_day, request_id)
       TTL run_day + INTERVAL {retention} DAY`,
    ],
  },
  {
    version: 7,
    name: 'views: latest gaps, under-tested clusters, coverage over time',
    statements: [
      `CREATE VIEW IF NOT EXISTS {db}.latest_gaps AS
       SELECT * FROM {db}.coverage_gaps FINAL
       WHERE (scope, run_day) IN (SELECT scope, max(run_day) FROM {db}.coverage_gaps GROUP BY scope)
         AND status != 'closed'
       ORDER BY scope, rank`,
      `CREATE VIEW IF NOT EXISTS {db}.coverage_over_time AS
       SELECT
         toStartOfHour(ts)                                    AS hour,
         agent,
         model_version,
         count()                                              AS requests,
         countIf(covered = 0)                                 AS uncovered,
         1 - uncovered / requests                             AS coverage,
         countIf(escalated = 1 OR outcome IN ('refused', 'failed'))                 AS bad,
         countIf(covered = 0 AND (escalated = 1 OR outcome IN ('refused', 'failed'))) AS bad_uncovered,
         if(bad = 0, 1, 1 - bad_uncovered / bad)              AS risk_coverage
       FROM {db}.requests
       GROUP BY hour, agent, model_version`,
      `CREATE VIEW IF NOT EXISTS {db}.under_tested_clusters AS
       WITH
         traffic AS (
           SELECT model_version, cluster, count() AS n_requests, countIf(covered = 0) AS n_uncovered,
                  countIf(escalated = 1) AS n_escalated,
                  countIf(escalated = 1 OR outcome IN ('refused', 'failed')) AS n_bad
           FROM {db}.requests WHERE ts > now() - INTERVAL 7 DAY
           GROUP BY model_version, cluster
         ),
         totals AS (
           SELECT model_version, sum(n_requests) AS total, sum(n_escalated) / sum(n_requests) AS base_escalation
           FROM traffic GROUP BY model_version
         ),
         1.959964 AS z
       SELECT
         t.model_version AS model_version, t.cluster AS cluster, c.label AS label, c.share AS eval_share,
         t.n_requests AS requests, t.n_uncovered AS uncovered, t.n_escalated AS escalated, t.n_bad AS bad,
         t.n_requests / s.total AS prod_share,
         (prod_share + z * z / (2 * s.total) - z * sqrt(prod_share * (1 - prod_share) / s.total + z * z / (4 * s.total * s.total)))
           / (1 + z * z / s.total) AS prod_share_low,
         (prod_share + z * z / (2 * s.total) + z * sqrt(prod_share * (1 - prod_share) / s.total + z * z / (4 * s.total * s.total)))
           / (1 + z * z / s.total) AS prod_share_high,
         prod_share / c.share AS ratio,
         t.n_escalated / t.n_requests AS escalation_rate,
         (escalation_rate + z * z / (2 * t.n_requests) - z * sqrt(escalation_rate * (1 - escalation_rate) / t.n_requests + z * z / (4 * t.n_requests * t.n_requests)))
           / (1 + z * z / t.n_requests) AS escalation_low,
         s.base_escalation AS base_escalation,
         t.n_requests >= 10 AND prod_share_low >= 2 * c.share AS share_flag,
         t.n_requests >= 10 AND t.n_escalated > 0 AND escalation_low > 2 * s.base_escalation AS escalation_flag,
         t.n_requests * (1 + 4 * t.n_bad / t.n_requests) AS priority
       FROM traffic AS t
       JOIN totals AS s ON s.model_version = t.model_version
       JOIN (SELECT model_version, cluster, argMax(label, registered_at) AS label, argMax(share, registered_at) AS share
             FROM {db}.coverage_clusters GROUP BY model_version, cluster) AS c
         ON c.model_version = t.model_version AND c.cluster = t.cluster
       ORDER BY share_flag OR escalation_flag DESC, priority DESC`,
    ],
  },
  // 8–10: the monitor's tables (src/store/monitor-migrations.ts)
  ...MONITOR_MIGRATIONS,
  {
    version: 11,
    name: 'coverage_5m: escalated requests among the uncovered (the uncovered_escalation rule)',
    statements: [
      `ALTER TABLE {db}.coverage_5m ADD COLUMN IF NOT EXISTS uncovered_escalated UInt64 DEFAULT 0
       COMMENT 'escalated requests among the uncovered (0 for buckets stored before migration 11)' AFTER uncovered`,
    ],
  },
  {
    version: 12,
    name: 'coverage depth bands: requests.coverage_band and per-band counts in coverage_5m (the novel-topic detector)',
    statements: [
      `ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS coverage_band Int8 DEFAULT -1
       COMMENT 'coverage depth band 0 (deepest below the threshold) … 8 (best covered); -1: a model without bands or a row stored before migration 12' AFTER covered`,
      `ALTER TABLE {db}.coverage_5m ${Array.from({ length: BANDS }, (_, b) => `ADD COLUMN IF NOT EXISTS band${b} UInt64 DEFAULT 0`).join(', ')}`,
    ],
  },
  {
    version: 17,
    name: 'coverage_gaps: kind (topic | thin), depth, deep share and distinct phrasings of each gap',
    statements: [
      `ALTER TABLE {db}.coverage_gaps
         ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'topic'
           COMMENT 'topic: as far outside the eval set as untested topics sit; thin: near misses of a tested cluster (topic for rows before migration 17)' AFTER status,
         ADD COLUMN IF NOT EXISTS depth Nullable(Float64)
           COMMENT 'mean log-likelihood ratio per distinct phrasing of its coverage depth band, novel-topic vs in-scope profile; NULL: no bands' AFTER priority,
         ADD COLUMN IF NOT EXISTS deep_share Nullable(Float64)
           COMMENT 'share of distinct phrasings deeper than the in-scope 2% level (bands 0-3); NULL: no bands' AFTER depth,
         ADD COLUMN IF NOT EXISTS phrasings UInt64 DEFAULT 0 COMMENT 'distinct phrasings (normalised texts) among the members' AFTER deep_share`,
      `ALTER TABLE {db}.coverage_gaps COMMENT COLUMN priority 'members × (1 + 4 × bad_rate) × novelty (1 / (1 + exp(-depth)); 1 without bands)'`,
      // a view's * is expanded when it is created: created again, it has the new columns
      `CREATE OR REPLACE VIEW {db}.latest_gaps AS
       SELECT * FROM {db}.coverage_gaps FINAL
       WHERE (scope, run_day) IN (SELECT scope, max(run_day) FROM {db}.coverage_gaps GROUP BY scope)
         AND status != 'closed'
       ORDER BY scope, rank`,
    ],
  },
];
