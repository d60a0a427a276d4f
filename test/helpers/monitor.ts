/** Set-up for the monitor's integration tests: real rows with controlled timestamps, configs, runners. */
import type { Kafka } from 'kafkajs';
import { pino } from 'pino';
import { newSecret, parseMonitorConfig, type MonitorConfig } from '../../src/alert/config.js';
import { contextFromManifest, MonitorRunner } from '../../src/alert/runner.js';
import { WebhookReceiver } from '../../src/alert/receiver.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import type { CoverageAssigner } from '../../src/coverage/model.js';
import type { Embedder } from '../../src/embed/embedder.js';
import { processMessages } from '../../src/ingest/process.js';
import { createEvaluator } from './threshold-evaluator.js';
import { aggregateRows, type RequestRow, type Store } from '../../src/store/store.js';
import { randomUUID } from 'node:crypto';
import type { WindowCounts } from '../../src/monitor/types.js';
import { uniqueName } from './fixtures.js';

export const MIN = 60_000;
/** a whole hour 4 to 5 hours ago: recent enough for the tables' TTL, old enough for every test window to be closed */
export const T0 = Math.floor((Date.now() - 4 * 60 * MIN) / (60 * MIN)) * 60 * MIN;

export interface Segment {
  /** minutes after T0 */
  from: number;
  minutes: number;
  perMinute: number;
  surprise: number;
  seed: number;
}

/** Request logs of consecutive segments (same shape as the demo's traffic), with controlled timestamps. */
export function traffic(segments: Segment[], prefix: string) {
  return segments.flatMap((s, i) =>
    sampleTraffic(s.minutes * s.perMinute, { seed: s.seed, start: T0 + s.from * MIN, stepMs: MIN / s.perMinute, surpriseShare: s.surprise, idPrefix: `${prefix}-${i}` }),
  );
}

/** Embed and assign with the real model, as evalgap run does, without Kafka. */
export async function assignRows(values: unknown[], embedder: Embedder, assigner: CoverageAssigner, topic = 'monitor-test'): Promise<RequestRow[]> {
  const res = await processMessages(
    values.map((v, i) => ({ topic, partition: 0, offset: String(i), value: Buffer.from(JSON.stringify(v)) })),
    { embedder, assigner, redactText: false },
  );
  if (res.dead.length) throw new Error(`unexpected dead letters: ${res.dead[0].reason}`);
  return res.rows;
}

export const RULES = { uncovered_share: { threshold: 0.35, minRequests: 20 } };

export function monitorConfig(receiverUrl: string | null, secret: string, over: Record<string, unknown> = {}): MonitorConfig {
  return parseMonitorConfig({
    controlTopic: uniqueName('evalgap.test.control'),
    electionGroup: uniqueName('monitor'),
    alertsTopic: uniqueName('evalgap.test.alerts'),
    dispatchGroupPrefix: uniqueName('dispatch'),
    notifyBackfill: true,
    pollSeconds: 0.5,
    // 5-minute windows: the fixed-threshold test evaluator needs 20 requests a window, and these
    // tests send 12 a minute (the process tests run the default 30-second windows)
    windowSeconds: 300,
    receivers: receiverUrl ? [{ name: 'test', url: receiverUrl, secret, minBackoffMs: 100, maxBackoffMs: 400, timeoutMs: 2000 }] : [],
    ...over,
  });
}

export function makeRunner(
  store: Store,
  kafka: Kafka,
  manifest: Parameters<typeof contextFromManifest>[0],
  config: MonitorConfig,
  clock?: () => Date,
  seen?: WindowCounts[][],
): MonitorRunner {
  // a fixed-threshold test evaluator (its own rules, not the config's): deterministic verdicts
  const evaluate = createEvaluator(RULES);
  return new MonitorRunner({
    store,
    kafka,
    logger: pino({ level: process.env.EVALGAP_TEST_LOG ?? 'silent' }),
    evaluate: (state, windows, ctx) => {
      seen?.push(windows);
      return evaluate(state, windows, ctx);
    },
    ctx: contextFromManifest(manifest),
    config,
    clock,
    sessionTimeoutMs: 6_000,
  });
}

export async function startReceiver(): Promise<{ receiver: WebhookReceiver; secret: string }> {
  const secret = newSecret();
  const receiver = new WebhookReceiver({ secret });
  await receiver.start(0);
  return { receiver, secret };
}

export type Payload = {
  id: string;
  kind: string;
  alert: { id: string; status: string; rule: string; agent: string; onset: string; clusters: { cluster: number; label: string | null; share_now: number; examples: string[] }[]; sql: string; summary: string };
};

/** Store rows as `evalgap run` does: the raw rows and their 5-minute aggregates (there is no view). */
export async function storeRows(store: Store, rows: RequestRow[]): Promise<void> {
  const token = `test:${randomUUID()}`;
  await store.insertRequests(rows, `raw:${token}`);
  await store.insertAggregates(aggregateRows(rows), `agg:${token}`);
}
