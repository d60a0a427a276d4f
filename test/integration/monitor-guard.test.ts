/**
 * The version_regression rule end to end, against the real broker, the embedded engine and the real
 * model: rows of two versions (sessions of 2 requests, every other session on v2, which escalates
 * every `returns` question) embedded and assigned as `evalgap run` does and stored; then the built
 * CLI `evalgap monitor --once --guard FILE` evaluates the canary guard and its webhook arrives,
 * signed (verified with the standardwebhooks package), with severity `rollback`, naming the
 * clusters of the regressed topic with rates, intervals and examples. A restarted monitor (the
 * guard given through the config's `guard` key this time) re-sends nothing. Two monitors in one
 * process: the standby takes over from the checkpoint without re-sending, and a replaced guard
 * resolves the alert. The report's version section is read from the same rows.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { MonitorStore } from '../../src/store/monitor.js';
import { versionsForReport } from '../../src/cli/report.js';
import { Store } from '../../src/store/store.js';
import type { AlertPayload } from '../../src/alert/payload.js';
import type { WebhookReceiver } from '../../src/alert/receiver.js';
import { capMs, fitSampleModel, realEmbedder, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';
import { assignRows, startReceiver, storeRows } from '../helpers/monitor.js';
import { pino } from 'pino';
import { parseMonitorConfig } from '../../src/alert/config.js';
import { contextFromManifest, MonitorRunner } from '../../src/alert/runner.js';
import { VersionGuard } from '../../src/alert/version-guard.js';
import { createEvaluator } from '../../src/monitor/index.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
const N = 800;
const start = Math.floor(Date.now() / 60_000) * 60_000 - 3 * 3_600_000;
let dir: string;
let dataDir: string;
let modelDir: string;
let receiver: WebhookReceiver;
let secret: string;

beforeAll(async () => {
  dir = tmpDir();
  dataDir = path.join(dir, 'chdb');
  modelDir = path.join(dir, 'model');
  await fitSampleModel(modelDir);
  const prefix = uniqueName('guard');
  const two = sampleTraffic(4 * N, { seed: 21, surpriseShare: 0, stepMs: 5_000, start, idPrefix: prefix })
    .filter((m) => m.topic_hint === 'returns' || m.topic_hint === 'shipping')
    .slice(0, N);
  expect(two).toHaveLength(N);
  const msgs = two.map((m, i) => {
    const { topic_hint, ...rest } = m;
    const s = Math.floor(i / 2);
    const version = s % 2 === 1 ? 'v2' : 'v1';
    const regress = version === 'v2' && topic_hint === 'returns';
    return { ...rest, ts: new Date(start + i * 5_000).toISOString(), session_id: `${prefix}-s${s}`, version, ...(regress ? { escalated: true, outcome: 'escalated' } : {}) };
  });
  const rows = await assignRows(msgs, await realEmbedder(), new CoverageAssigner(loadCoverageModel(modelDir)));
  const store = await Store.open(testConfig(dataDir).clickhouse);
  try {
    await storeRows(store, rows);
  } finally {
    await store.close();
  }
  ({ receiver, secret } = await startReceiver());
}, 600_000);
afterAll(async () => receiver?.stop());

/** Run the built CLI without blocking this process (the receiver answers from here). */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, EVALGAP_DATA_DIR: dataDir, EVALGAP_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), capMs(300_000));
    c.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('version_regression in evalgap monitor (real broker, engine and model)', () => {
  it('monitor --guard sends one signed rollback webhook naming the regressed clusters; a restarted monitor sends nothing again', async () => {
    const guard = {
      baseline: 'v1',
      candidate: 'v2',
      since: new Date(start - 60_000).toISOString(),
      rollback: [
        { outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 },
        { outcome: 'failed', segments: 'uncovered', ratio: 2 },
      ],
      promote: { ratio: 1.2, difference: 0.02 },
    };
    const guardFile = path.join(dir, 'canary.json');
    fs.writeFileSync(guardFile, JSON.stringify(guard));
    fs.writeFileSync(path.join(dir, 'hook.secret'), secret + '\n');
    const mc = {
      controlTopic: uniqueName('evalgap.test.control'),
      electionGroup: uniqueName('monitor'),
      alertsTopic: uniqueName('evalgap.test.alerts'),
      dispatchGroupPrefix: uniqueName('dispatch'),
      windowSeconds: 300,
      pollSeconds: 1,
      receivers: [{ name: 'local', url: receiver.url, secretFile: 'hook.secret', minBackoffMs: 200, maxBackoffMs: 1000 }],
    };
    const configFile = path.join(dir, 'monitor.json');
    fs.writeFileSync(configFile, JSON.stringify(mc));

    const first = await cli(['monitor', '--model', modelDir, '--config', configFile, '--guard', guardFile, '--once']);
    expect(first.code, first.stderr).toBe(0);
    // monitor --once returns once every receiver acknowledged: the webhook is here
    const got = receiver.received.map((r) => r.body as AlertPayload);
    const rollback = got.filter((p) => p.alert.rule === 'version_regression');
    expect(rollback.map((p) => [p.kind, p.alert.status, p.alert.severity])).toEqual([['firing', 'firing', 'rollback']]);
    expect(receiver.rejected).toBe(0); // every signature verified
    const p = rollback[0];
    expect(p.id).toBe(receiver.received.find((r) => (r.body as AlertPayload).id === p.id)!.id);
    const schema = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'schemas', 'alert-payload.schema.json'), 'utf8'));
    const validate = new Ajv({ strict: true, validateFormats: false }).compile(schema);
    expect(validate(p), JSON.stringify(validate.errors)).toBe(true);
    const c = p.alert.comparison!;
    expect(c).toMatchObject({ verdict: 'rollback', baseline: 'v1', candidate: 'v2' });
    expect(c.segments.length).toBeGreaterThan(0);
    expect(p.alert.summary).toMatch(/^roll back v2: cluster \d+/);
    expect(p.alert.sql).toContain('version_comparison(');
    // the segments named are eval clusters where v2 escalated, with intervals meeting the condition and the candidate's examples
    const store = await Store.open(testConfig(dataDir).clickhouse);
    try {
      for (const s of c.segments) {
        expect(s).toMatchObject({ segment: 'cluster', outcome: 'escalated', condition_ratio: 1.5 });
        expect(s.candidate.lo).toBeGreaterThan(1.5 * s.baseline.hi);
        expect(s.ratio.lo).toBeGreaterThan(1.5);
        expect(s.examples.length).toBeGreaterThan(0);
        const [r] = await store.query<{ n: string; esc: string; returns: string }>(
          `SELECT toString(count()) AS n, toString(countIf(escalated = 1)) AS esc FROM ${store.t('requests')} WHERE version = 'v2' AND covered = 1 AND cluster = {c:Int32}`,
          { c: s.cluster },
        );
        expect(Number(r.esc) / Number(r.n)).toBeGreaterThan(0.8);
      }
      expect(p.alert.clusters.map((x) => x.cluster).sort()).toEqual([...new Set(c.segments.map((s) => s.cluster))].sort());
      expect(p.alert.clusters.every((x) => x.examples.length > 0)).toBe(true);
      // recorded in the alerts table, firing
      const firing = await new MonitorStore(store).firingAlerts();
      expect(firing.filter((a) => a.rule === 'version_regression').map((a) => [a.id, a.severity])).toEqual([[p.alert.id, 'rollback']]);
    } finally {
      await store.close();
    }

    // a restart: a new process, the guard from the config's `guard` key, the checkpoint in the store
    fs.writeFileSync(configFile, JSON.stringify({ ...mc, guard: 'canary.json' }));
    const before = receiver.requests;
    const second = await cli(['monitor', '--model', modelDir, '--config', configFile, '--once']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^0 notification\(s\)/);
    expect(receiver.requests).toBe(before);
    expect(receiver.duplicates).toBe(0);
  });

  it('the report compares the two versions cluster by cluster: v2 worse where it escalates, with intervals', async () => {
    const store = await Store.open(testConfig(dataDir).clickhouse);
    try {
      const [v] = await versionsForReport(store, new Date(start - 60_000), new Date());
      expect(v).toMatchObject({ baseline: 'v1', candidate: 'v2', alpha: 0.05, units: { baseline: 200, candidate: 200 } });
      expect(v.worse.length).toBeGreaterThan(0);
      expect(v.better).toEqual([]);
      expect(v.rows[0].segment).toBe('all traffic');
      for (const r of v.rows.filter((x) => x.verdict === 'worse')) {
        expect(r.lo).toBeGreaterThan(0);
        expect(r.candidate!).toBeGreaterThan(r.baseline!);
        expect(r.outcome).toBe('escalated');
      }
      // one version only: no section
      expect(await versionsForReport(store, new Date(start - 60_000), new Date(start - 30_000))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('two monitors: the leader sends the rollback once, the standby takes over from the checkpoint without re-sending; a replaced guard resolves it', async () => {
    const store = await Store.open(testConfig(dataDir).clickhouse);
    const { receiver: rx, secret: s } = await startReceiver();
    const kafka = testKafka();
    const manifest = loadCoverageModel(modelDir).manifest;
    const guard = { baseline: 'v1', candidate: 'v2', since: new Date(start - 60_000).toISOString(), rollback: [{ outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 }] };
    const config = (g: unknown) =>
      parseMonitorConfig({
        controlTopic: uniqueName('evalgap.test.control'),
        electionGroup: uniqueName('monitor'),
        alertsTopic: uniqueName('evalgap.test.alerts'),
        dispatchGroupPrefix: uniqueName('dispatch'),
        windowSeconds: 300,
        pollSeconds: 0.5,
        start: 'now',
        receivers: [{ name: 'test', url: rx.url, secret: s, minBackoffMs: 100, maxBackoffMs: 400 }],
        guard: g,
      });
    const mc = config(guard);
    const runner = (c = mc) =>
      new MonitorRunner({
        store,
        kafka,
        logger: pino({ level: 'silent' }),
        evaluate: createEvaluator({}),
        ctx: contextFromManifest(manifest),
        config: c,
        guard: new VersionGuard(store, c.guard!, store.database),
        sessionTimeoutMs: 6_000,
        settleMs: 500,
      });
    const a = runner();
    const b = runner();
    await Promise.all([a.start(), b.start()]);
    try {
      const rollback = () => rx.received.filter((r) => (r.body as AlertPayload).alert.rule === 'version_regression');
      await waitFor(async () => rollback().length >= 1, 60_000, 'the rollback webhook');
      const first = rollback()[0].body as AlertPayload;
      expect(first).toMatchObject({ kind: 'firing', alert: { severity: 'rollback', status: 'firing' } });
      const [leader, standby] = a.isLeader() ? [a, b] : [b, a];
      expect(standby.isLeader()).toBe(false);
      // the leader goes away; the standby takes over from the checkpoint
      await leader.stop();
      await waitFor(async () => standby.isLeader(), 60_000, 'the standby to lead');
      const t = await standby.tick();
      expect(t.guard?.rollback).toBeGreaterThan(0);
      expect(t.notifications).toEqual([]);
      expect(rx.requests).toBe(1);
      expect(rx.duplicates).toBe(0);
      await standby.stop();
      // another canary (a new since) replaces the guard: the first one's alert resolves, same id
      const replaced = config({ ...guard, candidate: 'v1', baseline: 'v2', since: new Date(start).toISOString() });
      const c = runner({ ...replaced, electionGroup: mc.electionGroup, controlTopic: mc.controlTopic, alertsTopic: mc.alertsTopic, dispatchGroupPrefix: mc.dispatchGroupPrefix });
      await c.start();
      try {
        await waitFor(async () => rx.received.some((r) => (r.body as AlertPayload).kind === 'resolved'), 60_000, 'the resolved webhook');
        const resolved = rx.received.map((r) => r.body as AlertPayload).find((p) => p.kind === 'resolved')!;
        expect(resolved.alert).toMatchObject({ id: first.alert.id, rule: 'version_regression', status: 'resolved' });
        expect((await new MonitorStore(store).firingAlerts()).filter((x) => x.id === first.alert.id)).toEqual([]);
      } finally {
        await c.stop();
      }
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await rx.stop();
      await store.close();
    }
  });

  it('a bad guard file is refused with the key named, before anything starts; compare --guard points to the monitor', async () => {
    const bad = path.join(dir, 'bad-guard.json');
    fs.writeFileSync(bad, JSON.stringify({ baseline: 'v1', candidate: 'v2', since: 'yesterday', rollback: [{ outcome: 'slow', ratio: 1.2 }] }));
    const r = await cli(['monitor', '--model', modelDir, '--guard', bad, '--once', '--data-dir', path.join(dir, 'nowhere')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid guard config .*\n\s+- since: /s);
    expect(fs.existsSync(path.join(dir, 'nowhere'))).toBe(false);
    const w = await cli(['compare', '--guard', bad, '--watch']);
    expect(w.code).not.toBe(0);
    expect(w.stderr).toMatch(/evalgap monitor --model DIR --guard FILE/);
  });
});
