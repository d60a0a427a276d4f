/**
 * The agent monitor rules end to end with the real parts: an eval set whose cases give `turn`
 * (1 or 2) and `tools` is fitted by the CLI (agent.json beside the model), `evalgap run` streams
 * four hours of session traffic through the real broker, model and engine (sessions of four turns,
 * so a quarter of the turns are at turn 4+, where the eval set has no case; in the last hour a
 * tool chain no eval case takes appears in a fifth of the requests), and the monitor started as
 * `evalgap monitor` starts it (context from the model folder, the agent rules beside the core)
 * sends signed webhooks naming `depth_mix` and `untested_chains`; `monitor --backtest` finds them too.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { startRun } from '../../src/cli/run.js';
import { monitorBacktest, startMonitor } from '../../src/cli/monitor.js';
import { sampleEvalSet, sampleTraffic } from '../../src/cli/sample-data.js';
import { Store } from '../../src/store/store.js';
import { groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';
import { monitorConfig, startReceiver, type Payload } from '../helpers/monitor.js';

const run = promisify(execFile);
const CLI = path.join(PACKAGE_ROOT, 'dist/cli/main.js');
const kafka = testKafka();
const HOUR = 3_600_000;
const CHAINS = [['order_lookup'], ['order_lookup', 'refund'], ['search_kb'], ['account_lookup', 'reset_password'], [], ['search_kb', 'create_ticket']];
const UNTESTED = ['search_kb', 'escalate_human', 'create_ticket'];
/** four whole hours ending 20 minutes ago: every window and session closed */
const END = Math.floor((Date.now() - 20 * 60_000) / 300_000) * 300_000;
const START = END - 4 * HOUR;
const CHANGE = END - HOUR;

const evalCases = sampleEvalSet(30).map((c, i) => ({ ...c, turn: 1 + (i % 2), tools: CHAINS[Math.floor(i / 30)] }));
const topics = [...new Set(evalCases.map((c) => c.tags[0]!))];
// a session a minute, four turns 20 s apart, one topic per session
const pool = sampleTraffic(1200, { seed: 41, surpriseShare: 0, idPrefix: uniqueName('ar') });
const traffic = pool.slice(0, 4 * 240).map((t, i) => {
  const session = Math.floor(i / 4);
  const turn = 1 + (i % 4);
  const ts = START + session * 60_000 + (turn - 1) * 20_000;
  const topic = Math.max(0, topics.indexOf(pool[session * 4]!.topic_hint));
  const q = pool.slice(session * 4).find((x) => x.topic_hint === topics[topic]) ?? t;
  const late = ts >= CHANGE;
  const tools = late && i % 5 === 0 ? UNTESTED : CHAINS[topic]!;
  return { ...t, query: q.query, ts: new Date(ts).toISOString(), session_id: `sess-${session}`, turn, tools, agent: 'support-bot' };
});

let dir: string;
let cfg: Config;
let modelDir: string;

beforeAll(async () => {
  dir = tmpDir();
  const topic = uniqueName('evalgap.test.agentrules');
  cfg = testConfig(path.join(dir, 'chdb'));
  cfg = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group: uniqueName('g') }, ingest: { ...cfg.ingest, metricsPort: -1 } };
  fs.writeFileSync(path.join(dir, 'evalset.jsonl'), evalCases.map((c) => JSON.stringify(c)).join('\n') + '\n');
  modelDir = path.join(dir, 'model');
  await run('node', [CLI, 'fit', path.join(dir, 'evalset.jsonl'), '--out', modelDir], { env: { ...process.env, EVALGAP_LOG_LEVEL: 'warn' } });
  expect(fs.existsSync(path.join(modelDir, 'agent.json'))).toBe(true);
  const running = await startRun(cfg, modelDir, createLogger('silent'));
  try {
    const p = kafka.producer();
    await p.connect();
    await produceJson(p, topic, traffic);
    await p.disconnect();
    await waitFor(() => groupCaughtUp(kafka, cfg.kafka.group, topic), 300_000, 'the run to store every message');
  } finally {
    await running.stop();
  }
}, 600_000);

// short warm-ups so that four hours of traffic are enough (the defaults want a day and 200 sessions)
const AGENT_RULES = { warmupHours: 2, warmupSessions: 40, minSessions: 20, minRequests: 50 };

describe('agent monitor rules against the real broker, engine and model', () => {
  it('evalgap monitor sends signed webhooks naming depth_mix and untested_chains', async () => {
    const { receiver, secret } = await startReceiver();
    const mc = monitorConfig(receiver.url, secret, { agentRules: AGENT_RULES });
    const store = await Store.open(cfg.clickhouse, { migrate: false });
    const mon = await startMonitor(cfg, mc, modelDir, createLogger('silent'), { store, kafka });
    try {
      await mon.runner.tick({ force: true });
      await waitFor(
        async () => {
          const rules = new Set(receiver.received.map((r) => (r.body as Payload).alert.rule));
          return rules.has('depth_mix') && rules.has('untested_chains');
        },
        120_000,
        'webhooks naming depth_mix and untested_chains',
      );
      const got = receiver.received.map((r) => r.body as Payload);
      expect(receiver.rejected).toBe(0);
      const depth = got.find((p) => p.alert.rule === 'depth_mix' && p.kind === 'firing')!;
      expect(depth.alert.summary).toMatch(/deeper than the eval set tests: .* turn 4\+/);
      // the eval set's depth is known from the first window: depth_mix fires long before the change
      expect(Date.parse(depth.alert.onset)).toBeLessThan(CHANGE);
      const chains = got.find((p) => p.alert.rule === 'untested_chains' && p.kind === 'firing')!;
      expect(chains.alert.summary).toContain(UNTESTED.join(' → '));
      // relative to production: not before the chain appeared
      expect(Date.parse(chains.alert.onset)).toBeGreaterThanOrEqual(CHANGE);
      expect(got.filter((p) => p.alert.rule === 'chain_failure')).toEqual([]);
    } finally {
      await mon.stop();
      await receiver.stop();
      await store.close();
    }
  }, 300_000);

  it('monitor --backtest finds the same, and without agent.json the agent rules stay silent', async () => {
    const mc = monitorConfig(null, '', { agentRules: AGENT_RULES });
    const out = JSON.parse(await monitorBacktest(cfg, mc, modelDir, new Date(START).toISOString(), new Date(END).toISOString(), true)) as { notifications: { alert: { rule: string } }[] };
    const rules = new Set(out.notifications.map((n) => n.alert.rule));
    expect(rules.has('depth_mix')).toBe(true);
    expect(rules.has('untested_chains')).toBe(true);
    // the same model folder without agent.json
    const bare = path.join(dir, 'model-bare');
    fs.cpSync(modelDir, bare, { recursive: true });
    fs.rmSync(path.join(bare, 'agent.json'));
    const out2 = JSON.parse(await monitorBacktest(cfg, mc, bare, new Date(START).toISOString(), new Date(END).toISOString(), true)) as { notifications: { alert: { rule: string } }[] };
    expect(out2.notifications.filter((n) => ['depth_mix', 'untested_chains', 'chain_failure'].includes(n.alert.rule))).toEqual([]);
  }, 300_000);
});
