/**
 * Leader election through Kafka, no home-made lock: every member (the monitors of one election
 * group; the `run` instances of one consumer group, for periodic gap discovery) joins one consumer
 * group on a one-partition control topic; the member the group coordinator assigns partition 0 leads.
 * A member that stops leaves the group (a rebalance hands the partition on at once); one that dies
 * is dropped after the session timeout. Leadership is withdrawn as soon as a rebalance starts.
 * Two members can briefly both believe they lead (a paused process whose session expired): the
 * monitor's runner re-reads the durable checkpoint before each window, and every notification
 * carries a deterministic id, so such an overlap can repeat a delivery's id but never invent a new
 * alert; gap discovery skips a round when a recent discovery is already stored.
 */
import type { Consumer, Kafka } from 'kafkajs';
import type { Logger } from 'pino';
import { ensureTopics } from './kafka.js';

export interface ElectionOptions {
  topic: string;
  group: string;
  sessionTimeoutMs?: number;
  /** what the leader does, for the log lines (default: the monitor's) */
  roles?: { leader: string; standby: string };
}

export class Election {
  private consumer: Consumer | null = null;
  private leader = false;
  private listeners: ((leader: boolean) => void)[] = [];
  memberId = '';

  constructor(
    private readonly kafka: Kafka,
    private readonly opts: ElectionOptions,
    private readonly logger: Logger,
  ) {}

  isLeader(): boolean {
    return this.leader;
  }

  onChange(fn: (leader: boolean) => void): void {
    this.listeners.push(fn);
  }

  private set(leader: boolean): void {
    if (leader === this.leader) return;
    this.leader = leader;
    this.logger.info({ group: this.opts.group, memberId: this.memberId }, leader ? (this.opts.roles?.leader ?? 'elected: this monitor evaluates') : (this.opts.roles?.standby ?? 'not the evaluator (standby)'));
    for (const l of this.listeners) l(leader);
  }

  async start(): Promise<void> {
    await ensureTopics(this.kafka, [{ topic: this.opts.topic, numPartitions: 1 }]);
    const c = this.kafka.consumer({
      groupId: this.opts.group,
      sessionTimeout: this.opts.sessionTimeoutMs ?? 10_000,
      rebalanceTimeout: 10_000,
      heartbeatInterval: 1_000,
      maxWaitTimeInMs: 1_000,
      retry: { retries: 10 },
    });
    this.consumer = c;
    c.on(c.events.GROUP_JOIN, (e) => {
      this.memberId = e.payload.memberId;
      const parts = e.payload.memberAssignment[this.opts.topic] ?? [];
      this.set(parts.includes(0));
    });
    c.on(c.events.REBALANCING, () => this.set(false));
    c.on(c.events.CRASH, (e) => {
      this.logger.warn({ err: e.payload.error, restart: e.payload.restart }, 'election consumer crashed');
      this.set(false);
    });
    c.on(c.events.STOP, () => this.set(false));
    c.on(c.events.DISCONNECT, () => this.set(false));
    await c.connect();
    await c.subscribe({ topic: this.opts.topic, fromBeginning: false });
    // nothing is ever published there: the partition's owner is what matters
    await c.run({ autoCommit: false, eachMessage: async () => undefined });
  }

  async stop(): Promise<void> {
    this.set(false);
    await this.consumer?.disconnect();
    this.consumer = null;
  }
}
