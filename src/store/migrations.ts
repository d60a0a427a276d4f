import { BANDS } from '../coverage/bands.js';
import { ESTIMATE_MIGRATIONS } from './estimate-migrations.js';
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
  // 13: another branch's
  {
    version: 14,
    name: 'agent or prompt version: requests.version, and coverage_5m per version (evalgap compare)',
    statements: [
      `ALTER TABLE {db}.requests ADD COLUMN IF NOT EXISTS version LowCardinality(String) DEFAULT ''
       COMMENT 'the agent or prompt version of the message; empty when absent or stored before migration 14' AFTER agent`,
      // a new column may join the end of a sorting key in the ALTER that adds it (metadata only);
      // existing rows read as version '' and keep their order
      `ALTER TABLE {db}.coverage_5m ADD COLUMN IF NOT EXISTS version LowCardinality(String) AFTER model_version,
       MODIFY ORDER BY (bucket, agent, model_version, cluster, version)`,
      // evalgap compare's evidence, per coverage model and segment (an eval cluster; -1 uncovered;
      // -2 all traffic), one column set per version. Units: a session, or a request without one;
      // each unit's outcome columns are its share of requests with the outcome, summed over units.
      // A parameterized view: SELECT * FROM {db}.version_comparison(baseline = 'v1', candidate = 'v2',
      // since = '…', until = '…', agent = '', slow_ms = 2000, closed_before = '…') — see docs/compare.md
      `CREATE VIEW IF NOT EXISTS {db}.version_comparison AS
       WITH per_unit AS (
         SELECT version, model_version, if(covered = 0, -1, cluster) AS segment,
                if(session_id != '', session_id, concat('request:', request_id)) AS unit,
                count() AS n, countIf(escalated = 1) AS e, countIf(outcome = 'refused') AS rf, countIf(outcome = 'failed') AS fl,
                countIf(latency_ms IS NOT NULL) AS nl, countIf(latency_ms > {slow_ms:Float64}) AS sl, max(ts) AS last
         FROM {db}.requests
         WHERE version IN ({baseline:String}, {candidate:String}) AND {baseline:String} != {candidate:String}
           AND ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}
           AND ({agent:String} = '' OR agent = {agent:String})
         GROUP BY version, model_version, segment, unit
       ),
       closed AS (
         SELECT version, model_version, unit FROM per_unit GROUP BY version, model_version, unit
         HAVING max(last) < {closed_before:DateTime64(3, 'UTC')}
       ),
       rows AS (
         SELECT p.version AS version, p.model_version AS model_version, p.segment AS segment, p.n AS n, p.e AS e, p.rf AS rf,
                p.fl AS fl, p.nl AS nl, p.sl AS sl, p.n / sum(p.n) OVER (PARTITION BY p.version, p.model_version, p.unit) AS share
         FROM per_unit AS p INNER JOIN closed AS c ON c.version = p.version AND c.model_version = p.model_version AND c.unit = p.unit
         UNION ALL
         SELECT p.version, p.model_version, -2, sum(p.n), sum(p.e), sum(p.rf), sum(p.fl), sum(p.nl), sum(p.sl), 1
         FROM per_unit AS p INNER JOIN closed AS c ON c.version = p.version AND c.model_version = p.model_version AND c.unit = p.unit
         GROUP BY p.version, p.model_version, p.unit
       )
       SELECT model_version, segment,
              countIf(version = {baseline:String}) AS baseline_units,
              sumIf(n, version = {baseline:String}) AS baseline_requests,
              sumIf(e / n, version = {baseline:String}) AS baseline_escalated,
              sumIf(rf / n, version = {baseline:String}) AS baseline_refused,
              sumIf(fl / n, version = {baseline:String}) AS baseline_failed,
              countIf(version = {baseline:String} AND nl > 0) AS baseline_latency_units,
              sumIf(sl / nl, version = {baseline:String} AND nl > 0) AS baseline_slow,
              sumIf(share, version = {baseline:String}) AS baseline_mix,
              countIf(version = {candidate:String}) AS candidate_units,
              sumIf(n, version = {candidate:String}) AS candidate_requests,
              sumIf(e / n, version = {candidate:String}) AS candidate_escalated,
              sumIf(rf / n, version = {candidate:String}) AS candidate_refused,
              sumIf(fl / n, version = {candidate:String}) AS candidate_failed,
              countIf(version = {candidate:String} AND nl > 0) AS candidate_latency_units,
              sumIf(sl / nl, version = {candidate:String} AND nl > 0) AS candidate_slow,
              sumIf(share, version = {candidate:String}) AS candidate_mix,
              if(baseline_units > 0, baseline_escalated / baseline_units, nan) AS baseline_escalation_rate,
              if(candidate_units > 0, candidate_escalated / candidate_units, nan) AS candidate_escalation_rate
       FROM rows
       GROUP BY model_version, segment
       ORDER BY model_version, segment`,
    ],
  },
  {
    version: 15,
    name: 'eval results per case, per coverage model version and eval run (evalgap results)',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.eval_results
       (
         model_version LowCardinality(String) COMMENT 'coverage model whose cases the results are matched to',
         run_id        String COMMENT 'the eval run',
         case_id       String,
         cluster       Int32 COMMENT 'the case''s cluster in that model',
         tags          Array(String),
         passed        Nullable(UInt8),
         score         Nullable(Float64) COMMENT 'in [0, 1]',
         scores        Map(String, Float64) COMMENT 'per-metric scores in [0, 1]',
         value         Nullable(Float64) COMMENT 'the result the estimate uses: passed (1/0), else score; NULL: per-metric scores only',
         source        String COMMENT 'the results file',
         stored_at     DateTime64(3, 'UTC') DEFAULT now64(3)
       )
       ENGINE = ReplacingMergeTree(stored_at)
       ORDER BY (model_version, run_id, case_id)`,
    ],
  },
  {
    version: 16,
    name: 'production_weighted_score: the eval score reweighted to production traffic, one row per day and agent (evalgap estimate)',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.production_weighted_score
       (
         day            Date,
         agent          LowCardinality(String) COMMENT 'agent, or empty for all agents',
         computed_at    DateTime64(3, 'UTC') COMMENT 'the latest computation of a day and agent wins',
         model_version  LowCardinality(String),
         run_id         String,
         metric         String COMMENT 'empty: passed/score; else the per-metric score used',
         requests       UInt64,
         covered        UInt64,
         untested_share Float64 COMMENT 'uncovered requests / requests',
         eval_cases     UInt64,
         raw_score      Float64 COMMENT 'the eval run''s own mean result',
         estimate       Float64 COMMENT 'reweighted to the day''s covered traffic (NaN: no covered traffic)',
         low            Float64,
         high           Float64,
         level          Float64,
         all_traffic_all_fail Float64 COMMENT 'score on all traffic if the untested traffic all failed',
         all_traffic_all_pass Float64 COMMENT 'score on all traffic if the untested traffic all passed',
         all_traffic_nearest  Float64 COMMENT 'score on all traffic if the untested traffic passed like its nearest cluster'
       )
       ENGINE = ReplacingMergeTree(computed_at)
       PARTITION BY toYYYYMM(day)
       ORDER BY (agent, day)
       TTL day + INTERVAL {retention} DAY`,
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
  {
    version: 18,
    name: 'what the eval set tests of conversations and tools: eval_depth_profile, eval_tool_chains (from the model\'s agent.json)',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.eval_depth_profile
       (
         model_version LowCardinality(String),
         depth_band    UInt8 COMMENT '0: turn 1, 1: turns 2-3, 2: turns 4-7, 3: turn 8 and deeper',
         band          LowCardinality(String),
         eval_share    Float64 COMMENT 'share of the eval cases that give a depth',
         eval_cases    UInt32,
         registered_at DateTime64(3, 'UTC') DEFAULT now64(3)
       )
       ENGINE = ReplacingMergeTree(registered_at)
       ORDER BY (model_version, depth_band)`,
      `CREATE TABLE IF NOT EXISTS {db}.eval_tool_chains
       (
         model_version LowCardinality(String),
         cluster       Int32,
         tools         Array(String) COMMENT 'a tool chain eval cases of this cluster expect, in order',
         bigrams       Array(String) COMMENT 'its consecutive pairs, ^ before the first tool and $ after the last',
         cases         UInt32,
         registered_at DateTime64(3, 'UTC') DEFAULT now64(3)
       )
       ENGINE = ReplacingMergeTree(registered_at)
       ORDER BY (model_version, cluster, tools)`,
    ],
  },
  {
    version: 19,
    name: 'views coverage_by_depth, tool_chain_coverage, session_coverage',
    statements: [
      `CREATE OR REPLACE VIEW {db}.coverage_by_depth AS
       SELECT r.day AS day, r.model_version AS model_version, r.agent AS agent, r.depth_band AS depth_band,
              ['1', '2-3', '4-7', '8+'][r.depth_band + 1] AS band,
              count() AS requests, countIf(r.covered = 0) AS uncovered, uncovered / requests AS uncovered_share,
              countIf(r.escalated = 1) AS escalated,
              any(p.eval_share) AS eval_share, any(p.eval_cases) AS eval_cases
       FROM (SELECT toDate(ts) AS day, model_version, agent, covered, escalated,
                    toUInt8(multiIf(turn <= 1, 0, turn <= 3, 1, turn <= 7, 2, 3)) AS depth_band
             FROM {db}.requests WHERE turn > 0) AS r
       LEFT JOIN (SELECT model_version, depth_band, argMax(eval_share, registered_at) AS eval_share, argMax(eval_cases, registered_at) AS eval_cases
                  FROM {db}.eval_depth_profile GROUP BY model_version, depth_band) AS p
         ON p.model_version = r.model_version AND p.depth_band = r.depth_band
       GROUP BY day, model_version, agent, depth_band`,
      `CREATE OR REPLACE VIEW {db}.tool_chain_coverage AS
       SELECT r.request_id AS request_id, r.ts AS ts, r.agent AS agent, r.session_id AS session_id, r.turn AS turn,
              r.model_version AS model_version, r.cluster AS cluster, r.covered AS covered, r.outcome AS outcome,
              r.escalated AS escalated, r.query AS query, r.tools AS tools,
              arrayStringConcat(r.tools, ' → ') AS chain,
              arrayMap((a, b) -> concat(a, '→', b), arrayPushFront(r.tools, '^'), arrayPushBack(r.tools, '$')) AS chain_bigrams,
              multiIf(length(r.tools) = 0, 'none',
                      m.tool_cases = 0, 'unknown',
                      has(c.chains, chain), 'exact',
                      has(m.chains, chain), 'exact_elsewhere',
                      arrayAll(b -> has(c.bigrams, b), chain_bigrams), 'relaxed',
                      'untested') AS verdict,
              if(verdict = 'untested', arrayFirst(b -> NOT has(c.bigrams, b), chain_bigrams), '') AS missing_bigram,
              if(verdict = 'untested', arrayFirst(b -> NOT has(m.bigrams, b), chain_bigrams), '') AS missing_anywhere
       FROM {db}.requests AS r
       LEFT JOIN (SELECT model_version, cluster, groupUniqArray(arrayStringConcat(tools, ' → ')) AS chains, groupUniqArrayArray(bigrams) AS bigrams
                  FROM {db}.eval_tool_chains FINAL GROUP BY model_version, cluster) AS c
         ON c.model_version = r.model_version AND c.cluster = r.cluster
       LEFT JOIN (SELECT model_version, sum(cases) AS tool_cases, groupUniqArray(arrayStringConcat(tools, ' → ')) AS chains, groupUniqArrayArray(bigrams) AS bigrams
                  FROM {db}.eval_tool_chains FINAL GROUP BY model_version) AS m
         ON m.model_version = r.model_version`,
      `CREATE OR REPLACE VIEW {db}.session_coverage AS
       SELECT session_id, agent, model_version, min(ts) AS started, max(ts) AS last_seen,
              count() AS turns, max(turn) AS deepest_turn,
              countIf(covered = 0) AS uncovered_turns,
              if(uncovered_turns > 0, minIf(turn, covered = 0), 0) AS first_uncovered_turn,
              countIf(escalated = 1) AS escalated_turns,
              countIf(outcome = 'failed') AS failed_turns
       FROM {db}.requests
       WHERE session_id != ''
       GROUP BY session_id, agent, model_version`,
    ],
  },
  // 20: eval runs replaced whole (src/store/estimate-migrations.ts)
  ...ESTIMATE_MIGRATIONS,
];
