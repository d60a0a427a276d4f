/**
 * Migrations 8–10: the monitor's tables (alerts, trends, checkpoints) and the standing eval-set
 * mismatch view. Same conventions as migrations.ts (idempotent statements, `{db}` validated).
 */
import type { Migration } from './migrations.js';

export const MONITOR_MIGRATIONS: Migration[] = [
  {
    version: 8,
    name: 'alerts: one row per alert state change',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.alerts
       (
         id            String COMMENT 'deterministic from rule, scope and onset window',
         webhook_id    String COMMENT 'idempotency key of the notification (id.status[.rN])',
         kind          LowCardinality(String) COMMENT 'firing | reminder | resolved',
         status        LowCardinality(String) COMMENT 'firing | resolved',
         rule          LowCardinality(String),
         agent         LowCardinality(String) COMMENT '* = all agents',
         cluster       Nullable(Int32),
         severity      LowCardinality(String),
         onset         DateTime('UTC'),
         window_start  DateTime('UTC'),
         window_end    DateTime('UTC'),
         statistic     Float64,
         threshold     Float64,
         effect_name   LowCardinality(String),
         effect        Float64,
         effect_lo     Float64,
         effect_hi     Float64,
         summary       String,
         clusters      String COMMENT 'JSON array: cluster, label, share_now, share_reference, share_eval, examples',
         sql           String COMMENT 'the query that shows the rows behind the alert',
         group_key     String,
         notified      UInt8 COMMENT '0 when only recorded (a backfill), 1 when written to the outbox',
         model_version LowCardinality(String),
         created_at    DateTime64(3, 'UTC')
       )
       ENGINE = ReplacingMergeTree(created_at)
       ORDER BY (id, webhook_id)
       SETTINGS non_replicated_deduplication_window = 10000`,
    ],
  },
  {
    version: 9,
    name: 'monitor_trends: per rule, scope and evaluated window',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.monitor_trends
       (
         window_start    DateTime('UTC'),
         window_end      DateTime('UTC'),
         rule            LowCardinality(String),
         agent           LowCardinality(String),
         cluster         Nullable(Int32),
         model_version   LowCardinality(String),
         share_now       Float64,
         share_reference Float64,
         share_eval      Float64,
         escalation_rate Float64,
         statistic       Float64,
         threshold       Float64,
         evaluated_at    DateTime64(3, 'UTC') DEFAULT now64(3)
       )
       ENGINE = ReplacingMergeTree(evaluated_at)
       PARTITION BY toYYYYMM(window_start)
       ORDER BY (rule, agent, ifNull(cluster, -1), model_version, window_start)
       TTL window_start + INTERVAL {retention} DAY
       SETTINGS non_replicated_deduplication_window = 10000`,
    ],
  },
  {
    version: 10,
    name: 'monitor_checkpoints; eval_mismatch view',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.monitor_checkpoints
       (
         monitor    String COMMENT 'the election group: monitors sharing it share one checkpoint',
         seq        UInt64 COMMENT 'increases by one per evaluated window',
         window_end DateTime('UTC') COMMENT 'end of the last evaluated window',
         state      String COMMENT 'JSON: detector state, notification log, counts already evaluated',
         saved_at   DateTime64(3, 'UTC') DEFAULT now64(3)
       )
       ENGINE = ReplacingMergeTree(seq)
       ORDER BY monitor
       SETTINGS non_replicated_deduplication_window = 10000`,
      `CREATE VIEW IF NOT EXISTS {db}.eval_mismatch AS
       SELECT
         p.model_version AS model_version,
         p.cluster AS cluster,
         c.label AS label,
         p.requests AS requests,
         p.requests / sum(p.requests) OVER (PARTITION BY p.model_version) AS production_share,
         c.share AS eval_share,
         production_share - eval_share AS difference
       FROM
       (
         SELECT model_version, cluster, sum(requests) AS requests
         FROM {db}.coverage_5m
         WHERE bucket >= now() - INTERVAL 7 DAY
         GROUP BY model_version, cluster
       ) AS p
       LEFT JOIN (SELECT model_version, cluster, label, share FROM {db}.coverage_clusters FINAL) AS c
         ON c.model_version = p.model_version AND c.cluster = p.cluster`,
    ],
  },
];
