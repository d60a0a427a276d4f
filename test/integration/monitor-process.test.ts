/**
 * The monitor as real processes: `evalgap run --monitor` from Kafka through ClickHouse to a signed
 * webhook; then `evalgap monitor` SIGKILLed while its receiver is down, restarted, and every alert
 * arrives exactly once. These run the real evaluator (src/monitor) with its default rules, so they
 * assert only what any correct detector must do with 80% of traffic suddenly on topics the eval set
 * never tested: an alert for all agents together, whose clusters' examples are those queries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { MonitorStore } from '../../src/store/monitor.js';
import { Store } from '../../src/store/store.js';
import { capMs, fitSampleModel, readTopic, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';
import { startReceiver, T0, MIN, traffic, type Payload } from '../helpers/monitor.js';

const NEW_TOPICS = /gdpr|personal data|purchase history|account data|gift card|store credit|e-gift/i;
const namesNewTopics = (p: Payload) => p.alert.clusters.some((c) => c.examples.some((e) => NEW_TOPICS.test(e)));

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

interface Proc {
  child: ChildProcess;
  started: Promise<{ metricsPort?: number }>;
  exited: Promise<number | null>;
  logs: string[];
}

function start(args: string[], env: Record<string, string>, startedMsg: string): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const logs: string[] = [];
  const started = new Promise<{ metricsPort?: number }>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stderr! });
    rl.on('line', (line) => {
      logs.push(line);
      try {
        const j = JSON.parse(line);
        if (j.msg === startedMsg) resolve(j);
      } catch {
        /* not a log line */
      }
    });
    child.once('exit', (code) => reject(new Error(`evalgap exited early (${code}):\n${logs.slice(-20).join('\n')}`)));
  });
  started.catch(() => {});
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, started, exited, logs };
}

/** The CLI to its exit: exit code and stdout + stderr; killed after `killAfterMs` if given. */
function runCli(args: string[], env: NodeJS.ProcessEnv, killAfterMs?: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { env });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    const kill = killAfterMs === undefined ? undefined : setTimeout(() => c.kill('SIGKILL'), killAfterMs);
    c.on('exit', (code) => {
      clearTimeout(kill);
      resolve({ code, out });
    });
  });
}

function writeConfig(dir: string, name: string, url: string, secret: string): { file: string; cfg: Record<string, unknown> } {
  const secretFile = path.join(dir, `${name}.secret`);
  fs.writeFileSync(secretFile, secret + '\n');
  const cfg = {
    controlTopic: uniqueName('evalgap.test.control'),
    electionGroup: uniqueName('monitor'),
    alertsTopic: uniqueName('evalgap.test.alerts'),
    dispatchGroupPrefix: uniqueName('dispatch'),
    notifyBackfill: true,
    pollSeconds: 1,
    rules: {},
    receivers: [{ name: 'local', url, secretFile, minBackoffMs: 200, maxBackoffMs: 1000 }],
  };
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(cfg));
  return { file, cfg };
}

describe('evalgap monitor processes', () => {
  it('run --monitor: Kafka → ClickHouse → monitor → signed webhook; a killed monitor mid-outage loses no alert', async () => {
    const dir = tmpDir();
    const modelDir = path.join(dir, 'model');
    await fitSampleModel(modelDir);
    const topic = uniqueName('evalgap.test.monproc');
    const kafka = testKafka();
    await ensureTopics(kafka, [{ topic, numPartitions: 1 }]);
    const p = kafka.producer();
    await p.connect();
    await produceJson(
      p,
      topic,
      traffic(
        [
          { from: 0, minutes: 30, perMinute: 10, surprise: 0, seed: 5 },
          { from: 30, minutes: 20, perMinute: 10, surprise: 0.8, seed: 6 },
        ],
        topic,
      ),
    );
    await p.disconnect();
    const env = {
      EVALGAP_DATA_DIR: path.join(dir, 'chdb'),
      EVALGAP_TOPIC: topic,
      EVALGAP_DLQ_TOPIC: `${topic}.dlq`,
      EVALGAP_GROUP: uniqueName('g'),
      EVALGAP_LOG_LEVEL: 'info',
    };

    // 1. evalgap run --monitor, one process
    const one = await startReceiver();
    const c1 = writeConfig(dir, 'one', one.receiver.url, one.secret);
    const run = start(['run', '--model', modelDir, '--metrics-port', '0', '--monitor', '--monitor-config', c1.file], env, 'evalgap monitor started');
    // (the exit code is asserted only when the steps passed: a failed step's own error is the one reported)
    let passed = false;
    try {
      await run.started;
      const isIt = (b: Payload) => b.kind === 'firing' && b.alert?.agent === '*' && namesNewTopics(b);
      await waitFor(async () => one.receiver.received.some((r) => isIt(r.body as Payload)), 180_000, 'an alert for all agents naming the new topics');
      const all = one.receiver.received.map((r) => r.body as Payload).find(isIt)!;
      expect(Date.parse(all.alert.onset)).toBeGreaterThanOrEqual(T0 + 30 * MIN);
      expect(one.receiver.rejected).toBe(0);
      // secrets never reach the logs
      expect(run.logs.join('\n')).not.toContain(one.secret.slice(6, 30));
      passed = true;
    } finally {
      run.child.kill('SIGTERM');
      const code = await run.exited;
      await one.receiver.stop();
      if (passed) expect(code, run.logs.slice(-20).join('\n')).toBe(0);
    }

    // 2. evalgap monitor (a new group and outbox over the same store), killed while its receiver is down
    const two = await startReceiver();
    two.receiver.down = true;
    const c2 = writeConfig(dir, 'two', two.receiver.url, two.secret);
    const margs = ['monitor', '--model', modelDir, '--config', c2.file, '--metrics-port', '0'];
    const first = start(margs, { EVALGAP_DATA_DIR: env.EVALGAP_DATA_DIR, EVALGAP_LOG_LEVEL: 'info' }, 'evalgap monitor started');
    await first.started;
    await waitFor(async () => two.receiver.requests >= 3, 120_000, 'deliveries failing against the receiver that is down');
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe(null);
    expect(two.receiver.received).toEqual([]);
    two.receiver.down = false;
    const second = start(margs, { EVALGAP_DATA_DIR: env.EVALGAP_DATA_DIR, EVALGAP_LOG_LEVEL: 'info' }, 'evalgap monitor started');
    try {
      const { metricsPort } = await second.started;
      // what entered the outbox: every id must arrive, once
      const admin = kafka.admin();
      await admin.connect();
      const alertsTopic = c2.cfg.alertsTopic as string;
      await waitFor(async () => {
        const [o] = await admin.fetchTopicOffsets(alertsTopic);
        return Number(o.high) > 0 && two.receiver.received.length >= new Set((await readTopic(kafka, alertsTopic, Number(o.high))).map((m) => m.headers['webhook-id'])).size;
      }, 120_000, 'every alert in the outbox delivered');
      const [o] = await admin.fetchTopicOffsets(alertsTopic);
      await admin.disconnect();
      const ids = new Set((await readTopic(kafka, alertsTopic, Number(o.high))).map((m) => m.headers['webhook-id']));
      await new Promise((r) => setTimeout(r, 1500));
      expect(two.receiver.received.map((r) => r.id).sort()).toEqual([...ids].sort());
      expect(two.receiver.received.some((r) => (r.body as Payload).alert.agent === '*')).toBe(true);
      expect(two.receiver.rejected).toBe(0);
      // the dashboard's series
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toMatch(/evalgap_alert_deliveries_total\{receiver="local",result="delivered"\} [1-9]/);
      expect(metrics).toMatch(/evalgap_monitor_lag_seconds \d/);
      expect(metrics).toMatch(/^evalgap_monitor_leader 1$/m);
      // a page in a browser (a DNS-rebinding one sends its own Host) reads nothing from this port
      for (const headers of [{ host: `rebind.example:${metricsPort}` }, { origin: 'http://evil.example' }, { 'sec-fetch-site': 'cross-site' }] as Record<string, string>[]) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.get(`http://127.0.0.1:${metricsPort}/metrics`, { headers }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
        });
        expect(status, JSON.stringify(headers)).toBe(403);
      }
    } finally {
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      await two.receiver.stop();
    }

    // the alerts table records what was notified
    const store = await Store.open(testConfig(env.EVALGAP_DATA_DIR).clickhouse);
    try {
      const rows = await new MonitorStore(store).alerts();
      const notified = new Set(rows.filter((r) => Number(r.notified) === 1).map((r) => r.webhook_id));
      for (const r of two.receiver.received) expect(notified.has(r.id)).toBe(true);
    } finally {
      await store.close();
    }

    // --status and --backtest read the same store
    const cli = (args: string[]) => runCli(args, { ...process.env, EVALGAP_DATA_DIR: env.EVALGAP_DATA_DIR, EVALGAP_LOG_LEVEL: 'warn' });
    const st = await cli(['monitor', '--model', modelDir, '--config', c2.file, '--status', '--status-days', '1']);
    expect(st.code).toBe(0);
    expect(st.out).toMatch(/eval-set mismatch: production share per eval cluster/);
    expect(st.out).toMatch(/firing alerts \(\d+\):/);
    expect(st.out).toMatch(/ {2}agent=\* {2}since/);
    const bt = await cli(['monitor', '--model', modelDir, '--config', c2.file, '--backtest', '--from', new Date(T0).toISOString(), '--to', new Date(T0 + 50 * MIN).toISOString(), '--json']);
    expect(bt.code).toBe(0);
    const report = JSON.parse(bt.out) as { evaluated: number; notifications: Payload[] };
    expect(report.evaluated).toBe(100); // 50 minutes of 30-second windows
    expect(report.notifications.some((n) => n.kind === 'firing' && n.alert.agent === '*' && namesNewTopics(n))).toBe(true);
    const bad = await cli(['monitor', '--model', modelDir, '--config', path.join(dir, 'missing.json')]);
    expect(bad.code).toBe(2);
    expect(bad.out).toMatch(/cannot read monitor config/);
  });

  it('evalgap receive verifies signatures and rejects a forged one, and anything from a web page', async () => {
    const { newSecret } = await import('../../src/alert/config.js');
    const { signRequest } = await import('../../src/alert/webhook.js');
    const secret = newSecret();
    const c = spawn(process.execPath, [CLI, 'receive', '--port', '0', '--secret-env', 'HOOK_SECRET'], { env: { ...process.env, HOOK_SECRET: secret } });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    try {
      const url = await waitFor(async () => /listening on (\S+)/.exec(out)?.[1], 20_000, 'the receiver to listen');
      const body = JSON.stringify({ type: 'evalgap.alert', kind: 'firing', alert: { rule: 'uncovered_share', agent: '*', summary: 'hello', clusters: [] } });
      const ok = signRequest(secret, 'al_1.firing', body);
      expect((await fetch(url, { method: 'POST', headers: ok.headers, body })).status).toBe(200);
      const forged = signRequest(newSecret(), 'al_2.firing', body);
      expect((await fetch(url, { method: 'POST', headers: forged.headers, body })).status).toBe(401);
      // a web page gets nothing, even with a valid signature (Origin, Sec-Fetch-Site, a rebinding Host)
      const fromPage = signRequest(secret, 'al_3.firing', body);
      expect((await fetch(url, { method: 'POST', headers: { ...fromPage.headers, origin: 'http://evil.example' }, body })).status).toBe(403);
      expect((await fetch(url, { method: 'POST', headers: { ...fromPage.headers, 'sec-fetch-site': 'cross-site' }, body })).status).toBe(403);
      await waitFor(async () => out.includes('al_1.firing  verified'), 5_000, 'the printed alert');
      expect(out).toContain('FIRING uncovered_share agent=*: hello');
      expect(out).not.toContain('al_2.firing');
      expect(out).not.toContain('al_3.firing');
    } finally {
      c.kill('SIGTERM');
    }
  });

  it('two deployments on one broker, no names in their configs: each has its own election and outbox (from its group); two instances of one deployment still share theirs', async () => {
    const dir = tmpDir();
    const modelDir = path.join(dir, 'model');
    await fitSampleModel(modelDir);
    const ga = uniqueName('deploy-a');
    const gb = uniqueName('deploy-b');
    // the sample line, not the HELP line ("1 while this instance is the elected evaluator")
    const leader = async (port: number | undefined) => /^evalgap_monitor_leader 1$/m.test(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
    const procs = [
      start(['monitor', '--model', modelDir, '--metrics-port', '0', '--group', ga], { EVALGAP_DATA_DIR: path.join(dir, 'a1'), EVALGAP_LOG_LEVEL: 'info' }, 'evalgap monitor started'),
      start(['monitor', '--model', modelDir, '--metrics-port', '0'], { EVALGAP_DATA_DIR: path.join(dir, 'a2'), EVALGAP_GROUP: ga, EVALGAP_LOG_LEVEL: 'info' }, 'evalgap monitor started'),
      start(['monitor', '--model', modelDir, '--metrics-port', '0', '--group', gb], { EVALGAP_DATA_DIR: path.join(dir, 'b'), EVALGAP_LOG_LEVEL: 'info' }, 'evalgap monitor started'),
    ];
    try {
      const started = (await Promise.all(procs.map((p) => p.started))) as { metricsPort?: number; electionGroup?: string; alertsTopic?: string; controlTopic?: string }[];
      expect(started.map((s) => s.electionGroup)).toEqual([`${ga}-monitor`, `${ga}-monitor`, `${gb}-monitor`]);
      expect(started.map((s) => s.alertsTopic)).toEqual([`${ga}.alerts`, `${ga}.alerts`, `${gb}.alerts`]);
      expect(started.map((s) => s.controlTopic)).toEqual([`${ga}.monitor.control`, `${ga}.monitor.control`, `${gb}.monitor.control`]);
      // deployment b leads on its own, and a settles on one leader of its two instances (the first
      // to join leads until the second's join reaches it at a heartbeat)
      const leadersOfA = async () => [await leader(started[0].metricsPort), await leader(started[1].metricsPort)].filter(Boolean).length;
      await waitFor(async () => (await leader(started[2].metricsPort)) && (await leadersOfA()) === 1, 120_000, 'one leader in each deployment');
      // and stays so, for as long as we look
      for (let i = 0; i < 5; i++) {
        expect(await leadersOfA()).toBe(1);
        expect(await leader(started[2].metricsPort)).toBe(true);
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      for (const p of procs) p.child.kill('SIGTERM');
      for (const p of procs) expect(await p.exited).toBe(0);
    }
  });

  it('monitor refuses options of a mode it was not given (never starts a live monitor for them) and a reversed backtest; --status and --backtest do not need the receivers\' secrets', async () => {
    const dir = tmpDir();
    const modelDir = path.join(dir, 'model');
    await fitSampleModel(modelDir);
    const cfgFile = path.join(dir, 'monitor.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ receivers: [{ name: 'ops', url: 'http://127.0.0.1:9/', secretEnv: 'MONITOR_TEST_UNSET_SECRET_VAR' }] }));
    const env: NodeJS.ProcessEnv = { ...process.env, EVALGAP_DATA_DIR: path.join(dir, 'data'), EVALGAP_GROUP: uniqueName('g'), EVALGAP_LOG_LEVEL: 'warn' };
    delete env.MONITOR_TEST_UNSET_SECRET_VAR;
    // a live monitor would run until stopped: it must never get that far (the cap only ends a broken run)
    const cli = (args: string[]) => runCli(['monitor', '--model', modelDir, '--config', cfgFile, '--metrics-port', '0', ...args], env, capMs(120_000));
    for (const [args, msg] of [
      [['--from', '2026-12-07T00:00:00Z', '--to', '2026-12-08T00:00:00Z', '--json'], /--from is an option of --backtest; --to is an option of --backtest; --json is an option of --backtest/],
      [['--status-days', '3'], /--status-days is an option of --status/],
      [['--status', '--backtest'], /--status and --backtest are separate modes/],
      [['--backtest', '--from', '2026-12-08T00:00:00Z', '--to', '2026-12-07T00:00:00Z'], /--from \(2026-12-08T00:00:00\.000Z\) must be before --to/],
    ] as [string[], RegExp][]) {
      const r = await cli(args);
      expect(r.code, `${args.join(' ')}: ${r.out}`).toBe(2);
      expect(r.out).toMatch(msg);
      expect(r.out).not.toMatch(/monitor started|elected/);
    }
    // the receiver's secret variable is unset: delivery would need it, these modes do not
    const st = await cli(['--status', '--status-days', '2']);
    expect(st.code, st.out).toBe(0);
    expect(st.out).toMatch(/eval-set mismatch/);
    const bt = await cli(['--backtest', '--from', '2026-12-07T00:00:00Z', '--to', '2026-12-08T00:00:00Z']);
    expect(bt.code, bt.out).toBe(0);
    expect(bt.out).toMatch(/backtest 2026-12-07T00:00:00\.000Z/);
    // a live monitor still needs it
    const live = await cli(['--once']);
    expect(live.code).toBe(2);
    expect(live.out).toMatch(/MONITOR_TEST_UNSET_SECRET_VAR is not set/);
  });
});
