/** The alert layer's pure parts and small edges: config, lifecycle, payloads, signatures, late rows, retry. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv } from 'ajv';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { alertId, type Notification } from '../../src/alert/alert.js';
import { loadMonitorConfig, newSecret, parseMonitorConfig, type MonitorConfig, type ResolvedReceiver } from '../../src/alert/config.js';
import { deliver, type DispatchContext } from '../../src/alert/dispatcher.js';
import { decide, type LifecycleOptions, type NotificationLog } from '../../src/alert/lifecycle.js';
import { createMonitorMetrics } from '../../src/alert/metrics.js';
import { parseNotification } from '../../src/alert/outbox.js';
import { evalgapPayload, slackPayload } from '../../src/alert/payload.js';
import { WebhookReceiver } from '../../src/alert/receiver.js';
import { DeliveryError, postNotification, signRequest } from '../../src/alert/webhook.js';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { closedUntil, newSince, toWindowCounts, totalsOf } from '../../src/alert/windows.js';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import type { Finding } from '../../src/monitor/types.js';

const SECRET = newSecret();

function finding(over: Partial<Finding> & { windowStart: string; windowEnd: string }): Finding {
  return {
    rule: 'uncovered_share',
    scope: { agent: '*', cluster: null },
    firing: true,
    severity: 'warning',
    onset: over.windowStart,
    statistic: 0.4,
    threshold: 0.3,
    effect: { name: 'uncovered_share', value: 0.4, lo: 0.35, hi: 0.45 },
    summary: '40% of traffic is uncovered',
    clusters: [{ cluster: 3, label: 'gift cards', shareNow: 0.2, shareReference: 0.05, shareEval: 0.1, examples: ['how do I redeem a gift card'] }],
    ...over,
  };
}

const W = (i: number) => ({ windowStart: new Date(Date.UTC(2025, 0, 1, 0, 5 * i)).toISOString(), windowEnd: new Date(Date.UTC(2025, 0, 1, 0, 5 * (i + 1))).toISOString() });
const OPTS: LifecycleOptions = { repeatIntervalMinutes: 0, inhibit: true };

async function step(findings: Finding[], log: NotificationLog, i: number, opts = OPTS) {
  return decide(findings, log, opts, { windowEnd: W(i).windowEnd, now: new Date(), modelVersion: 'cm-000000000000' });
}

describe('monitor config', () => {
  it("derives the monitor's Kafka names from the deployment's consumer group unless the config names them", () => {
    const legacy = { controlTopic: 'evalgap.monitor.control', electionGroup: 'evalgap-monitor', alertsTopic: 'evalgap.alerts', dispatchGroupPrefix: 'evalgap-dispatch' };
    const pick = (c: MonitorConfig) => ({ controlTopic: c.controlTopic, electionGroup: c.electionGroup, alertsTopic: c.alertsTopic, dispatchGroupPrefix: c.dispatchGroupPrefix });
    // the default group gives the names of earlier releases
    expect(pick(loadMonitorConfig(undefined, {}, { group: 'evalgap' }))).toEqual(legacy);
    expect(pick(loadMonitorConfig(undefined, {}))).toEqual(legacy);
    expect(pick(loadMonitorConfig(undefined, {}, { group: 'team-b' }))).toEqual({ controlTopic: 'team-b.monitor.control', electionGroup: 'team-b-monitor', alertsTopic: 'team-b.alerts', dispatchGroupPrefix: 'team-b-dispatch' });
    // what the file names stays; a group that is no topic name gives topic-safe names
    const c = parseMonitorConfig({ alertsTopic: 'ops.alerts' }, {}, 'x', process.cwd(), { group: 'team b/eu' });
    expect(pick(c)).toEqual({ controlTopic: 'team_b_eu.monitor.control', electionGroup: 'team b/eu-monitor', alertsTopic: 'ops.alerts', dispatchGroupPrefix: 'team b/eu-dispatch' });
  });

  it('defaults without a file and names the bad key of a bad file', () => {
    const d = loadMonitorConfig(undefined);
    expect(d.windowSeconds).toBe(30);
    expect(d.latenessSeconds).toBe(120);
    expect(d.receivers).toEqual([]);
    expect(() => parseMonitorConfig({ receivers: [{ name: 'ops', url: 'not a url', secret: SECRET }] })).toThrow(/receivers\.0\.url/);
    expect(() => parseMonitorConfig({ windowSeconds: 45 })).toThrow(/windowSeconds: a multiple of 30/);
    expect(() => parseMonitorConfig({ windowSeconds: 420 })).toThrow(/windowSeconds: a multiple of 30 .*divides 3600/);
    expect(() => parseMonitorConfig({ windowMinutes: 5 })).toThrow(/windowMinutes: replaced by windowSeconds.*300/);
    expect(() => parseMonitorConfig({ lifecycle: { repeatIntervalMinute: 5 } })).toThrow(/lifecycle: Unrecognized key.*repeatIntervalMinute/);
    expect(() => parseMonitorConfig({ receivers: [{ name: 'ops', url: 'http://x/' }] })).toThrow(/receivers\.0\.secret: give exactly one/);
    expect(() => parseMonitorConfig({ receivers: [{ name: 'ops', url: 'http://x/', secretEnv: 'NOPE_NOT_SET' }] }, {})).toThrow(/receivers\.0\.secretEnv: environment variable NOPE_NOT_SET/);
    expect(() => parseMonitorConfig({ receivers: [{ name: 'ops', url: 'http://x/', secret: 'short' }] })).toThrow(/receivers\.0\.secret: not a Standard Webhooks secret/);
  });

  it('reads secrets from the environment or a file, and checks the detectors\' rules by key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-cfg-'));
    fs.writeFileSync(path.join(dir, 'secret'), SECRET + '\n');
    fs.writeFileSync(
      path.join(dir, 'monitor.json'),
      JSON.stringify({
        rules: { arlDays: 60, budget: null },
        receivers: [
          { name: 'a', url: 'http://127.0.0.1:1/', secretFile: 'secret', format: 'slack' },
          { name: 'b', url: 'http://127.0.0.1:2/', secretEnv: 'HOOK_SECRET' },
        ],
      }),
    );
    const c = loadMonitorConfig(path.join(dir, 'monitor.json'), { HOOK_SECRET: SECRET });
    expect(c.receivers.map((r) => [r.name, r.secret === SECRET, r.format])).toEqual([
      ['a', true, 'slack'],
      ['b', true, 'evalgap'],
    ]);
    expect(c.rules).toEqual({ arlDays: 60, budget: null });
    expect(() => parseMonitorConfig({ rules: { arlDay: 60 } })).toThrow(/rules: Unrecognized key.*arlDay/);
    expect(() => parseMonitorConfig({ rules: { arlDays: -1 } })).toThrow(/rules\.arlDays/);
  });
});

describe('alert lifecycle', () => {
  it('fires once per episode, reminds at the repeat interval, resolves with the same id', async () => {
    let log: NotificationLog = {};
    const onset = W(0).windowStart;
    const r0 = await step([finding({ ...W(0) })], log, 0, { ...OPTS, repeatIntervalMinutes: 10 });
    expect(r0.notifications.map((n) => n.kind)).toEqual(['firing']);
    const id = r0.notifications[0].alert.id;
    expect(id).toBe(alertId('uncovered_share', '*', null, onset));
    expect(r0.notifications[0].webhookId).toBe(`${id}.firing`);
    log = r0.log;
    const r1 = await step([finding({ ...W(1), onset })], log, 1, { ...OPTS, repeatIntervalMinutes: 10 });
    expect(r1.notifications).toEqual([]);
    log = r1.log;
    const r2 = await step([finding({ ...W(2), onset })], log, 2, { ...OPTS, repeatIntervalMinutes: 10 });
    expect(r2.notifications.map((n) => [n.kind, n.webhookId])).toEqual([['reminder', `${id}.firing.r1`]]);
    log = r2.log;
    const r3 = await step([finding({ ...W(3), firing: false, onset: undefined })], log, 3);
    expect(r3.notifications.map((n) => [n.kind, n.alert.id, n.alert.status, n.alert.onset, n.webhookId])).toEqual([['resolved', id, 'resolved', onset, `${id}.resolved`]]);
    expect(r3.log).toEqual({});
    // a finding that never fired resolves nothing
    const r4 = await step([finding({ ...W(4), firing: false, onset: undefined })], r3.log, 4);
    expect(r4.notifications).toEqual([]);
    // a new episode has a new id
    const r5 = await step([finding({ ...W(5) })], r4.log, 5);
    expect(r5.notifications[0].alert.id).not.toBe(id);
  });

  it('a global cluster-mix alert inhibits the per-cluster alerts it explains; related alerts share a group', async () => {
    const mix = finding({ ...W(0), rule: 'cluster_mix', scope: { agent: 'bot', cluster: null } });
    const explained = finding({ ...W(0), rule: 'escalation', scope: { agent: 'bot', cluster: 3 } });
    const other = finding({ ...W(0), rule: 'escalation', scope: { agent: 'bot', cluster: 9 }, clusters: [] });
    const r = await step([mix, explained, other], {}, 0);
    expect(r.notifications.map((n) => [n.alert.rule, n.alert.cluster])).toEqual([
      ['cluster_mix', null],
      ['escalation', 9],
    ]);
    expect(r.inhibited.map((a) => a.cluster)).toEqual([3]);
    expect(r.notifications[0].group.key).toBe('agent=bot');
    expect(r.notifications[0].group.firing).toHaveLength(2);
    const off = await step([mix, explained, other], {}, 0, { ...OPTS, inhibit: false });
    expect(off.notifications).toHaveLength(3);
  });
});

function notification(): Notification {
  return {
    webhookId: `${alertId('uncovered_share', '*', null, W(0).windowStart)}.firing`,
    kind: 'firing',
    alert: {
      id: alertId('uncovered_share', '*', null, W(0).windowStart),
      rule: 'uncovered_share',
      agent: '*',
      cluster: null,
      severity: 'warning',
      status: 'firing',
      onset: W(0).windowStart,
      ...W(0),
      statistic: 0.4,
      threshold: 0.3,
      effect: { name: 'uncovered_share', value: 0.4, lo: 0.35, hi: 0.45 },
      summary: '40% of traffic is uncovered',
      clusters: [{ cluster: 3, label: 'gift cards', shareNow: 0.2, shareReference: 0.05, shareEval: 0.1, examples: ['how do I redeem a gift card'] }],
      sql: 'SELECT 1',
      modelVersion: 'cm-000000000000',
    },
    group: { key: 'agent=*', firing: [] },
    createdAt: new Date().toISOString(),
  };
}

describe('payloads', () => {
  it('the evalgap payload validates against the committed JSON Schema; the outbox round-trips it', () => {
    const schema = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'schemas', 'alert-payload.schema.json'), 'utf8'));
    const validate = new Ajv({ strict: true, validateFormats: false }).compile(schema);
    const n = notification();
    const p = evalgapPayload(n);
    expect(validate(p), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ ...p, alert: { ...p.alert, rule: 'nope' } })).toBe(false);
    expect(validate({ ...p, extra: 1 })).toBe(false);
    expect(parseNotification(Buffer.from(JSON.stringify(n)))).toEqual(n);
    expect(() => parseNotification(Buffer.from('{"webhookId":1}'))).toThrow();
  });

  it('the Slack body carries a text fallback and the clusters with examples', () => {
    const s = slackPayload(notification()) as { text: string; blocks: { text?: { text: string } }[] };
    expect(s.text).toMatch(/FIRING.*uncovered_share/);
    expect(JSON.stringify(s.blocks)).toContain('how do I redeem a gift card');
  });
});

describe('Standard Webhooks signatures', () => {
  it('verify with the standardwebhooks package; a replay outside the tolerance is rejected', async () => {
    const body = JSON.stringify(evalgapPayload(notification()));
    const req = signRequest(SECRET, 'al_x.firing', body);
    expect(req.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(SECRET).verify(body, req.headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(newSecret()).verify(body, req.headers)).toThrow();
    expect(() => new Webhook(SECRET).verify(body + ' ', req.headers)).toThrow();
    const old = signRequest(SECRET, 'al_x.firing', body, new Date(Date.now() - 10 * 60_000));
    expect(() => new Webhook(SECRET).verify(body, old.headers)).toThrow(/too old/i);

    const r = new WebhookReceiver({ secret: SECRET });
    await r.start(0);
    try {
      const post = (h: Record<string, string>) => fetch(r.url, { method: 'POST', headers: h, body });
      expect((await post(old.headers)).status).toBe(401);
      expect((await post(req.headers)).status).toBe(200);
      expect((await post(req.headers)).status).toBe(200);
      expect(r.received.map((x) => x.id)).toEqual(['al_x.firing']);
      expect([r.duplicates, r.rejected]).toEqual([1, 1]);
    } finally {
      await r.stop();
    }
  });
});

describe('windows and late rows', () => {
  it('counts late rows in the next evaluation, once', () => {
    const row = (day: string, requests: number, uncovered = 0) => ({ day, agent: 'a|b', model_version: 'm', cluster: 1, requests, uncovered, escalated: 0, refused: 0, failed: 0, uncovered_escalated: Math.min(1, uncovered), bands: [] as number[] });
    const first = newSince(totalsOf([row('2025-01-01', 10, 2)]), {}, '2025-01-01');
    expect(first.fresh.map((r) => [r.agent, r.requests, r.uncovered])).toEqual([['a|b', 10, 2]]);
    // 3 late rows of the same day arrive with 5 new ones of the next day
    const second = newSince(totalsOf([row('2025-01-01', 13, 3), row('2025-01-02', 5)]), first.keep, '2025-01-01');
    expect(second.fresh.map((r) => [r.bucket, r.requests, r.uncovered])).toEqual([
      ['2025-01-01', 3, 1],
      ['2025-01-02', 5, 0],
    ]);
    const w = toWindowCounts(second.fresh, 'S', 'E');
    expect(w).toEqual([{ start: 'S', end: 'E', agent: 'a|b', modelVersion: 'm', clusters: [{ cluster: 1, requests: 8, uncovered: 1, escalated: 0, refused: 0, failed: 0, uncoveredEscalated: 0, bands: new Array(9).fill(0) }] }]);
    // nothing new: nothing fresh; days before the horizon are pruned
    const third = newSince(totalsOf([row('2025-01-01', 13, 3), row('2025-01-02', 5)]), second.keep, '2025-01-02');
    expect(third.fresh).toEqual([]);
    expect(Object.keys(third.keep)).toEqual(['2025-01-02|a|b|m|1']);
    expect(closedUntil(Date.UTC(2025, 0, 1, 0, 12, 0), 300, 120)).toBe(Date.UTC(2025, 0, 1, 0, 10));
    expect(closedUntil(Date.UTC(2025, 0, 1, 0, 11, 59), 300, 120)).toBe(Date.UTC(2025, 0, 1, 0, 5));
  });
});

describe('dispatcher stages', () => {
  const receiver: ResolvedReceiver = { name: 'r', url: 'http://127.0.0.1:1/', secret: SECRET, format: 'evalgap', timeoutMs: 100, minBackoffMs: 5, maxBackoffMs: 20, maxAgeSeconds: 3600, headers: {} };
  const logger = pino({ level: 'silent' });

  it('retries until a 2xx; gives up past maxAge with a metric', async () => {
    const metrics = createMonitorMetrics();
    let calls = 0;
    const ctx: DispatchContext = {
      receiver,
      signal: new AbortController().signal,
      now: Date.now,
      logger,
      metrics,
      post: async () => {
        calls += 1;
        if (calls < 4) throw new DeliveryError('down', 503, true);
        return 200;
      },
    };
    expect(await deliver(ctx, [notification()])).toHaveLength(1);
    expect(calls).toBe(4);
    const v = async (result: string) => (await metrics.deliveries.get()).values.find((x) => x.labels.result === result)?.value ?? 0;
    expect([await v('retry'), await v('delivered')]).toEqual([3, 1]);

    let t = Date.now();
    const aging: DispatchContext = { ...ctx, now: () => (t += 400_000), post: async () => Promise.reject(new DeliveryError('down', 503, true)) };
    expect(await deliver(aging, [notification()])).toEqual([]);
    expect(await v('expired')).toBe(1);
  });
  it('a hostile receiver (refused, 500, a hang past the timeout, 401, then slow but in time) gets the alert once, verified', async () => {
    // a port that refuses first: reserve it, close it, and listen on it only after the first attempt
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const wh = new Webhook(SECRET);
    const behaviours = ['500', 'hang', '401', 'slow'];
    const acked: string[] = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const b = behaviours.shift() ?? 'ok';
        if (b === 'hang') return; // never answers: the sender's timeout ends it
        if (b === '500' || b === '401') {
          res.statusCode = Number(b);
          return res.end();
        }
        const verify = () => {
          wh.verify(Buffer.concat(chunks).toString('utf8'), req.headers as Record<string, string>);
          acked.push(String(req.headers['webhook-id']));
          res.end('{"ok":true}');
        };
        if (b === 'slow') setTimeout(verify, 150);
        else verify();
      });
    });
    let attempts = 0;
    const metrics = createMonitorMetrics();
    const r: ResolvedReceiver = { ...receiver, url: `http://127.0.0.1:${port}/`, timeoutMs: 400, minBackoffMs: 20, maxBackoffMs: 50 };
    const ctx: DispatchContext = {
      receiver: r,
      signal: new AbortController().signal,
      now: Date.now,
      logger,
      metrics,
      post: async (rr, n) => {
        attempts += 1;
        try {
          return await postNotification(rr, n);
        } finally {
          if (attempts === 1) await new Promise<void>((ok) => server.listen(port, '127.0.0.1', () => ok()));
        }
      },
    };
    try {
      const n = notification();
      expect(await deliver(ctx, [n])).toHaveLength(1);
      expect(attempts).toBe(5); // refused, 500, hang (timed out), 401, slow 2xx
      expect(acked).toEqual([n.webhookId]);
      const v = async (result: string) => (await metrics.deliveries.get()).values.find((x) => x.labels.result === result)?.value ?? 0;
      expect([await v('retry'), await v('delivered'), await v('expired')]).toEqual([4, 1, 0]);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((ok) => server.close(() => ok()));
    }
  });
});
