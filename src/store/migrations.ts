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
];
