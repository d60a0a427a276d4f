/**
 * Closing the loop, mechanically: `evalgap fit --add` (CLI) and hot reload of a newly deployed
 * coverage model in a running `evalgap run` (in-process, real broker, engine and model).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { installedEmbedding } from '../../src/embed/embedder.js';
import { loadCoverageModel } from '../../src/coverage/model.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { deployModel } from '../../src/ingest/model-watch.js';
import { startRun, type Running } from '../../src/cli/run.js';
import { sampleEvalSet, sampleTraffic, TOPICS } from '../../src/cli/sample-data.js';
import { groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor, capMs } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
const evalgap = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: capMs(300_000) });
const deploy = (modelDir: string, current: string) => deployModel(modelDir, current, { expectEmbedding: installedEmbedding(loadConfig().embed) });

let dir: string;
const kafka = testKafka();

beforeAll(() => {
  dir = tmpDir();
  const evalSet = sampleEvalSet(12);
  fs.writeFileSync(path.join(dir, 'evalset.jsonl'), evalSet.map((c) => JSON.stringify(c)).join('\n') + '\n');
  const r = evalgap('fit', path.join(dir, 'evalset.jsonl'), '--out', path.join(dir, 'v1'), '--k', '6');
  expect(r.status, r.stderr).toBe(0);
  // new cases on a topic the eval set never covered (gift cards), tagged as an exported gap would be
  const gift = TOPICS.find((t) => t.name === 'gift-cards')!;
  const adds = gift.templates.flatMap((tpl, i) =>
    ['gift card', 'e-gift card'].map((card, j) => ({
      id: `gap-gift-${i}-${j}`,
      query: tpl.replace('{card}', card).replace('{amount}', '50 dollar'),
      tags: ['gap:gift-cards'],
    })),
  );
  fs.writeFileSync(path.join(dir, 'adds.jsonl'), adds.map((c) => JSON.stringify(c)).join('\n') + '\n');
});

describe('evalgap fit --add', () => {
  it('refits on the old cases plus the new ones with the old parameters, keeping tags', () => {
    const r = evalgap('fit', '--add', path.join(dir, 'adds.jsonl'), '--model', path.join(dir, 'v1'), '--out', path.join(dir, 'v2'));
    expect(r.status, r.stderr).toBe(0);
    const v1 = loadCoverageModel(path.join(dir, 'v1'));
    const v2 = loadCoverageModel(path.join(dir, 'v2'));
    expect(r.stdout).toContain(`extending ${v1.manifest.version} (${v1.cases.length} cases)`);
    expect(v2.manifest.version).not.toBe(v1.manifest.version);
    expect(v2.cases.length).toBe(v1.cases.length + 10);
    // old cases first, in order; their tags and the new ones' kept
    expect(v2.cases.slice(0, v1.cases.length)).toEqual(v1.cases);
    expect(v1.cases[0].tags).toEqual(['shipping']);
    expect(v2.cases.filter((c) => c.tags?.[0] === 'gap:gift-cards')).toHaveLength(10);
    // the old model's parameters: k was fixed at 6, so it stays 6
    expect(v2.manifest.params.k).toBe(6);
    expect(v2.manifest.params.kMode).toBe('fixed');
    expect(v2.manifest.evalSet.source).toBe('evalset.jsonl + adds.jsonl');
    // adding the same cases again adds nothing, and says so
    const again = evalgap('fit', '--add', path.join(dir, 'adds.jsonl'), '--model', path.join(dir, 'v2'), '--out', path.join(dir, 'v3'));
    expect(again.status).toBe(2);
    expect(again.stderr).toContain('adds no case the model does not already hold');
    // a flag given overrides the old parameter
    const k8 = evalgap('fit', '--add', path.join(dir, 'adds.jsonl'), '--model', path.join(dir, 'v1'), '--k', '8', '--out', path.join(dir, 'v2k8'));
    expect(k8.status, k8.stderr).toBe(0);
    expect(loadCoverageModel(path.join(dir, 'v2k8')).manifest.params.k).toBe(8);
    const noModel = evalgap('fit', '--add', path.join(dir, 'adds.jsonl'));
    expect(noModel.status).toBe(2);
    expect(noModel.stderr).toContain('--add needs --model');
  });
});

describe('evalgap run: hot reload of a deployed model', () => {
  let running: Running | null = null;
  let cfg: Config;
  let topic = '';
  let group = '';
  const logLines: string[] = [];
  afterAll(async () => running?.stop());

  it('swaps to a newly deployed model mid-stream: no message lost or duplicated, later rows carry the new version; a bad model is refused', async () => {
    const v2Dir = path.join(dir, 'v2');
    if (!fs.existsSync(v2Dir)) {
      const r = evalgap('fit', '--add', path.join(dir, 'adds.jsonl'), '--model', path.join(dir, 'v1'), '--out', v2Dir);
      expect(r.status, r.stderr).toBe(0);
    }
    const v1 = loadCoverageModel(path.join(dir, 'v1')).manifest.version;
    const v2 = loadCoverageModel(v2Dir).manifest.version;
    const current = path.join(dir, 'coverage', 'current');
    const d = evalgap('deploy', path.join(dir, 'v1'), '--current', current);
    expect(d.status, d.stderr).toBe(0);
    expect(fs.readlinkSync(current)).toBe(path.join('..', 'v1'));

    topic = uniqueName('evalgap.test.reload');
    group = uniqueName('g');
    cfg = testConfig(path.join(dir, 'chdb'));
    cfg = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group }, ingest: { ...cfg.ingest, metricsPort: -1, maxBatchMessages: 40 } };
    const logger = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (logLines.push(...String(c).split('\n').filter(Boolean)), cb()) }));
    running = await startRun(cfg, current, logger, { modelPollMs: 300 });
    const store = running.store;
    // the start log names the embedded engine and its data folder (it used to say "store":"[unparseable URL]")
    const started = logLines.map((l) => JSON.parse(l)).find((l) => l.msg === 'evalgap run started');
    expect(started).toMatchObject({ engine: 'chdb (embedded)', dataDir: cfg.clickhouse.path });
    expect(JSON.stringify(started)).not.toContain('unparseable');
    const producer = kafka.producer();
    await producer.connect();
    const before = sampleTraffic(120, { seed: 5, idPrefix: `${topic}-a`, surpriseShare: 0.3 });
    const after = sampleTraffic(120, { seed: 6, idPrefix: `${topic}-b`, surpriseShare: 0.3 });
    // phase 1, and while it is being consumed, the new model is deployed
    await produceJson(producer, topic, before.slice(0, 60));
    await waitFor(async () => (await store.query<{ n: string }>(`SELECT count() AS n FROM ${store.t('requests')} WHERE kafka_topic = {t:String}`, { t: topic }))[0].n !== '0', 60_000, 'first rows');
    const produceRest = produceJson(producer, topic, before.slice(60));
    deploy(v2Dir, current);
    await produceRest;
    // the watcher (fs.watch or its periodic check) swaps the model in, without a restart
    await waitFor(async () => running!.model.current().version === v2, 20_000, 'the new model to be swapped in');
    expect(running.model.swaps).toBe(1);
    // phase 2, produced after the swap
    await produceJson(producer, topic, after);
    await waitFor(() => groupCaughtUp(kafka, group, topic), 90_000, 'the group to commit every offset');

    const rows = await store.query<{ request_id: string; model_version: string; kafka_offset: string }>(
      `SELECT request_id, model_version, kafka_offset FROM ${store.t('requests')} WHERE kafka_topic = {t:String} ORDER BY kafka_offset`,
      { t: topic },
    );
    expect(rows).toHaveLength(240);
    expect(new Set(rows.map((r) => r.request_id)).size).toBe(240);
    expect(rows.map((r) => Number(r.kafka_offset))).toEqual([...Array(240).keys()]);
    const version = new Map(rows.map((r) => [r.request_id, r.model_version]));
    for (const a of after) expect(version.get(a.request_id)).toBe(v2);
    expect(rows.filter((r) => r.model_version === v1).length).toBeGreaterThan(0);
    // once a row is scored by v2, every later offset is too: the swap happens between batches
    const firstV2 = rows.findIndex((r) => r.model_version === v2);
    expect(rows.slice(firstV2).every((r) => r.model_version === v2)).toBe(true);
    // v2's clusters are registered (the report and SQL join on them)
    const [reg] = await store.query<{ n: string }>(
      `SELECT count() AS n FROM ${store.t('coverage_clusters')} FINAL WHERE model_version = {v:String}`,
      { v: v2 },
    );
    expect(Number(reg.n)).toBe(loadCoverageModel(v2Dir).manifest.params.k);
    // gift-card queries: mostly uncovered under v1, mostly covered under v2
    const [gift] = await store.query<{ u1: number; u2: number }>(
      `SELECT avgIf(covered = 0, model_version = {v1:String}) AS u1, avgIf(covered = 0, model_version = {v2:String}) AS u2
       FROM ${store.t('requests')} WHERE kafka_topic = {t:String} AND JSONExtractString(metadata, 'topic_hint') = 'gift-cards'`,
      { t: topic, v1, v2 },
    );
    expect(gift.u1 - gift.u2).toBeGreaterThan(0.25);
    expect(gift.u2).toBeLessThan(0.3);

    // a bad model deployed by hand (the symlink repointed at a corrupt copy): refused, v2 kept
    const bad = path.join(dir, 'bad');
    fs.cpSync(v2Dir, bad, { recursive: true });
    const mf = JSON.parse(fs.readFileSync(path.join(bad, 'manifest.json'), 'utf8'));
    mf.version = 'cm-000000000bad';
    fs.writeFileSync(path.join(bad, 'manifest.json'), JSON.stringify(mf));
    fs.writeFileSync(path.join(bad, 'centroids.f32'), Buffer.alloc(16));
    fs.symlinkSync('../bad', `${current}.tmp`);
    fs.renameSync(`${current}.tmp`, current);
    expect(await running.model.check()).toBe('refused');
    expect(await running.model.check()).toBe('refused');
    expect(running.model.current().version).toBe(v2);
    // deploying a good model again is picked up
    deploy(path.join(dir, 'v1'), current);
    expect(await running.model.check()).toBe('swapped');
    expect(running.model.current().version).toBe(v1);
    await producer.disconnect();
  }, capMs(180_000));

  it('refuses a hostile model (checksums agree, values do not) written beside it: one log line, a metric, the old model keeps assigning; deploy refuses it too', async () => {
    if (!running) return expect.fail('the previous test did not start evalgap run');
    const current = path.join(dir, 'coverage', 'current');
    const inUse = running.model.current().version;
    // a copy of v2 with NaN centroids, a label out of range and a new version id; checksums recomputed
    const hostile = path.join(dir, 'hostile');
    fs.cpSync(path.join(dir, 'v2'), hostile, { recursive: true });
    const mfFile = path.join(hostile, 'manifest.json');
    const mf = JSON.parse(fs.readFileSync(mfFile, 'utf8'));
    const edit = (name: string, fn: (b: Buffer) => void) => {
      const b = fs.readFileSync(path.join(hostile, name));
      fn(b);
      fs.writeFileSync(path.join(hostile, name), b);
      mf.files[name].sha256 = createHash('sha256').update(b).digest('hex');
    };
    edit('centroids.f32', (b) => new Float32Array(b.buffer, b.byteOffset, b.length / 4).fill(NaN));
    edit('labels.i32', (b) => b.writeInt32LE(mf.params.k + 5, 0));
    mf.version = 'cm-0000000f00d5';
    fs.writeFileSync(mfFile, JSON.stringify(mf, null, 2));

    // evalgap deploy refuses it and leaves the symlink alone
    const before = fs.readlinkSync(current);
    const d = evalgap('deploy', hostile, '--current', current);
    expect(d.status).toBe(2);
    expect(d.stderr).toMatch(/holds values no fit produces; refused/);
    expect(d.stderr).toMatch(/centroids\.f32: \d+ of \d+ vectors hold NaN/);
    expect(d.stderr).toMatch(/labels\.i32: 1 of \d+ labels are outside/);
    expect(d.stderr).toMatch(/version cm-0000000f00d5 is not the one its fit inputs give/);
    expect(d.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(fs.readlinkSync(current)).toBe(before);
    // and one fitted with another embedding model (here: the fp32 graph, the run uses int8), as evalgap run would
    const otherEnv = spawnSync(process.execPath, [CLI, 'deploy', path.join(dir, 'v2'), '--current', current], {
      encoding: 'utf8',
      env: { ...process.env, EVALGAP_EMBED_PRECISION: 'fp32' },
    });
    expect(otherEnv.status).toBe(2);
    expect(otherEnv.stderr).toMatch(/fitted with embedding model .* but the installed one is .*fitted with int8 embeddings, these are fp32/);
    expect(fs.readlinkSync(current)).toBe(before);

    // written beside the running consumer by hand (the symlink repointed): the watcher refuses it on its own
    const metric = async () => {
      const text = await running!.service.metrics.registry.getSingleMetricAsString('evalgap_coverage_model_refused_total');
      return Number(/evalgap_coverage_model_refused_total (\d+)/.exec(text)?.[1] ?? 0);
    };
    const refusedBefore = await metric();
    const linesBefore = logLines.length;
    fs.symlinkSync('../hostile', `${current}.tmp`);
    fs.renameSync(`${current}.tmp`, current);
    await waitFor(async () => (await metric()) === refusedBefore + 1, 30_000, 'the hostile model to be refused');
    expect(running.model.current().version).toBe(inUse);
    const gauge = await running.service.metrics.registry.getSingleMetricAsString('evalgap_coverage_model_refused');
    expect(gauge).toMatch(/^evalgap_coverage_model_refused 1$/m);
    // one log line, naming the reason and the model kept; a later check neither logs nor counts again
    expect(await running.model.check()).toBe('refused');
    expect(await metric()).toBe(refusedBefore + 1);
    const lines = logLines.slice(linesBefore).map((l) => JSON.parse(l)).filter((l) => /refused/.test(l.msg));
    expect(lines).toHaveLength(1);
    expect(lines[0].msg).toBe('new coverage model refused; keeping the one in use');
    expect(lines[0].keeping).toBe(inUse);
    expect(lines[0].reason).toMatch(/vectors hold NaN/);

    // the old model keeps assigning: new traffic is stored, scored by it, and not all uncovered
    const producer = kafka.producer();
    await producer.connect();
    const more = sampleTraffic(60, { seed: 9, idPrefix: `${topic}-c`, surpriseShare: 0.3 });
    await produceJson(producer, topic, more);
    await producer.disconnect();
    await waitFor(() => groupCaughtUp(kafka, group, topic), 90_000, 'the group to commit every offset');
    const rows = await running.store.query<{ model_version: string; covered: number }>(
      `SELECT model_version, covered FROM ${running.store.t('requests')} WHERE kafka_topic = {t:String} AND startsWith(request_id, {p:String})`,
      { t: topic, p: `${topic}-c` },
    );
    expect(rows).toHaveLength(60);
    expect(rows.every((r) => r.model_version === inUse)).toBe(true);
    expect(rows.filter((r) => Number(r.covered) === 1).length).toBeGreaterThan(20);
    // pointed back at a sound model: the gauge clears
    deploy(path.join(dir, 'v2'), current);
    await waitFor(async () => /^evalgap_coverage_model_refused 0$/m.test(await running!.service.metrics.registry.getSingleMetricAsString('evalgap_coverage_model_refused')), capMs(30_000), 'the refused gauge to clear');
  }, capMs(180_000));
});
