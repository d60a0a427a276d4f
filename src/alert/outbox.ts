/**
 * The durable outbox: notifications are written to a Kafka topic (acks=all) before the evaluation
 * that produced them is checkpointed, so a crash after the evaluation loses no alert (the window is
 * evaluated again and produces the same ids). The dispatcher reads the topic (src/alert/dispatcher.ts).
 */
import type { Kafka, Producer } from 'kafkajs';
import { z } from 'zod';
import { ensureTopics } from '../ingest/kafka.js';
import type { Notification } from './alert.js';

export class Outbox {
  private producer: Producer | null = null;

  constructor(
    private readonly kafka: Kafka,
    readonly topic: string,
  ) {}

  async start(): Promise<void> {
    await ensureTopics(this.kafka, [{ topic: this.topic, numPartitions: 1 }]);
    this.producer = this.kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
    await this.producer.connect();
  }

  async send(items: Notification[]): Promise<void> {
    if (items.length === 0) return;
    if (!this.producer) throw new Error('outbox not started');
    await this.producer.send({
      topic: this.topic,
      acks: -1,
      messages: items.map((n) => ({
        key: n.alert.id,
        value: JSON.stringify(n),
        headers: { 'webhook-id': n.webhookId, kind: n.kind },
      })),
    });
  }

  async stop(): Promise<void> {
    await this.producer?.disconnect();
    this.producer = null;
  }
}

const Interval = z.object({ lo: z.number(), hi: z.number() });
const Rate = z.object({ units: z.number(), rate: z.number().nullable(), lo: z.number(), hi: z.number() });
const VersionComparisonSchema = z.object({
  verdict: z.enum(['rollback', 'promote']),
  baseline: z.string(),
  candidate: z.string(),
  since: z.string(),
  alpha: z.number(),
  tests: z.number(),
  segments: z.array(
    z.object({
      cluster: z.number().int(),
      segment: z.enum(['cluster', 'uncovered', 'all']),
      label: z.string().nullable(),
      share: z.number(),
      outcome: z.string(),
      conditionRatio: z.number(),
      baseline: Rate,
      candidate: Rate,
      difference: Interval,
      ratio: z.object({ lo: z.number(), hi: z.number().nullable() }),
      examples: z.array(z.string()),
    }),
  ),
});

const ClusterShareSchema = z.object({
  cluster: z.number().int(),
  label: z.string().optional(),
  shareNow: z.number(),
  shareReference: z.number(),
  shareEval: z.number(),
  examples: z.array(z.string()).optional(),
});

/** The outbox message, checked when the dispatcher reads it (another writer could share the topic). */
export const NotificationSchema = z.object({
  webhookId: z.string().min(1),
  kind: z.enum(['firing', 'reminder', 'resolved', 'notice']),
  createdAt: z.string().datetime(),
  group: z.object({ key: z.string(), firing: z.array(z.string()) }),
  alert: z.object({
    id: z.string().min(1),
    rule: z.enum(['uncovered_share', 'uncovered_vs_calibrated', 'novel_vs_calibrated', 'uncovered_budget', 'cluster_mix', 'eval_mismatch', 'escalation', 'uncovered_escalation', 'depth_mix', 'untested_chains', 'chain_failure', 'version_regression', 'weighted_score', 'novel_sessions']),
    agent: z.string(),
    cluster: z.number().int().nullable(),
    severity: z.enum(['info', 'warning', 'critical', 'rollback']),
    status: z.enum(['firing', 'resolved', 'notice']),
    onset: z.string(),
    windowStart: z.string(),
    windowEnd: z.string(),
    statistic: z.number().nullable().transform((v) => v ?? NaN),
    threshold: z.number().nullable().transform((v) => v ?? NaN),
    effect: z.object({ name: z.string(), value: z.number().nullable(), lo: z.number().nullable(), hi: z.number().nullable() }).transform((e) => ({
      name: e.name,
      value: e.value ?? NaN,
      lo: e.lo ?? NaN,
      hi: e.hi ?? NaN,
    })),
    summary: z.string(),
    clusters: z.array(ClusterShareSchema),
    comparison: VersionComparisonSchema.optional(),
    sql: z.string(),
    modelVersion: z.string(),
  }),
});

export function parseNotification(value: Buffer | null): Notification {
  return NotificationSchema.parse(JSON.parse(value?.toString('utf8') ?? 'null')) as Notification;
}
