/**
 * `npm run demo`: the main job end to end on sample data the project writes itself.
 * fit an eval set → publish production traffic (with a few malformed messages) to Kafka →
 * consume, embed, assign, store in ClickHouse → report coverage from SQL.
 * Every run uses a fresh topic, group and data folder, so it can be run again and again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT, type Config } from '../config/index.js';
import { createLogger } from '../config/logger.js';
import { DEFAULT_FIT, fitCoverageModel } from '../coverage/fit.js';
import { saveCoverageModel } from '../coverage/model.js';
import { loadEmbedder } from '../embed/embedder.js';
import { createKafka, produceJson } from '../ingest/kafka.js';
import { startRun } from './run.js';
import { modelSummary, pct, table } from './format.js';
import { sampleEvalSet, sampleTraffic, SURPRISE_TOPICS } from './sample-data.js';

const say = (s = '') => console.log(s);

export async function runDemo(base: Config, dir = path.join(PACKAGE_ROOT, '.evalgap', 'demo')): Promise<void> {
  const stamp = Date.now().toString(36);
  // replace only what the demo itself writes there
  for (const f of ['evalset.jsonl', 'model', 'chdb']) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const cfg: Config = {
    ...base,
    kafka: { ...base.kafka, topic: `evalgap.demo.${stamp}`, dlqTopic: `evalgap.demo.${stamp}.dlq`, group: `evalgap-demo-${stamp}` },
    clickhouse: base.clickhouse.url ? base.clickhouse : { ...base.clickhouse, path: path.join(dir, 'chdb') },
    ingest: { ...base.ingest, metricsPort: 0 },
    logLevel: 'warn',
  };

  say('1. eval set: 180 support-agent test cases over 6 topics (shipping, returns, account, payments, product, discounts)');
  const evalSet = sampleEvalSet(30);
  const evalFile = path.join(dir, 'evalset.jsonl');
  fs.writeFileSync(evalFile, evalSet.map((c) => JSON.stringify(c)).join('\n') + '\n');
  const embedder = await loadEmbedder(cfg.embed);
  const fit = await fitCoverageModel(
    evalSet.map((c) => ({ id: c.id, text: c.query, tags: c.tags })),
    embedder,
    // the demo's traffic is generated from the eval cases' own phrasings (near-duplicates of them),
    // so calibration scores each case against its near-duplicates too (only itself left out)
    { ...DEFAULT_FIT, k: 'auto', nearDuplicateCosine: 1, source: 'evalset.jsonl', textField: 'query' },
  );
  const modelDir = path.join(dir, 'model');
  const manifest = saveCoverageModel(modelDir, fit.draft, fit.arrays);
  say(`   evalgap fit ${path.relative(process.cwd(), evalFile)}  →  ${path.relative(process.cwd(), modelDir)}\n`);
  say(modelSummary(manifest));

  const traffic = sampleTraffic(600, { seed: 11, surpriseShare: 0.2, idPrefix: `demo-${stamp}` });
  const malformed = ['{"request_id": "bad-1", "query": "no timestamp"}', 'not json at all', '{"request_id":"bad-3","ts":"2026-01-01T00:00:00Z","query":"   "}'];
  say(`2. production: ${traffic.length} request logs published to Kafka topic ${cfg.kafka.topic}`);
  say(`   (20% on topics the eval set never tested: ${SURPRISE_TOPICS.join(', ')}), plus ${malformed.length} malformed messages`);
  const kafka = createKafka(cfg.kafka);
  const producer = kafka.producer();
  await producer.connect();
  await produceJson(producer, cfg.kafka.topic, [...traffic.slice(0, 300), ...malformed, ...traffic.slice(300)]);
  await producer.disconnect();

  say(`\n3. evalgap run: consumer group ${cfg.kafka.group} → embedded ClickHouse at ${path.relative(process.cwd(), cfg.clickhouse.path)}`);
  const t0 = Date.now();
  const running = await startRun(cfg, modelDir, createLogger(cfg.logLevel));
  const want = traffic.length + malformed.length;
  const count = async () => {
    const m = await running.service.metrics.registry.getMetricsAsJSON();
    const v = (n: string) => (m.find((x) => x.name === n)?.values ?? []).reduce((a, b) => a + Number(b.value), 0);
    return { stored: v('evalgap_rows_stored_total'), dead: v('evalgap_messages_dead_lettered_total') };
  };
  let c = await count();
  while (c.stored + c.dead < want && Date.now() - t0 < 300_000) {
    await new Promise((r) => setTimeout(r, 250));
    c = await count();
  }
  say(`   stored ${c.stored} rows, dead-lettered ${c.dead} messages to ${cfg.kafka.dlqTopic} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const store = running.store;
  const R = store.t('requests');
  const [tot] = await store.query<{ n: string; uncovered: string; esc_cov: number; esc_unc: number }>(
    `SELECT count() AS n, countIf(covered = 0) AS uncovered,
            avgIf(escalated, covered = 1) AS esc_cov, avgIf(escalated, covered = 0) AS esc_unc
     FROM ${R} WHERE model_version = {v:String}`,
    { v: manifest.version },
  );
  say(`\n4. coverage of production traffic (SQL on ${R}):`);
  say(`   uncovered: ${tot.uncovered} of ${tot.n} (${pct(Number(tot.uncovered) / Number(tot.n))}); calibrated rate under no shift: ${pct(manifest.calibration.targetFalseUncoveredRate)}`);
  say(`   escalation rate: covered ${pct(tot.esc_cov)}, uncovered ${pct(tot.esc_unc)}`);
  const byTopic = await store.query<{ topic: string; n: string; uncovered: string }>(
    `SELECT JSONExtractString(metadata, 'topic_hint') AS topic, count() AS n, countIf(covered = 0) AS uncovered
     FROM ${R} GROUP BY topic ORDER BY topic`,
  );
  say('\n   by true topic (known to the demo only; a hint field kept in metadata):');
  say(
    table(
      ['topic', 'in eval set', 'requests', 'uncovered'],
      byTopic.map((r) => [r.topic, SURPRISE_TOPICS.includes(r.topic) ? 'no' : 'yes', r.n, pct(Number(r.uncovered) / Number(r.n))]),
    ).replace(/^/gm, '   '),
  );
  const agg = await store.query<{ label: string; requests: string; uncovered: string; escalated: string }>(
    `SELECT c.label AS label, sum(a.requests) AS requests, sum(a.uncovered) AS uncovered, sum(a.escalated) AS escalated
     FROM ${store.t('coverage_5m')} AS a
     INNER JOIN (SELECT cluster, any(label) AS label FROM ${store.t('coverage_clusters')} WHERE model_version = {v:String} GROUP BY cluster) AS c
       ON a.cluster = c.cluster
     WHERE a.model_version = {v:String}
     GROUP BY label ORDER BY uncovered DESC, requests DESC LIMIT 8`,
    { v: manifest.version },
  );
  say('\n   nearest eval cluster of production traffic (5-minute aggregates, materialized view):');
  say(table(['eval cluster', 'requests', 'uncovered', 'escalated'], agg.map((r) => [r.label, r.requests, r.uncovered, r.escalated])).replace(/^/gm, '   '));
  const examples = await store.query<{ query: string; coverage: number; n: string }>(
    `SELECT query, min(coverage) AS coverage, count() AS n FROM ${R} WHERE covered = 0
     GROUP BY query ORDER BY coverage ASC, query LIMIT 6`,
  );
  say('\n   least-covered production queries (candidates for new eval cases):');
  say('   coverage  seen  query');
  for (const e of examples) say(`   ${e.coverage.toFixed(3)}     ${String(e.n).padEnd(4)}  ${e.query}`);
  await running.stop();
  say(`\ndone. Data: ${path.relative(process.cwd(), dir)}; query it again with evalgap or any ClickHouse client.`);
}
