/**
 * Webhook delivery from the outbox. Each receiver has its own consumer group on the alerts topic
 * (`<dispatchGroupPrefix>.<receiver>`), so receivers progress independently and several monitor
 * instances share the work (one delivers per receiver). A notification is retried with exponential
 * backoff and jitter (p-retry) until the receiver answers 2xx; only then is its offset committed.
 * A receiver down for hours, or evalgap restarted meanwhile, therefore loses nothing: the message
 * is read again. Past the receiver's maxAge (counted from when it entered the outbox) it is given
 * up with an error log line and `evalgap_alert_deliveries_total{result="expired"}`, never silently.
 * Receivers dedupe on webhook-id (a crash between a 2xx and the commit re-sends the same id).
 *
 * Per message, the stages (same signature as the monitor's): expire → retry → record.
 */
import type { Consumer, Kafka } from 'kafkajs';
import pRetry, { AbortError } from 'p-retry';
import type { Logger } from 'pino';
import type { Notification } from './alert.js';
import type { ResolvedReceiver } from './config.js';
import { pipeline, type Stage } from './lifecycle.js';
import type { MonitorMetrics } from './metrics.js';
import { parseNotification } from './outbox.js';
import { ensureTopics } from '../ingest/kafka.js';
import { DeliveryError, postNotification } from './webhook.js';

export interface DispatchContext {
  receiver: ResolvedReceiver;
  signal: AbortSignal;
  now: () => number;
  logger: Logger;
  metrics: MonitorMetrics;
  post: (r: ResolvedReceiver, n: Notification) => Promise<number>;
}

function age(ctx: DispatchContext, n: Notification): number {
  return (ctx.now() - Date.parse(n.createdAt)) / 1000;
}

function giveUp(ctx: DispatchContext, n: Notification, why: string): void {
  ctx.metrics.deliveries.inc({ receiver: ctx.receiver.name, result: 'expired' });
  ctx.logger.error(
    { receiver: ctx.receiver.name, webhookId: n.webhookId, rule: n.alert.rule, agent: n.alert.agent, ageSeconds: Math.round(age(ctx, n)), maxAgeSeconds: ctx.receiver.maxAgeSeconds, why },
    'alert notification given up: older than the receiver maxAge',
  );
}

/** Drop (with a log line and a metric) what is already too old to deliver. */
export const expire: Stage<DispatchContext> = async (ctx, items) =>
  items.filter((n) => {
    if (age(ctx, n) <= ctx.receiver.maxAgeSeconds) return true;
    giveUp(ctx, n, 'expired before the first attempt');
    return false;
  });

/** POST until a 2xx, with exponential backoff and jitter; give up past maxAge; abort on stop. */
export const retry: Stage<DispatchContext> = async (ctx, items) => {
  const done: Notification[] = [];
  for (const n of items) {
    const r = ctx.receiver;
    let expired = false;
    await pRetry(() => ctx.post(r, n), {
      forever: true,
      factor: 2,
      minTimeout: r.minBackoffMs,
      maxTimeout: r.maxBackoffMs,
      randomize: true,
      signal: ctx.signal,
      onFailedAttempt: (e) => {
        ctx.metrics.deliveries.inc({ receiver: r.name, result: 'retry' });
        const status = e instanceof DeliveryError ? e.status : 0;
        const fields = { receiver: r.name, webhookId: n.webhookId, attempt: e.attemptNumber, status, err: e.message };
        if (status >= 400 && status < 500 && e instanceof DeliveryError && !e.retryable) ctx.logger.error(fields, 'receiver refused the notification; retrying until maxAge (check its secret and URL)');
        else ctx.logger.warn(fields, 'webhook delivery failed; retrying');
        if (age(ctx, n) > r.maxAgeSeconds) {
          expired = true;
          throw new AbortError(`older than maxAge after ${e.attemptNumber} attempts`);
        }
      },
    }).catch((e) => {
      if (!expired) throw e; // stopping: leave it uncommitted, it is read again on restart
      giveUp(ctx, n, (e as Error).message);
    });
    if (!expired) done.push(n);
  }
  return done;
};

export const record: Stage<DispatchContext> = async (ctx, items) => {
  for (const n of items) {
    ctx.metrics.deliveries.inc({ receiver: ctx.receiver.name, result: 'delivered' });
    ctx.logger.info({ receiver: ctx.receiver.name, webhookId: n.webhookId, kind: n.kind, rule: n.alert.rule, agent: n.alert.agent }, 'alert delivered');
  }
  return items;
};

export const deliver = pipeline<DispatchContext>(expire, retry, record);

export interface DispatcherOptions {
  topic: string;
  groupPrefix: string;
  sessionTimeoutMs?: number;
  /** for tests: replace the HTTP POST */
  post?: DispatchContext['post'];
}

/** One consumer group per receiver on the alerts topic. */
export class Dispatcher {
  private consumers: Consumer[] = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly kafka: Kafka,
    private readonly receivers: ResolvedReceiver[],
    private readonly opts: DispatcherOptions,
    private readonly logger: Logger,
    private readonly metrics: MonitorMetrics,
  ) {}

  async start(): Promise<void> {
    if (this.receivers.length === 0) return;
    await ensureTopics(this.kafka, [{ topic: this.opts.topic, numPartitions: 1 }]);
    for (const receiver of this.receivers) {
      const c = this.kafka.consumer({
        groupId: `${this.opts.groupPrefix}.${receiver.name}`,
        sessionTimeout: this.opts.sessionTimeoutMs ?? 30_000,
        heartbeatInterval: 3_000,
        maxWaitTimeInMs: 1_000,
        retry: { retries: 10 },
      });
      this.consumers.push(c);
      await c.connect();
      await c.subscribe({ topic: this.opts.topic, fromBeginning: true });
      await c.run({
        autoCommit: false,
        partitionsConsumedConcurrently: 1,
        eachMessage: async ({ topic, partition, message, heartbeat }) => {
          let n: Notification;
          try {
            n = parseNotification(message.value);
          } catch (e) {
            this.metrics.deliveries.inc({ receiver: receiver.name, result: 'invalid' });
            this.logger.error({ receiver: receiver.name, topic, partition, offset: message.offset, err: (e as Error).message }, 'unreadable outbox message skipped');
            await c.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
            return;
          }
          // keep the group membership alive while retries sleep
          const beat = setInterval(() => void heartbeat().catch(() => undefined), 2_000);
          try {
            await deliver(
              {
                receiver,
                signal: this.abort.signal,
                now: Date.now,
                logger: this.logger,
                metrics: this.metrics,
                post: this.opts.post ?? ((r, x) => postNotification(r, x)),
              },
              [n],
            );
          } finally {
            clearInterval(beat);
          }
          // delivered (2xx) or given up with a log line: only now is the offset committed
          await c.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
        },
      });
    }
    this.logger.info({ receivers: this.receivers.map((r) => r.name), topic: this.opts.topic }, 'webhook dispatcher started');
  }

  async stop(): Promise<void> {
    this.abort.abort(new Error('stopping'));
    await Promise.all(this.consumers.map((c) => c.disconnect()));
    this.consumers = [];
  }
}
