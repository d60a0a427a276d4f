/**
 * `evalgap results`, `estimate` and `plan` against the real engine (embedded chdb), the real model
 * and rows stored by the real pipeline (`evalgap run` streaming from the real broker). The eval set
 * is the bundled sample (six topics); its results fail 70% of one topic ("returns") and 5% of the
 * rest; production leans on that topic (and has 20% untested traffic). A second agent's traffic is
 * stored with redacted text: its plan is numbers only.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { BANDS } from '../../src/coverage/bands.js';
import { parseEvalSet } from '../../src/coverage/evalset.js';
import { loadCoverageModel } from '../../src/coverage/model.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { startRun } from '../../src/cli/run.js';
import { parseSince, writeReport } from '../../src/cli/report.js';
import { sampleEvalSet, sampleTraffic } from '../../src/cli/sample-data.js';
import { Store } from '../../src/store/store.js';
import { fitSampleModel, groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const exec = promisify(execFile);
const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
const kafka = testKafka();
let dir: string;
let cfg: Config;
let env: NodeJS.ProcessEnv;
const BAD = 'returns';

const cli = (...args: string[]) => exec('node', [CLI, ...args], { env, maxBuffer: 1 << 24 });
const cliFails = (...args: string[]) => cli(...args).then(
  () => {
    throw new Error(`expected evalgap ${args[0]} to fail`);
  },
  (e: { code: number; stderr: string; stdout: string }) => e,
);

async function withStore<T>(fn: (s: Store) => Promise<T>): Promise<T> {
  const s = await Store.open(cfg.clickhouse);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

async function stream(topic: string, values: unknown[], redactText: boolean, base: Config = cfg) {
  const group = uniqueName('g');
  const c: Config = {
    ...base,
    kafka: { ...base.kafka, topic, dlqTopic: `${topic}.dlq`, group },
    ingest: { ...base.ingest, metricsPort: -1, redactText, redactKey: redactText ? 'k'.repeat(32) : undefined },
  };
  const p = kafka.producer();
  await p.connect();
  await produceJson(p, topic, values);
  await p.disconnect();
  const running = await startRun(c, path.join(dir, 'model'), createLogger('silent'));
  try {
    await waitFor(() => groupCaughtUp(kafka, group, topic), 120_000, 'the group to commit every offset');
  } finally {
    await running.stop();
  }
}

/** The eval results: case i of topic t passes unless (t = returns and i mod 10 < 7) or (i mod 20 = 0). */
const passes = (id: string) => {
  const [t, i] = [id.slice(0, id.lastIndexOf('-')), Number(id.slice(id.lastIndexOf('-') + 1))];
  return t === BAD ? i % 10 >= 7 : i % 20 !== 0;
};

beforeAll(async () => {
  dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  env = { ...process.env, EVALGAP_DATA_DIR: cfg.clickhouse.path, EVALGAP_LOG_LEVEL: 'warn' };
  await fitSampleModel(path.join(dir, 'model'));
  // production: 'returns' over-represented (each of its requests kept, the others' one in three), 20% untested
  const topic = uniqueName('evalgap.test.estimate');
  const all = sampleTraffic(900, { seed: 31, surpriseShare: 0.2, idPrefix: `${topic}-p`, start: Date.now() - 3 * 3_600_000, stepMs: 10_000 });
  const kept = all.filter((t, i) => t.topic_hint === BAD || t.topic_hint === 'data-privacy' || t.topic_hint === 'gift-cards' || i % 3 === 0);
  await stream(topic, kept.map(({ topic_hint: _t, ...m }) => m), false);
  const secret = sampleTraffic(40, { seed: 32, surpriseShare: 0, idPrefix: `${topic}-s`, start: Date.now() - 3_600_000 }).map(({ topic_hint: _t, ...m }) => ({ ...m, agent: 'private-bot' }));
  await stream(`${topic}.redacted`, secret, true);
}, 300_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('evalgap results', () => {
  it('refuses a file with a result for no case, or a malformed line, and stores nothing', async () => {
    const f = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(f, ['{"id": "shipping-0", "passed": true}', '{"id": "no-such-case", "passed": false}', '{"id": "shipping-1", "score": 2}'].join('\n') + '\n');
    const e = await cliFails('results', f, '--model', path.join(dir, 'model'));
    expect(e.code).toBe(2);
    expect(e.stderr).toContain('bad.jsonl:3');
    expect(e.stderr).toContain('"no-such-case" (line 2)');
    expect(e.stderr).toContain('nothing stored');
    const [n] = await withStore((s) => s.query<{ n: string }>(`SELECT count() AS n FROM ${s.t('eval_results')}`));
    expect(Number(n.n)).toBe(0);
  });

  it('stores every result with its case cluster, model version and run id; the same file again adds no row', async () => {
    // the model's cases (the sample set has repeated texts, which fit keeps once)
    const cases = loadCoverageModel(path.join(dir, 'model')).cases;
    const f = path.join(dir, 'results.jsonl');
    fs.writeFileSync(
      f,
      cases.map((c, i) => JSON.stringify({ id: c.id, passed: passes(c.id), scores: { faithfulness: i % 2 ? 1 : 0.5 } })).join('\n') + '\n',
    );
    const out = await cli('results', f, '--model', path.join(dir, 'model'), '--run-id', 'nightly-1');
    expect(out.stdout).toContain(`stored ${cases.length} result(s) as eval run nightly-1`);
    await cli('results', f, '--model', path.join(dir, 'model'), '--run-id', 'nightly-1');
    const m = loadCoverageModel(path.join(dir, 'model'));
    expect(m.manifest.evalSet.cases).toBeGreaterThan(cases.length);
    const dup = path.join(dir, 'dup.jsonl');
    const dropped = sampleEvalSet(30).find((c) => !m.cases.some((x) => x.id === c.id))!;
    fs.writeFileSync(dup, JSON.stringify({ id: dropped.id, passed: true }) + '\n');
    expect((await cliFails('results', dup, '--model', path.join(dir, 'model'))).stderr).toContain(`"${dropped.id}" (line 1)`);
    const rows = await withStore((s) =>
      s.query<{ case_id: string; cluster: number; value: number; model_version: string }>(
        `SELECT case_id, cluster, value, model_version FROM ${s.t('eval_results')} FINAL WHERE run_id = 'nightly-1'`,
      ),
    );
    expect(rows).toHaveLength(cases.length);
    const clusterOf = new Map(m.cases.map((c, i) => [c.id, m.labels[i]]));
    for (const r of rows) {
      expect(r.model_version).toBe(m.manifest.version);
      expect(Number(r.cluster)).toBe(clusterOf.get(r.case_id));
      expect(Number(r.value)).toBe(passes(r.case_id) ? 1 : 0);
    }
  });
});

describe('evalgap estimate', () => {
  it('reweights the eval score to the traffic, reports the untested share with its bounds, and stores one row per day', async () => {
    const out = await cli('estimate', '--since', '1d', '--format', 'json');
    const rep = JSON.parse(out.stdout);
    const e = rep.estimate;
    const cases = loadCoverageModel(path.join(dir, 'model')).cases;
    const raw = cases.filter((c) => passes(c.id)).length / cases.length;
    expect(e.raw).toBeCloseTo(raw, 9);
    if (process.env.EVALGAP_TEST_PRINT) console.log({ raw, estimate: e.estimate, interval: e.interval, k: e.clusters.length });
    expect(rep.runId).toBe('nightly-1');
    // reference: the same post-stratification from the stored rows (no shrinkage) — the estimate sits near it
    const m = loadCoverageModel(path.join(dir, 'model'));
    const perCluster = new Map<number, { n: number; s: number }>();
    m.cases.forEach((c, i) => {
      const x = perCluster.get(m.labels[i]) ?? { n: 0, s: 0 };
      x.n++;
      x.s += passes(c.id) ? 1 : 0;
      perCluster.set(m.labels[i], x);
    });
    const traffic = await withStore((s) =>
      s.query<{ cluster: number; cov: string; n: string }>(
        `SELECT cluster, countIf(covered = 1) AS cov, count() AS n FROM ${s.t('requests')} WHERE agent != 'private-bot' GROUP BY cluster`,
      ),
    );
    const all = await withStore((s) => s.query<{ n: string; unc: string }>(`SELECT count() AS n, countIf(covered = 0) AS unc FROM ${s.t('requests')}`));
    const covered = traffic.reduce((s, t) => s + Number(t.cov), 0);
    // the private agent's rows count too (the estimate is over all agents)
    const privateCov = Number(all[0].n) - Number(all[0].unc) - covered;
    expect(e.requests).toBe(Number(all[0].n));
    expect(e.untested).toBeCloseTo(Number(all[0].unc) / Number(all[0].n), 9);
    expect(e.untested).toBeGreaterThan(0.1);
    expect(privateCov).toBeGreaterThan(0);
    const plugIn = e.clusters.reduce((s: number, c: { cluster: number; prodShare: number }) => {
      const x = perCluster.get(c.cluster)!;
      return s + c.prodShare * (x.s / x.n);
    }, 0);
    // the within-cluster term's correction apart; its lean is fitted on the deepest depth band's requests (stored by evalgap run)
    expect(e.withinCluster.fittedOn).toBe('deepest band');
    // the unrepresented term, sized from the stored bands: û within the covered share outside the deepest band
    const bands = await withStore((s) =>
      s.query<{ cov: string; deep: string }>(`SELECT countIf(covered = 1) AS cov, countIf(covered = 1 AND coverage_band = ${BANDS - 1}) AS deep FROM ${s.t('requests')}`),
    );
    const shallowShare = 1 - Number(bands[0].deep) / Number(bands[0].cov);
    expect(shallowShare).toBeGreaterThan(0);
    const un = e.withinCluster.unrepresented;
    expect(un.share).toBeGreaterThanOrEqual(0);
    expect(un.share).toBeLessThanOrEqual(shallowShare + 1e-12);
    expect(un.sd).toBeCloseTo(un.share * Math.abs(e.withinCluster.slope) * un.topicSpread ** 2, 12);
    if (process.env.EVALGAP_TEST_PRINT) console.log({ shallowShare, unrepresented: un });
    expect(Math.abs(e.estimate - e.withinCluster.correction - plugIn)).toBeLessThan(0.03);
    expect(e.estimate).toBeLessThan(raw - 0.05); // production leans on the failing topic
    expect(e.interval[0]).toBeLessThan(e.estimate);
    expect(e.interval[1]).toBeGreaterThan(e.estimate);
    expect(e.designEffect).toBeGreaterThan(1); // sample traffic has sessions of 3 turns
    const b = e.bounds;
    expect(b.allFail.estimate).toBeLessThan(b.nearest.estimate);
    expect(b.nearest.estimate).toBeLessThan(b.allPass.estimate);
    expect(b.allFail.estimate).toBeCloseTo((1 - e.untested) * e.estimate, 9);
    // per agent: both sample agents and the private one
    expect(rep.agents.map((a: { agent: string }) => a.agent).sort()).toEqual(['checkout-assistant', 'private-bot', 'support-bot']);
    const stored = await withStore((s) =>
      s.query<{ day: string; agent: string; estimate: number; raw_score: number; requests: string }>(
        `SELECT toString(day) AS day, agent, estimate, raw_score, requests FROM ${s.t('production_weighted_score')} FINAL ORDER BY day`,
      ),
    );
    expect(stored.map((x) => x.day)).toEqual(rep.days.map((d: { day: string }) => d.day));
    expect(stored.every((x) => x.agent === '')).toBe(true);
    expect(stored.reduce((s, x) => s + Number(x.requests), 0)).toBe(e.requests);
    expect(Number(stored[0].raw_score)).toBeCloseTo(raw, 9);
  });

  it('prints the one-line answer, the clusters of the gap, and reads a per-metric score with --metric', async () => {
    const out = await cli('estimate', '--since', '1d', '--agent', 'support-bot', '--no-store');
    expect(out.stdout).toMatch(/your eval says \d+\.\d%; on this traffic it would be \d+\.\d% \[\d+\.\d%, \d+\.\d%\] \(90% interval\), and \d+\.\d% of traffic is untested/);
    expect(out.stdout).toContain('clusters by their part in the gap');
    if (process.env.EVALGAP_TEST_PRINT) console.log(out.stdout);
    const j = JSON.parse((await cli('estimate', '--since', '1d', '--metric', 'faithfulness', '--format', 'json', '--no-store')).stdout);
    expect(j.estimate.raw).toBeCloseTo(0.75, 9);
    const e = await cliFails('estimate', '--since', '1d', '--metric', 'nope');
    expect(e.stderr).toContain('has no metric "nope"');
    // the within-cluster term: production leans on the failing topic (slope < 0) and the estimate moves down
    // from plain post-stratification, whose interval (--within-cluster off) is the sampling interval
    const tilt = JSON.parse((await cli('estimate', '--since', '1d', '--format', 'json', '--no-store')).stdout).estimate;
    const plain = JSON.parse((await cli('estimate', '--since', '1d', '--format', 'json', '--no-store', '--within-cluster', 'off')).stdout).estimate;
    expect(tilt.withinCluster.slope).toBeLessThan(0);
    expect(tilt.estimate).toBeLessThan(plain.estimate);
    expect(tilt.estimate - plain.estimate).toBeCloseTo(tilt.withinCluster.correction, 9);
    expect(plain.withinCluster).toBeNull();
    expect(plain.interval).toEqual(plain.samplingInterval);
    expect(tilt.interval[1] - tilt.interval[0]).toBeGreaterThan(plain.interval[1] - plain.interval[0]);
    // the unrepresented term is said in the text, with the share and sd the JSON reports
    const text = (await cli('estimate', '--since', '1d', '--no-store')).stdout;
    expect(text).toContain(`sized at ${(100 * tilt.withinCluster.unrepresented.share).toFixed(1)}% from the lean in the shallower depth bands`);
    expect(text).toContain(`adds an error of ${(100 * tilt.withinCluster.unrepresented.sd).toFixed(1)} points (sd)`);
  });
});

describe('evalgap plan', () => {
  it('spends the budget by Neyman allocation, most on the failing, busy cluster, with production queries to start from', async () => {
    const j = JSON.parse((await cli('plan', '--budget', '30', '--since', '1d', '--covered-only', '--format', 'json')).stdout);
    expect(j.items.reduce((s: number, x: { cases: number }) => s + x.cases, 0)).toBe(30);
    expect(j.seAfter).toBeLessThan(j.seBefore);
    const top = [...j.items].sort((a, b) => b.cases - a.cases)[0];
    expect(top.passRate).toBeLessThan(0.6);
    const ex: string[] = j.examples[`cluster:${top.id}`];
    expect(ex.length).toBeGreaterThan(0);
    expect(new Set(ex).size).toBe(ex.length);
    // the untested traffic takes part without --covered-only (no gaps stored yet: one stratum)
    const all = JSON.parse((await cli('plan', '--budget', '30', '--since', '1d', '--format', 'json')).stdout);
    expect(all.items.find((x: { kind: string }) => x.kind === 'uncovered').cases).toBeGreaterThan(0);
  });

  it('without a stored gap: the untested stratum takes its examples and candidate cases from the period\'s uncovered requests', async () => {
    const f = path.join(dir, 'plan-untested.jsonl');
    const out = await cli('plan', '--budget', '30', '--since', '1d', '--out', f);
    if (process.env.EVALGAP_TEST_PRINT) console.log(out.stdout, out.stderr);
    const j = JSON.parse((await cli('plan', '--budget', '30', '--since', '1d', '--format', 'json')).stdout);
    const untested = j.items.find((x: { kind: string }) => x.kind === 'uncovered');
    expect(untested.cases).toBeGreaterThan(0);
    expect(j.examples['uncovered:'].length).toBeGreaterThan(0);
    expect(j.noExamples['uncovered:']).toBeUndefined();
    expect(out.stdout).toMatch(/\n {2}untested \(untested traffic[^\n]*\n {4}- /);
    const lines = fs.readFileSync(f, 'utf8');
    expect(parseEvalSet(lines, 'jsonl').errors).toEqual([]);
    const cases = lines.trim().split('\n').map((l) => JSON.parse(l) as { id: string; query: string; tags: string[]; plan_kind: string });
    const mine = cases.filter((c) => c.plan_kind === 'uncovered');
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.length).toBeLessThanOrEqual(untested.cases);
    expect(mine[0].tags).toEqual(['untested']);
    expect(new Set(mine.map((c) => c.query.toLowerCase().replace(/\s+/g, ' ').trim())).size).toBe(mine.length);
    expect(out.stderr).toContain(`wrote ${cases.length} candidate case(s)`);
    // each is the text of an uncovered, unredacted request of the period
    const texts = new Set(
      (await withStore((s) => s.query<{ q: string }>(`SELECT query AS q FROM ${s.t('requests')} WHERE covered = 0 AND query_redacted = 0 AND ts >= now() - INTERVAL 1 DAY`))).map((x) => x.q),
    );
    for (const c of mine) expect(texts.has(c.query)).toBe(true);
  });

  it('with stored gaps: each gap is a stratum of its own (σ = 0.5, no cases), with its examples', async () => {
    await cli('gaps', '--since', '1d');
    const out = await cli('plan', '--budget', '40', '--since', '1d');
    if (process.env.EVALGAP_TEST_PRINT) console.log(out.stdout);
    const j = JSON.parse((await cli('plan', '--budget', '40', '--since', '1d', '--format', 'json')).stdout);
    const gaps = j.items.filter((x: { kind: string }) => x.kind === 'gap');
    expect(gaps.length).toBeGreaterThan(0);
    expect(j.items.some((x: { kind: string }) => x.kind === 'uncovered')).toBe(false);
    for (const g of gaps) {
      expect(g.sigma).toBe(0.5);
      expect(g.existing).toBe(0);
    }
    const top = gaps.sort((a: { cases: number }, b: { cases: number }) => b.cases - a.cases)[0];
    expect(top.cases).toBeGreaterThan(0);
    expect(j.examples[`gap:${top.id}`].length).toBeGreaterThan(0);
    expect(out.stdout).toContain(`gap ${top.id}`);
  });

  it('writes candidate cases that evalgap fit reads with --out', async () => {
    const f = path.join(dir, 'plan.jsonl');
    await cli('plan', '--budget', '12', '--since', '1d', '--covered-only', '--out', f);
    const parsed = parseEvalSet(fs.readFileSync(f, 'utf8'), 'jsonl');
    expect(parsed.errors).toEqual([]);
    expect(parsed.cases.length).toBeGreaterThan(0);
    expect(parsed.cases.length).toBeLessThanOrEqual(12);
  });

  it('export-gaps --plan writes the same candidate cases as plan --out (after its own gap discovery)', async () => {
    const viaPlan = path.join(dir, 'plan-all.jsonl');
    const viaExport = path.join(dir, 'export-plan.jsonl');
    await cli('gaps', '--since', '1d');
    await cli('plan', '--budget', '25', '--since', '1d', '--out', viaPlan);
    const out = await cli('export-gaps', '--plan', '--budget', '25', '--since', '1d', '--out', viaExport);
    expect(out.stdout).toContain('candidate eval case(s) of a plan for 25');
    // the next step as the docs give it (coverage-model.md): fit --add onto the model, then deploy
    expect(out.stdout).toContain(`review them, then: evalgap fit --add ${viaExport} --model <your model folder> --out <a new model folder>, and evalgap deploy it`);
    const lines = fs.readFileSync(viaExport, 'utf8');
    const parsed = parseEvalSet(lines, 'jsonl');
    expect(parsed.errors).toEqual([]);
    expect(parsed.cases.length).toBeGreaterThan(0);
    expect(parsed.cases.length).toBeLessThanOrEqual(25);
    // both a cluster's and a gap's candidates (export-gaps alone writes only gaps')
    const kinds = new Set(lines.trim().split('\n').map((l) => JSON.parse(l).plan_kind));
    expect(kinds.has('cluster')).toBe(true);
    expect(kinds.has('gap')).toBe(true);
    expect(lines).toBe(fs.readFileSync(viaPlan, 'utf8'));
    const e = await cliFails('export-gaps', '--plan', '--since', '1d', '--out', viaExport);
    expect(e.stderr).toContain('--plan needs --budget');
  });

  it('on redacted traffic: numbers only, no example', async () => {
    const out = await cli('plan', '--budget', '10', '--since', '1d', '--agent', 'private-bot', '--covered-only');
    expect(out.stdout).toContain('plan for 10 new eval case(s)');
    expect(out.stdout).toContain('no example queries');
    expect(out.stdout).not.toMatch(/[0-9a-f]{64}/);
  });
});

describe('evalgap plan on a second store: eval results, no traffic, then only redacted traffic', () => {
  const emptyEnv = () => ({ ...env, EVALGAP_DATA_DIR: path.join(dir, 'empty-chdb') });
  const run = (...args: string[]) => exec('node', [CLI, ...args], { env: emptyEnv(), maxBuffer: 1 << 24 });

  it('without traffic: says so in one line and exits 2 instead of printing a plan for nothing; estimate says there is no covered traffic', async () => {
    const f = path.join(dir, 'results-empty.jsonl');
    fs.writeFileSync(f, loadCoverageModel(path.join(dir, 'model')).cases.map((c) => JSON.stringify({ id: c.id, passed: passes(c.id) })).join('\n') + '\n');
    await run('results', f, '--model', path.join(dir, 'model'));
    expect((await run('estimate', '--since', '1d', '--no-store')).stdout).toContain('no covered production traffic in this period');
    const out = path.join(dir, 'plan-empty.jsonl');
    for (const args of [['plan', '--budget', '10', '--since', '1d'], ['plan', '--budget', '10', '--since', '1d', '--format', 'json', '--out', out], ['export-gaps', '--plan', '--budget', '10', '--since', '1d', '--out', out]]) {
      const e = await run(...args).then(
        () => {
          throw new Error(`expected evalgap ${args.join(' ')} to fail`);
        },
        (x: { code: number; stderr: string; stdout: string }) => x,
      );
      expect(e.code).toBe(2);
      expect(e.stdout).not.toContain('plan for 10');
      expect(e.stderr.trim().split('\n').filter((l) => l.startsWith('evalgap: '))).toEqual([expect.stringContaining('no production traffic in this period to plan eval cases for')]);
    }
    expect(fs.existsSync(out)).toBe(false);
  });

  it('with only redacted traffic and no gap stored: each planned stratum without an example says why, and --out says why it wrote none', async () => {
    const topic = uniqueName('evalgap.test.estimate.redacted-untested');
    const values = sampleTraffic(40, { seed: 33, surpriseShare: 0.5, idPrefix: `${topic}-r`, start: Date.now() - 3_600_000 }).map(({ topic_hint: _t, ...m }) => m);
    await stream(topic, values, true, testConfig(path.join(dir, 'empty-chdb')));
    const f = path.join(dir, 'plan-redacted.jsonl');
    const out = await run('plan', '--budget', '10', '--since', '1d', '--out', f);
    if (process.env.EVALGAP_TEST_PRINT) console.log(out.stdout, out.stderr);
    const j = JSON.parse((await run('plan', '--budget', '10', '--since', '1d', '--format', 'json')).stdout);
    const untested = j.items.find((x: { kind: string }) => x.kind === 'uncovered');
    expect(untested.cases).toBeGreaterThan(0);
    expect(j.noExamples['uncovered:']).toMatch(/^its \d+ request\(s\) are stored with redacted text$/);
    expect(out.stdout).toContain('no example queries for:');
    expect(out.stdout).toMatch(/\n {2}untested \(untested traffic[^\n]*\): its \d+ request\(s\) are stored with redacted text\n/);
    expect(out.stdout).not.toContain('the period has none');
    expect(out.stdout).not.toMatch(/[0-9a-f]{64}/);
    expect(out.stderr).toContain(`wrote 0 candidate case(s) to ${f}`);
    expect(out.stderr).toContain('no candidate for 10 of the 10 planned case(s) (');
    expect(out.stderr).toMatch(/untested: its \d+ request\(s\) are stored with redacted text/);
    expect(fs.readFileSync(f, 'utf8')).toBe('');
  });
});

describe('evalgap report', () => {
  it('shows the reweighted score beside the raw one, with the untested share and the stored daily rows', async () => {
    const out = path.join(dir, 'report.html');
    const d = await withStore((s) => writeReport(s, out, { since: parseSince('1d'), sinceText: '1d', modelPath: path.join(dir, 'model'), embedder: null, mapSample: 0 }));
    const p = d.productionScore!;
    expect(p.runId).toBe('nightly-1');
    expect(p.estimate!).toBeLessThan(p.raw - 0.05);
    expect(p.days.length).toBeGreaterThan(0);
    const html = fs.readFileSync(out, 'utf8');
    expect(html).toContain('Eval score on this traffic');
    expect(html).toContain(p.headline.replace(/&/g, '&amp;'));
    expect(html).toMatch(/your eval says \d+\.\d%; on this traffic it would be/);
  });
});

describe('evalgap results: a run id loaded again with another file replaces the whole run (new-user audit)', () => {
  const modelDir = () => path.join(dir, 'model');
  const evalOf = async (run: string, e: NodeJS.ProcessEnv = env) =>
    JSON.parse((await exec('node', [CLI, 'estimate', '--since', '1d', '--run-id', run, '--format', 'json', '--no-store'], { env: e, maxBuffer: 1 << 24 })).stdout).estimate as { raw: number; evalCases: number };
  const viewRows = async (run: string) =>
    JSON.parse((await cli('sql', `SELECT count() AS n, sum(value) AS s FROM evalgap.latest_eval_results WHERE run_id = '${run}'`, '--format', 'json')).stdout)[0] as { n: string; s: number };
  const writeResults = (name: string, cases: { id: string }[], passed: (id: string) => boolean) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, cases.map((c) => JSON.stringify({ id: c.id, passed: passed(c.id) })).join('\n') + '\n');
    return f;
  };

  it("estimate, plan, report, the monitor's pass rates and the view latest_eval_results read only the new file; the same file again changes nothing", async () => {
    const { evalPassRates } = await import('../../src/estimate/run.js');
    const m = loadCoverageModel(modelDir());
    const ids = m.manifest.clusters.map((c) => c.id);
    const all = writeResults('reuse-all-passed.jsonl', m.cases, () => true);
    const ten = writeResults('reuse-ten-failed.jsonl', m.cases.slice(0, 10), () => false);
    await cli('results', all, '--model', modelDir(), '--run-id', 'reused');
    expect(await evalOf('reused')).toMatchObject({ raw: 1, evalCases: m.cases.length });
    const ratesBefore = (await withStore((s) => evalPassRates(s, m.manifest.version, ids)))!;
    const out = await cli('results', ten, '--model', modelDir(), '--run-id', 'reused');
    expect(out.stdout).toContain(`stored 10 result(s) as eval run reused of coverage model ${m.manifest.version}: eval score 0.0% over 10 case(s)`);
    expect(out.stdout).toContain(`they replace the run's previous ${m.cases.length} result(s)`);
    expect(await evalOf('reused')).toMatchObject({ raw: 0, evalCases: 10 });
    expect(await viewRows('reused')).toEqual({ n: '10', s: 0 });
    const plan = JSON.parse((await cli('plan', '--budget', '10', '--since', '1d', '--run-id', 'reused', '--covered-only', '--format', 'json')).stdout);
    expect(plan.headline).toMatch(/^your eval says 0\.0%/);
    // the latest loaded run is the default one: the report and the monitor's weighted_score rule read it
    const rep = await withStore((s) => writeReport(s, path.join(dir, 'report-reused.html'), { since: parseSince('1d'), sinceText: '1d', modelPath: modelDir(), embedder: null, mapSample: 0 }));
    expect(rep.productionScore).toMatchObject({ runId: 'reused', raw: 0 });
    const ratesAfter = (await withStore((s) => evalPassRates(s, m.manifest.version, ids)))!;
    for (const c of ids) expect(ratesAfter[c]).toBeLessThan(ratesBefore[c]);
    // the same file again: nothing written, nothing changed
    const loads = () => withStore((s) => s.query<{ n: string }>(`SELECT count() AS n FROM ${s.t('eval_loads')} FINAL WHERE run_id = 'reused'`));
    const before = await loads();
    const again = await cli('results', ten, '--model', modelDir(), '--run-id', 'reused');
    expect(again.stdout).toContain('already holds these 10 result(s) (the same file): nothing changed');
    expect(await loads()).toEqual(before);
    expect(await evalOf('reused')).toMatchObject({ raw: 0, evalCases: 10 });
    // and the first file again replaces the second
    await cli('results', all, '--model', modelDir(), '--run-id', 'reused');
    expect(await evalOf('reused')).toMatchObject({ raw: 1, evalCases: m.cases.length });
    expect(await viewRows('reused')).toEqual({ n: String(m.cases.length), s: m.cases.length });
  });

  it('a load stopped before its commit (a crash) is never read; the same file loaded again completes it', async () => {
    const { createHash } = await import('node:crypto');
    const m = loadCoverageModel(modelDir());
    const twenty = writeResults('reuse-twenty-failed.jsonl', m.cases.slice(0, 20), () => false);
    const loadId = createHash('sha256').update(fs.readFileSync(twenty)).digest('hex').slice(0, 16);
    // what a crash after the load's first rows leaves: 5 of its 20 rows stored, no commit
    await withStore((s) =>
      s.insertJson(
        'eval_results',
        m.cases.slice(0, 5).map((c) => ({ model_version: m.manifest.version, run_id: 'reused', load_id: loadId, case_id: c.id, cluster: m.labels[m.cases.indexOf(c)], tags: c.tags, passed: 0, score: null, scores: {}, value: 0, source: 'reuse-twenty-failed.jsonl' })),
      ),
    );
    expect(await evalOf('reused')).toMatchObject({ raw: 1, evalCases: m.cases.length });
    expect(await viewRows('reused')).toEqual({ n: String(m.cases.length), s: m.cases.length });
    const out = await cli('results', twenty, '--model', modelDir(), '--run-id', 'reused');
    expect(out.stdout).toContain('stored 20 result(s) as eval run reused');
    expect(await evalOf('reused')).toMatchObject({ raw: 0, evalCases: 20 });
    expect(await viewRows('reused')).toEqual({ n: '20', s: 0 });
  });

  it('a store written before migration 20 reads its runs as they were stored, and another file replaces such a run whole', async () => {
    const { MIGRATIONS } = await import('../../src/store/migrations.js');
    const m = loadCoverageModel(modelDir());
    const legacy = path.join(dir, 'legacy-chdb');
    const old = await Store.open(testConfig(legacy).clickhouse, { migrate: false });
    try {
      await old.migrate(MIGRATIONS.filter((x) => x.version < 20));
      // rows as evalgap results stored them before: no load id, no eval_loads
      await old.insertJson(
        'eval_results',
        m.cases.map((c, i) => ({ model_version: m.manifest.version, run_id: 'before', case_id: c.id, cluster: m.labels[i], tags: c.tags, passed: passes(c.id) ? 1 : 0, score: null, scores: {}, value: passes(c.id) ? 1 : 0, source: 'old.jsonl' })),
      );
    } finally {
      await old.close();
    }
    const lenv = { ...env, EVALGAP_DATA_DIR: legacy };
    const raw = m.cases.filter((c) => passes(c.id)).length / m.cases.length;
    const e = await evalOf('before', lenv);
    expect(e.evalCases).toBe(m.cases.length);
    expect(e.raw).toBeCloseTo(raw, 9);
    const ten = writeResults('legacy-ten-failed.jsonl', m.cases.slice(0, 10), () => false);
    await exec('node', [CLI, 'results', ten, '--model', modelDir(), '--run-id', 'before'], { env: lenv });
    expect(await evalOf('before', lenv)).toMatchObject({ raw: 0, evalCases: 10 });
  });
});

describe('export-gaps --plan: the per-stratum lines agree with what was written (new-user audit)', () => {
  it('on redacted traffic: "wrote 0", and each stratum says it wrote 0 of what was planned', async () => {
    const f = path.join(dir, 'export-plan-redacted.jsonl');
    const out = await exec('node', [CLI, 'export-gaps', '--plan', '--budget', '10', '--since', '1d', '--out', f], { env: { ...env, EVALGAP_DATA_DIR: path.join(dir, 'empty-chdb') }, maxBuffer: 1 << 24 });
    if (process.env.EVALGAP_TEST_PRINT) console.log(out.stdout);
    expect(out.stdout).toContain(`wrote 0 candidate eval case(s) of a plan for 10 to ${f}`);
    const lines = out.stdout.split('\n').filter((l) => /^ {2}(gap|cluster|untested)\b/.test(l));
    expect(lines.length).toBeGreaterThan(0);
    let planned = 0;
    for (const l of lines) {
      const x = l.match(/ wrote (\d+) case\(s\), planned (\d+)/);
      expect(x, l).not.toBeNull();
      expect(Number(x![1])).toBe(0);
      planned += Number(x![2]);
    }
    expect(planned).toBe(10);
    expect(fs.readFileSync(f, 'utf8')).toBe('');
  });

  it('on plain traffic: the per-stratum counts add up to the cases written, each within its allocation', async () => {
    const f = path.join(dir, 'export-plan-lines.jsonl');
    const out = await cli('export-gaps', '--plan', '--budget', '25', '--since', '1d', '--out', f);
    const n = Number(out.stdout.match(/wrote (\d+) candidate eval case\(s\)/)![1]);
    const cases = fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { plan_kind: string; plan_target: string });
    expect(cases).toHaveLength(n);
    const lines = [...out.stdout.matchAll(/^ {2}(gap (\S+)|cluster (\d+)|untested) .* wrote (\d+) case\(s\), planned (\d+)/gm)];
    expect(lines.length).toBeGreaterThan(1);
    let sum = 0;
    for (const x of lines) {
      const [kind, target] = x[2] !== undefined ? ['gap', x[2]] : x[3] !== undefined ? ['cluster', x[3]] : ['uncovered', ''];
      expect(Number(x[4])).toBe(cases.filter((c) => c.plan_kind === kind && c.plan_target === target).length);
      expect(Number(x[4])).toBeLessThanOrEqual(Number(x[5]));
      sum += Number(x[4]);
    }
    expect(sum).toBe(n);
  });
});
