/**
 * The monitor against the real broker, the embedded engine and the real model: rows embedded and
 * assigned as evalgap run does, with controlled timestamps; alerts delivered to a local receiver
 * that verifies every signature with the standardwebhooks package. Each test uses its own
 * database, election group and topics. The evaluator is the placeholder fixed-threshold rule
 * (src/monitor/index.ts) until part A's detectors land: these tests are about everything around it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBacktest } from '../../src/alert/backtest.js';
import { evalMismatch } from '../../src/alert/status.js';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { CoverageAssigner, loadCoverageModel, type Manifest } from '../../src/coverage/model.js';
import type { Embedder } from '../../src/embed/embedder.js';
import { createEvaluator } from '../helpers/threshold-evaluator.js';
import { contextFromManifest } from '../../src/alert/runner.js';
import { MonitorStore } from '../../src/store/monitor.js';
import type { RequestRow } from '../../src/store/store.js';
import type { WindowCounts } from '../../src/monitor/types.js';
import { Store } from '../../src/store/store.js';
import { fitSampleModel, realEmbedder, testConfig, testKafka, tmpDir, waitFor } from '../helpers/fixtures.js';
import { assignRows, makeRunner, MIN, RULES, storeRows, monitorConfig, startReceiver, T0, traffic, type Payload } from '../helpers/monitor.js';

let cfg: Config;
let manifest: Manifest;
let embedder: Embedder;
let assigner: CoverageAssigner;
const kafka = testKafka();
const stores: Store[] = [];
/** steady 40 min, shifted 20 min (80% on topics the eval set never covered), steady 25 min */
let shifted: RequestRow[];
let steady: RequestRow[];
let dbn = 0;

async function freshStore(): Promise<Store> {
  const s = await Store.open({ ...cfg.clickhouse, database: `mon${process.pid}_${dbn++}` });
  stores.push(s);
  return s;
}

beforeAll(async () => {
  const dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  manifest = await fitSampleModel(path.join(dir, 'model'));
  embedder = await realEmbedder();
  assigner = new CoverageAssigner(loadCoverageModel(path.join(dir, 'model')));
  const all = await assignRows(
    traffic(
      [
        { from: 0, minutes: 40, perMinute: 12, surprise: 0, seed: 1 },
        { from: 40, minutes: 20, perMinute: 12, surprise: 0.8, seed: 2 },
        { from: 60, minutes: 25, perMinute: 12, surprise: 0, seed: 3 },
        { from: 100, minutes: 40, perMinute: 12, surprise: 0, seed: 4 },
      ],
      'mon',
    ),
    embedder,
    assigner,
  );
  shifted = all.filter((r) => Date.parse(r.ts) < T0 + 85 * MIN);
  steady = all.filter((r) => Date.parse(r.ts) >= T0 + 100 * MIN);
});
afterAll(async () => {
  for (const s of stores) await s.close();
});

const schema = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'schemas', 'alert-payload.schema.json'), 'utf8'));
const validate = new Ajv({ strict: true, validateFormats: false }).compile(schema);

describe('evalgap monitor (in-process, real broker, engine and model)', () => {
  it('a shifted stream fires the right alert with clusters and examples, signed; it resolves; the table, trends and backtest agree', async () => {
    const store = await freshStore();
    await storeRows(store, shifted);
    const { receiver, secret } = await startReceiver();
    const mc = monitorConfig(receiver.url, secret);
    const runner = makeRunner(store, kafka, manifest, mc);
    await runner.start();
    try {
      // firing for all agents together and for each agent, then resolved for each
      await waitFor(async () => receiver.received.filter((r) => (r.body as Payload).kind === 'resolved').length >= 3, 60_000, 'three resolved alerts');
      await waitFor(async () => Date.parse((await new MonitorStore(store).loadCheckpoint(mc.electionGroup))?.windowEnd ?? '') >= T0 + 85 * MIN, 30_000, 'every window evaluated');
      const got = receiver.received.map((r) => r.body as Payload);
      for (const p of got) expect(validate(p), JSON.stringify(validate.errors)).toBe(true);
      const firing = got.filter((p) => p.kind === 'firing');
      expect(firing.map((p) => p.alert.agent).sort()).toEqual(['*', 'checkout-assistant', 'support-bot']);
      expect(got.filter((p) => p.kind === 'resolved').map((p) => p.alert.id).sort()).toEqual(firing.map((p) => p.alert.id).sort());
      const all = firing.find((p) => p.alert.agent === '*')!;
      expect(all.alert.rule).toBe('uncovered_share');
      // the onset is inside the shift (it began at minute 40)
      expect(Date.parse(all.alert.onset)).toBeGreaterThanOrEqual(T0 + 40 * MIN);
      expect(Date.parse(all.alert.onset)).toBeLessThan(T0 + 60 * MIN);
      // the clusters that drive it come with example queries of the topics the eval set never tested
      expect(all.alert.clusters.length).toBeGreaterThan(0);
      const examples = all.alert.clusters.flatMap((c) => c.examples);
      expect(examples.length).toBeGreaterThan(0);
      expect(examples.some((e) => /gdpr|personal data|purchase history|account data|gift card|store credit|e-gift/i.test(e))).toBe(true);
      expect(all.alert.clusters[0].label).toBeTruthy();
      // the SQL shows the rows: it runs and returns uncovered rows of the episode
      const rows = await store.query<{ covered: number }>(all.alert.sql.replace(/FROM \w+\.requests/, `FROM ${store.t('requests')}`));
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((r) => Number(r.covered) === 0)).toBe(true);
      expect(receiver.duplicates + receiver.rejected).toBe(0);

      const ms = new MonitorStore(store);
      const stored = await ms.alerts();
      expect(stored.map((a) => a.webhook_id).sort()).toEqual(got.map((p) => p.id).sort());
      expect(await ms.firingAlerts()).toEqual([]);
      const [t] = await store.query<{ n: string; windows: string }>(`SELECT count() AS n, uniqExact(window_start) AS windows FROM ${store.t('monitor_trends')} FINAL WHERE agent = '*'`);
      expect(Number(t.windows)).toBe(17); // 85 minutes of 5-minute windows
      // each detector's statistic is a gauge (its last window's value: ≥ 0), and the trend rows keep its history
      const stat = (await runner.metrics.statistic.get()).values.find((v) => v.labels.agent === '*');
      expect(stat?.value).toBeGreaterThanOrEqual(0);
      const [mx] = await store.query<{ m: number }>(`SELECT max(statistic) AS m FROM ${store.t('monitor_trends')} WHERE agent = '*'`);
      expect(Number(mx.m)).toBeGreaterThan(0);

      // backtest: the same detectors and lifecycle over the same stored aggregates say the same
      const bt = await runBacktest(ms, createEvaluator(RULES), contextFromManifest(manifest), mc, new Date(T0).toISOString(), new Date(T0 + 85 * MIN).toISOString());
      expect(bt.notifications.map((n) => n.webhookId).sort()).toEqual(got.map((p) => p.id).sort());

      // the standing eval-set mismatch: every cluster, production share with its interval
      const clusters = manifest.clusters.map((c) => ({ cluster: c.id, label: c.label, share: c.share }));
      const mm = await evalMismatch(ms, manifest.version, clusters, new Date(T0).toISOString(), new Date(T0 + 85 * MIN).toISOString());
      expect(mm.total).toBe(shifted.length);
      expect(mm.rows).toHaveLength(manifest.clusters.length);
      for (const r of mm.rows) expect(r.lo).toBeLessThanOrEqual(r.productionShare);
    } finally {
      await runner.stop();
      await receiver.stop();
    }
  });

  it('a steady stream alerts nothing', async () => {
    const store = await freshStore();
    await storeRows(store, steady);
    const { receiver, secret } = await startReceiver();
    const runner = makeRunner(store, kafka, manifest, monitorConfig(receiver.url, secret));
    await runner.start();
    try {
      const mc = runner['deps'].config;
      await waitFor(async () => Date.parse((await new MonitorStore(store).loadCheckpoint(mc.electionGroup))?.windowEnd ?? '') >= T0 + 140 * MIN, 60_000, 'every window evaluated');
      const [t] = await store.query<{ n: string; max: number }>(`SELECT count() AS n, max(statistic) AS max FROM ${store.t('monitor_trends')} WHERE agent = '*'`);
      expect(Number(t.n)).toBe(8);
      expect(t.max).toBeLessThan(0.35);
      expect(runner.sent).toEqual([]);
      expect(receiver.requests).toBe(0);
    } finally {
      await runner.stop();
      await receiver.stop();
    }
  });

  it('late rows are counted in a later evaluation, never lost', async () => {
    const store = await freshStore();
    const early = steady.filter((r) => Date.parse(r.ts) < T0 + 120 * MIN);
    const late = early.filter((_, i) => i % 4 === 0);
    const onTime = early.filter((_, i) => i % 4 !== 0);
    const rest = steady.filter((r) => Date.parse(r.ts) >= T0 + 120 * MIN);
    await storeRows(store, onTime);
    let now = T0 + 122 * MIN; // windows up to minute 120 are closed (lateness 2 min)
    const mc = monitorConfig(null, '');
    const seen: WindowCounts[][] = [];
    const runner = makeRunner(store, kafka, manifest, mc, () => new Date(now), seen);
    await runner.outbox.start();
    try {
      const r1 = await runner.tick({ force: true });
      expect(r1.windowEnd).toBe(new Date(T0 + 120 * MIN).toISOString());
      await storeRows(store, late); // arrive after their windows were evaluated
      await storeRows(store, rest);
      now = T0 + 142 * MIN;
      const r2 = await runner.tick({ force: true });
      expect(r2.windowEnd).toBe(new Date(T0 + 140 * MIN).toISOString());
      const [tr] = await store.query<{ n: string }>(`SELECT count() AS n FROM ${store.t('monitor_trends')} WHERE agent = '*'`);
      expect(Number(tr.n)).toBe(8);
      // every stored request was evaluated exactly once: the checkpoint's totals equal the store's
      const cp = await new MonitorStore(store).loadCheckpoint(mc.electionGroup);
      const ev = JSON.parse(cp!.state).evaluated as Record<string, number[]>;
      const evaluated = Object.values(ev).reduce((a, c) => a + c[0], 0);
      expect(evaluated).toBe(steady.length);
      // what the detectors were given adds up to the same, and carries each window's sessions
      const given = seen.flat();
      expect(given.reduce((a, w) => a + w.clusters.reduce((b, c) => b + c.requests, 0), 0)).toBe(steady.length);
      expect(seen).toHaveLength(8);
      expect(given.every((w) => (w.sessions ?? 0) > 0 && w.sessions! <= w.clusters.reduce((b, c) => b + c.requests, 0))).toBe(true);
      // the first window after the late arrivals carried them
      const w120 = seen[4].reduce((a, w) => a + w.clusters.reduce((b, c) => b + c.requests, 0), 0);
      expect(w120).toBe(rest.filter((r) => Date.parse(r.ts) < T0 + 125 * MIN).length + late.length);
    } finally {
      await runner.stop();
    }
  });

  it('two monitors sharing one store send one alert, not two; the standby takes over from the checkpoint without re-alerting', async () => {
    const store = await freshStore();
    await storeRows(store, shifted);
    let now = T0 + 62 * MIN; // the shift's windows are closed, the return to normal's are not yet
    const clock = () => new Date(now);
    const { receiver, secret } = await startReceiver();
    const mc = monitorConfig(receiver.url, secret);
    const a = makeRunner(store, kafka, manifest, mc, clock);
    const b = makeRunner(store, kafka, manifest, mc, clock);
    await Promise.all([a.start(), b.start()]);
    try {
      await waitFor(async () => receiver.received.length >= 3, 60_000, 'three firing alerts');
      await new Promise((r) => setTimeout(r, 2000)); // room for a second, wrong, delivery
      expect(receiver.received.map((r) => (r.body as Payload).kind)).toEqual(['firing', 'firing', 'firing']);
      expect(receiver.requests).toBe(3);
      expect([a.isLeader(), b.isLeader()].filter(Boolean)).toHaveLength(1);
      const [leader, standby] = a.isLeader() ? [a, b] : [b, a];
      // one notification per alert entered the outbox, whoever led
      expect([...a.sent, ...b.sent].map((n) => n.webhookId).sort()).toEqual(receiver.received.map((r) => r.id).sort());
      // the leader goes away; the standby takes over and resumes from the durable checkpoint
      await leader.stop();
      now = T0 + 87 * MIN;
      await waitFor(async () => receiver.received.length >= 6, 60_000, 'three resolved alerts from the new leader');
      expect(standby.isLeader()).toBe(true);
      await new Promise((r) => setTimeout(r, 1000));
      const got = receiver.received.map((r) => r.body as Payload);
      expect(got.map((p) => p.kind)).toEqual(['firing', 'firing', 'firing', 'resolved', 'resolved', 'resolved']);
      expect(got.slice(3).map((p) => p.alert.id).sort()).toEqual(got.slice(0, 3).map((p) => p.alert.id).sort());
      expect(receiver.duplicates).toBe(0);
      expect(standby.sent.filter((n) => n.kind === 'resolved')).toHaveLength(3);
      expect([...a.sent, ...b.sent]).toHaveLength(6);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await receiver.stop();
    }
  });

  it('a restarted monitor reports the alerts still firing (evalgap_alerts_firing) before its next evaluation', async () => {
    const store = await freshStore();
    await storeRows(store, shifted);
    const now = T0 + 62 * MIN; // the shift's windows are closed, the return to normal's are not yet
    const clock = () => new Date(now);
    const { receiver, secret } = await startReceiver();
    const mc = monitorConfig(receiver.url, secret);
    const firing = async (r: ReturnType<typeof makeRunner>) => (await r.metrics.firing.get()).values.map((v) => [v.labels.rule, v.value]);
    const a = makeRunner(store, kafka, manifest, mc, clock);
    await a.start();
    try {
      await waitFor(async () => receiver.received.length >= 3, 60_000, 'three firing alerts');
      // (the webhooks can arrive before the window's trend rows are written and the gauge set)
      await waitFor(async () => JSON.stringify(await firing(a)) === JSON.stringify([['uncovered_share', 3]]), 60_000, 'the firing gauge');
    } finally {
      await a.stop();
    }
    // a new process: nothing new to evaluate (the clock has not moved), yet the three alerts are still firing
    const b = makeRunner(store, kafka, manifest, mc, clock);
    await b.start({ dispatch: false, elect: false });
    try {
      expect(await firing(b)).toEqual([['uncovered_share', 3]]);
      expect((await new MonitorStore(store).firingAlerts()).length).toBe(3);
    } finally {
      await b.stop();
      await receiver.stop();
    }
  });

  it('history closed before the first start is evaluated and recorded, not sent (notifyBackfill false)', async () => {
    const store = await freshStore();
    await storeRows(store, shifted);
    const mc = monitorConfig(null, '', { notifyBackfill: false });
    const runner = makeRunner(store, kafka, manifest, mc);
    await runner.outbox.start();
    try {
      const r = await runner.tick({ force: true });
      expect(r.evaluated).toBe(17);
      expect(r.notifications).toEqual([]);
      const rows = await new MonitorStore(store).alerts();
      expect(rows.length).toBe(6); // firing and resolved, all agents and each agent
      expect(rows.every((x) => Number(x.notified) === 0)).toBe(true);
    } finally {
      await runner.stop();
    }
  });

  it('a receiver down for a while, then up, gets every alert exactly once', async () => {
    const store = await freshStore();
    await storeRows(store, shifted);
    const { receiver, secret } = await startReceiver();
    receiver.down = true;
    const runner = makeRunner(store, kafka, manifest, monitorConfig(receiver.url, secret));
    await runner.start();
    try {
      await waitFor(async () => runner.sent.length >= 6 && receiver.requests >= 6, 60_000, 'notifications in the outbox and failed attempts');
      expect(receiver.received).toEqual([]);
      receiver.down = false;
      await waitFor(async () => receiver.received.length >= 6, 60_000, 'every alert after the receiver came back');
      await new Promise((r) => setTimeout(r, 1000));
      expect(receiver.received.map((r) => r.id).sort()).toEqual(runner.sent.map((n) => n.webhookId).sort());
      expect(receiver.duplicates).toBe(0);
      const retries = (await runner.metrics.deliveries.get()).values.find((v) => v.labels.result === 'retry')?.value ?? 0;
      expect(retries).toBeGreaterThan(0);
    } finally {
      await runner.stop();
      await receiver.stop();
    }
  });
});
