/**
 * The demo's own reads (src/cli/demo.ts): its sample traffic keeps the true topic and the phase in
 * `metadata` (`topic_hint`, `phase`), known to the demo only, so that it can show what evalgap
 * found against the truth. Nothing else reads these keys.
 */
import type { Store } from './store.js';

/** Requests, uncovered ones and uncovered share per true topic in one phase of the demo's traffic. */
export async function byTopic(store: Store, phase: string) {
  return store.query<{ topic: string; n: string; uncovered: string; v: string }>(
    `SELECT JSONExtractString(metadata, 'topic_hint') AS topic, count() AS n, countIf(covered = 0) AS uncovered, any(model_version) AS v
     FROM ${store.t('requests')} WHERE JSONExtractString(metadata, 'phase') = {p:String} GROUP BY topic ORDER BY topic`,
    { p: phase },
  );
}

/** Requests, uncovered ones, and the escalation rate of covered and uncovered ones over some phases. */
export async function demoTotals(store: Store, phases: string[]) {
  const [tot] = await store.query<{ n: string; uncovered: string; esc_cov: number; esc_unc: number }>(
    `SELECT count() AS n, countIf(covered = 0) AS uncovered, avgIf(escalated, covered = 1) AS esc_cov, avgIf(escalated, covered = 0) AS esc_unc
     FROM ${store.t('requests')} WHERE has({phases:Array(String)}, JSONExtractString(metadata, 'phase'))`,
    { phases },
  );
  return tot!;
}

/** The true topic most of each gap's members came from (latest version of one discovery run). */
export async function gapTopics(store: Store, runId: string): Promise<Map<string, { topic: string; share: number }>> {
  const rows = await store.query<{ gap_id: string; topic: string; n: string; total: string }>(
    `SELECT gap_id, topic, n, sum(n) OVER (PARTITION BY gap_id) AS total FROM (
       SELECT m.gap_id AS gap_id, JSONExtractString(q.metadata, 'topic_hint') AS topic, count() AS n
       FROM ${store.t('gap_members')} AS m INNER JOIN ${store.t('requests')} AS q ON q.request_id = m.request_id
       WHERE m.gap_id != '' AND m.version = (SELECT max(version) FROM ${store.t('coverage_gaps')} WHERE run_id = {run:String})
       GROUP BY gap_id, topic)
     ORDER BY gap_id, n DESC LIMIT 1 BY gap_id`,
    { run: runId },
  );
  return new Map(rows.map((r) => [r.gap_id, { topic: r.topic, share: Number(r.n) / Number(r.total) }]));
}
