/**
 * Migration 20: eval runs replaced whole. Each `evalgap results` load of a (model version, run id)
 * writes its rows under a load id and then commits one row in eval_loads; readers see, per run, only
 * the rows of its latest committed load (view latest_eval_results). Same conventions as
 * migrations.ts (idempotent statements, `{db}` validated).
 */
import type { Migration } from './migrations.js';

export const ESTIMATE_MIGRATIONS: Migration[] = [
  {
    version: 20,
    name: 'eval runs replaced whole: eval_results.load_id, eval_loads (committed loads), view latest_eval_results',
    statements: [
      // no DEFAULT expression: ClickHouse adds a new column to the sorting key only without one ('' for the rows stored before)
      `ALTER TABLE {db}.eval_results
         ADD COLUMN IF NOT EXISTS load_id String
           COMMENT 'the evalgap results load that wrote the row (sha256 of the file, 16 hex; empty: stored before migration 20); a run reads as its latest load in eval_loads'
           AFTER run_id,
         MODIFY ORDER BY (model_version, run_id, case_id, load_id)`,
      `CREATE TABLE IF NOT EXISTS {db}.eval_loads
       (
         model_version LowCardinality(String),
         run_id        String,
         load_id       String COMMENT 'the load''s rows in eval_results carry it (empty: the rows stored before migration 20)',
         cases         UInt64 COMMENT 'rows the load stored',
         source        String COMMENT 'the results file',
         loaded_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the load was committed (after all its rows were stored); a run is its latest load'
       )
       ENGINE = ReplacingMergeTree(loaded_at)
       ORDER BY (model_version, run_id, load_id)`,
      // the runs stored before: one committed load each, of the rows they hold (a rerun of this statement adds the same rows, which FINAL folds)
      `INSERT INTO {db}.eval_loads (model_version, run_id, load_id, cases, source, loaded_at)
       SELECT model_version, run_id, '', count(), any(source), max(stored_at)
       FROM {db}.eval_results FINAL WHERE load_id = ''
       GROUP BY model_version, run_id`,
      `CREATE OR REPLACE VIEW {db}.latest_eval_results AS
       SELECT * FROM {db}.eval_results FINAL
       WHERE (model_version, run_id, load_id) IN
         (SELECT model_version, run_id, argMax(load_id, (loaded_at, load_id)) FROM {db}.eval_loads FINAL GROUP BY model_version, run_id)`,
    ],
  },
];
