/**
 * The loop closes, on Banking77 (real broker, engine and model): fit without some intents, stream
 * their queries through `evalgap run`, discover the gaps and export them as new cases
 * (`evalgap gaps` / `export-gaps`), refit with `evalgap fit --add`, deploy to the running consumer
 * (hot reload), stream fresh queries of those intents: their uncovered share falls to near the
 * calibrated rate, and a new discovery over the fresh traffic marks their gaps closed.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { installedEmbedding } from '../../src/embed/embedder.js';
import { createLogger } from '../../src/config/logger.js';
import { DEFAULT_FIT, fitCoverageModel } from '../../src/coverage/fit.js';
import { loadCoverageModel, saveCoverageModel } from '../../src/coverage/model.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { deployModel } from '../../src/ingest/model-watch.js';
import { startRun, type Running } from '../../src/cli/run.js';
import { discoverGaps, exportGapCases } from '../../src/gaps/run.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77, type Row } from '../helpers/banking77.js';
import { groupCaughtUp, realEmbedder, testConfig, testKafka, tmpDir, uniqueName, waitFor, capMs } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
if (!hasBanking77()) console.warn(`loop-closing test skipped: ${BANKING77_MISSING}`);

const IN_SCOPE = 16;
const HELD = 3;

function take(rows: Row[], cats: Set<string>, per: number, offset = 0): Row[] {
  const out: Row[] = [];
  for (const c of cats) out.push(...rows.filter((r) => r.category === c).slice(offset, offset + per));
  return out;
}

describe.skipIf(!hasBanking77())('closing the loop on Banking77', () => {
  let running: Running | null = null;
  afterAll(async () => running?.stop());

  const t0 = Date.now();
  const lap = (what: string) => console.log(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  it('held-out intents: uncovered before; exported, added, hot-deployed; near the calibrated rate after', async () => {
    const dir = tmpDir();
    const train = loadBanking77('train');
    const test = loadBanking77('test');
    const cats = categories(train);
    const picked = [...holdOut(cats, IN_SCOPE + HELD, 77)];
    const held = new Set(picked.slice(0, HELD));
    const scope = new Set(picked.slice(HELD));

    // v1: fitted without the held-out intents
    const evalRows = take(train, scope, 30);
    const fit = await fitCoverageModel(
      evalRows.map((r, i) => ({ id: `b77-${i}`, text: r.text, tags: [r.category] })),
      await realEmbedder(),
      { ...DEFAULT_FIT, k: IN_SCOPE, source: 'banking77-train', textField: 'query' },
    );
    lap('v1 fitted');
    const v1 = saveCoverageModel(path.join(dir, 'v1'), fit.draft, fit.arrays);
    const current = path.join(dir, 'coverage', 'current');
    deployModel(path.join(dir, 'v1'), current, { expectEmbedding: installedEmbedding(loadConfig().embed) });

    const topic = uniqueName('evalgap.test.loop');
    const group = uniqueName('g');
    let cfg: Config = testConfig(path.join(dir, 'chdb'));
    cfg = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group }, ingest: { ...cfg.ingest, metricsPort: -1 } };
    running = await startRun(cfg, current, createLogger('silent'), { modelPollMs: 500 });
    const store = running.store;
    const producer = testKafka().producer();
    await producer.connect();
    let seq = 0;
    const msgs = (rows: Row[], phase: string) =>
      rows.map((r) => ({ request_id: `${topic}-${seq++}`, ts: new Date().toISOString(), query: r.text, metadata: { intent: r.category, held: held.has(r.category), phase } }));
    const share = async (phase: string) => {
      const rs = await store.query<{ held: number; n: string; unc: number; v: string }>(
        `SELECT JSONExtractBool(metadata, 'held') AS held, count() AS n, avg(covered = 0) AS unc, any(model_version) AS v
         FROM ${store.t('requests')} WHERE kafka_topic = {t:String} AND JSONExtractString(metadata, 'phase') = {p:String}
         GROUP BY held ORDER BY held`,
        { t: topic, p: phase },
      );
      return { inScope: rs.find((r) => !Number(r.held))!, held: rs.find((r) => Number(r.held))! };
    };

    // 1. production: the held-out intents' traffic, among in-scope traffic
    await produceJson(producer, topic, msgs([...take(train, held, 60), ...take(test, scope, 6)], 'before'));
    await waitFor(() => groupCaughtUp(testKafka(), group, topic), 120_000, 'phase 1 to be stored');
    const before = await share('before');
    lap('phase 1 stored');

    // 2. discover the gaps (stored) and export them as new cases, as `evalgap export-gaps` does
    const since = t0 - 60_000;
    const found = await discoverGaps(store, { since, write: true });
    expect(found.modelVersion).toBe(v1.version);
    const { cases } = await exportGapCases(store, { perGap: 10 });
    // the intents a gap's members come from (the test knows them; the store keeps them in metadata)
    const members = await store.query<{ gap_id: string; held: string; n: string }>(
      `SELECT m.gap_id AS gap_id, countIf(JSONExtractBool(q.metadata, 'held')) AS held, count() AS n
       FROM ${store.t('gap_members')} AS m FINAL INNER JOIN ${store.t('requests')} AS q ON q.request_id = m.request_id
       WHERE m.gap_id != '' AND q.kafka_topic = {t:String} GROUP BY gap_id`,
      { t: topic },
    );
    const heldGaps = members.filter((m) => Number(m.held) / Number(m.n) > 0.5).map((m) => m.gap_id).sort();
    lap(`${found.gaps.length} gaps discovered (${heldGaps.length} of held-out intents), ${cases.length} cases exported`);
    const addFile = path.join(dir, 'gap-cases.jsonl');
    fs.writeFileSync(addFile, cases.map((c) => JSON.stringify(c)).join('\n') + '\n');

    // 3. refit with --add (the CLI), one more cluster per held-out intent, and deploy to the running consumer
    const r = spawnSync(process.execPath, [CLI, 'fit', '--add', addFile, '--model', path.join(dir, 'v1'), '--k', String(IN_SCOPE + HELD), '--out', path.join(dir, 'v2')], { encoding: 'utf8', timeout: capMs(300_000) });
    expect(r.status, r.stderr).toBe(0);
    const v2 = loadCoverageModel(path.join(dir, 'v2')).manifest;
    lap('v2 fitted (CLI)');
    deployModel(path.join(dir, 'v2'), current, { expectEmbedding: installedEmbedding(loadConfig().embed) });
    await waitFor(async () => running!.model.current().version === v2.version, 20_000, 'the consumer to switch to the new model');

    // 4. fresh queries of the same intents (the test split: never streamed, never exported)
    await produceJson(producer, topic, msgs([...take(test, held, 40), ...take(test, scope, 6, 6)], 'after'));
    await waitFor(() => groupCaughtUp(testKafka(), group, topic), 120_000, 'phase 2 to be stored');
    await producer.disconnect();
    const after = await share('after');
    lap('phase 2 stored');
    // 5. a new discovery over the traffic v2 scored: the held-out intents' gaps are marked closed
    const again = await discoverGaps(store, { since, write: true });
    expect(again.modelVersion).toBe(v2.version);
    const status = new Map(again.gaps.map((g) => [g.gapId, g.status]));

    const heldCases = cases.filter((c) => {
      const row = train.find((t) => t.text === c.query);
      return row && held.has(row.category);
    }).length;
    console.log(
      `loop on Banking77: ${HELD} held-out intents; exported ${cases.length} cases (${heldCases} of held-out intents); ` +
        `held-out uncovered ${(before.held.unc * 100).toFixed(1)}% (n=${before.held.n}, ${before.held.v}) → ${(after.held.unc * 100).toFixed(1)}% (n=${after.held.n}, ${after.held.v}); ` +
        `in-scope ${(before.inScope.unc * 100).toFixed(1)}% → ${(after.inScope.unc * 100).toFixed(1)}%; calibrated ${(v2.calibration.targetFalseUncoveredRate * 100).toFixed(0)}%; ` +
        `gaps: ${found.gaps.length} before (${heldGaps.length} of held-out intents), after: ${heldGaps.map((g) => `${g} ${status.get(g) ?? '?'}`).join(', ')}; ` +
        `${again.gaps.filter((g) => g.status !== 'closed').length} open gap(s) over ${again.totals.uncovered} uncovered`,
    );
    expect(heldGaps.length).toBeGreaterThan(0);
    expect(heldCases).toBeGreaterThan(0);
    for (const g of heldGaps) expect(status.get(g), g).toBe('closed');
    expect(before.held.v).toBe(v1.version);
    expect(after.held.v).toBe(v2.version);
    expect(Number(before.held.n)).toBe(HELD * 60);
    expect(Number(after.held.n)).toBe(HELD * 40);
    expect(before.held.unc).toBeGreaterThan(0.3);
    expect(after.held.unc).toBeLessThan(before.held.unc / 2);
    // near the calibrated rate: within what the in-scope intents themselves show on fresh queries (+10 points)
    expect(after.held.unc).toBeLessThan(Math.max(after.inScope.unc, v2.calibration.targetFalseUncoveredRate) + 0.1);
  }, capMs(300_000));
});
