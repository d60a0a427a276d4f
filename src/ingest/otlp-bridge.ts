/**
 * OpenTelemetry traces in: consumes the topic the Collector's Kafka exporter writes (OTLP protobuf
 * or JSON), assembles each trace's user turn (src/traces) and writes it to evalgap's request topic
 * as a native message, where `evalgap run`'s consumer takes it like any other. Bad payloads and
 * traces that never complete go to the dead-letter topic with the reason.
 *
 * Exactly once: each partition's output (turns, dead letters) and its offset commit are written in
 * one Kafka transaction (a transactional producer per source partition, so a member that lost the
 * partition is fenced off by the one that took it over). The committed offset stays at the first
 * message of the oldest open trace, with the assembler's replay marks in the commit's metadata
 * (src/traces/assemble.ts), so a restart re-reads open traces and emits nothing twice. The
 * request consumer reads committed transactions only (kafkajs's default).
 */
import type { Consumer, EachBatchPayload, Kafka, Producer } from 'kafkajs';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { PartitionAssembler } from '../traces/assemble.js';
import { decodeOtlpTraces, type OtlpEncoding, type Span } from '../traces/otlp.js';
import { turnFromTrace } from '../traces/turn.js';
import { ensureTopics } from './kafka.js';

export interface OtlpBridgeOptions {
  /** the exporter's topic (its default: otlp_spans) */
  sourceTopic: string;
  /** evalgap's request topic, where the turns go */
  requestsTopic: string;
  dlqTopic: string;
  /** the bridge's consumer group is `${group}.otlp` */
  group: string;
  encoding: OtlpEncoding;
  graceMs: number;
  maxHoldMs: number;
  /** a partition quiet this long is flushed (traces with a root are emitted) */
  idleMs: number;
  escalatedAttribute: string;
  maxMessageBytes: number;
  fromBeginning?: boolean;
  sessionTimeout?: number;
}

export interface OtlpBridgeMetrics {
  spans: Counter;
  turns: Counter;
  dropped: Counter;
  open: Gauge;
}

export function createOtlpBridgeMetrics(registry?: Registry): OtlpBridgeMetrics {
  const registers = registry ? [registry] : [];
  return {
    spans: new Counter({ name: 'evalgap_otlp_spans_total', help: 'spans read from the OTLP topic', registers }),
    turns: new Counter({ name: 'evalgap_otlp_turns_total', help: 'user turns assembled from traces and written to the request topic', registers }),
    dropped: new Counter({
      name: 'evalgap_otlp_dropped_total',
      help: 'what the OTLP bridge did not turn into a request, by reason (bad_payload and incomplete_trace are dead-lettered; late_span and no_user_message are only counted)',
      labelNames: ['reason'],
      registers,
    }),
    open: new Gauge({ name: 'evalgap_otlp_open_traces', help: 'traces held open waiting for their root or late children', registers }),
  };
}

interface PartitionState {
  assembler: PartitionAssembler;
  producer: Producer;
  /** serialises batches and idle flushes of the partition */
  chain: Promise<unknown>;
  lastActivity: number;
  /** the commit point last written, to skip empty idle transactions */
  committed: string;
}

type Out = { topic: string; messages: { key: string | null; value: Buffer | string; headers?: Record<string, string> }[] };

const DLQ_SPANS_CAP = 512 * 1024;

export class OtlpBridge {
  private consumer: Consumer | null = null;
  private readonly parts = new Map<number, PartitionState>();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  readonly metrics: OtlpBridgeMetrics;

  constructor(
    private readonly kafka: Kafka,
    private readonly logger: Logger,
    private readonly opts: OtlpBridgeOptions,
    metrics?: OtlpBridgeMetrics,
  ) {
    this.metrics = metrics ?? createOtlpBridgeMetrics();
  }

  private get groupId(): string {
    return `${this.opts.group}.otlp`;
  }

  async start(): Promise<void> {
    const o = this.opts;
    await ensureTopics(this.kafka, [{ topic: o.sourceTopic }, { topic: o.requestsTopic }]);
    const c = (this.consumer = this.kafka.consumer({
      groupId: this.groupId,
      sessionTimeout: o.sessionTimeout ?? 30_000,
      maxBytesPerPartition: Math.max(1_048_576, o.maxMessageBytes),
      retry: { retries: 10 },
    }));
    c.on(c.events.GROUP_JOIN, (e) => {
      // a new assignment: partition state is rebuilt from the committed offsets and their metadata
      void this.dropAll();
      this.logger.info({ assignment: e.payload.memberAssignment, group: this.groupId }, 'OTLP bridge joined its consumer group');
    });
    c.on(c.events.CRASH, () => void this.dropAll());
    await c.connect();
    await c.subscribe({ topic: o.sourceTopic, fromBeginning: o.fromBeginning ?? true });
    await c.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch: (p) => this.onBatch(p) });
    this.timer = setInterval(() => void this.idleFlush(), Math.max(200, Math.min(1000, o.idleMs / 2)));
    this.timer.unref();
    this.logger.info({ topic: o.sourceTopic, encoding: o.encoding, to: o.requestsTopic, group: this.groupId }, 'OTLP bridge started');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.consumer?.disconnect().catch(() => {});
    await this.dropAll();
  }

  private async dropAll(): Promise<void> {
    const states = [...this.parts.values()];
    this.parts.clear();
    await Promise.all(states.map(async (s) => {
      await s.chain.catch(() => {});
      await s.producer.disconnect().catch(() => {});
    }));
  }

  /** The partition's state: a fenced transactional producer first, then the committed offset and marks. */
  private async partition(partition: number): Promise<{ state: PartitionState; committedOffset: string | null }> {
    const have = this.parts.get(partition);
    if (have) return { state: have, committedOffset: null };
    const o = this.opts;
    const producer = this.kafka.producer({
      transactionalId: `${this.groupId}.${o.sourceTopic}.${partition}`,
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
    });
    await producer.connect();
    const admin = this.kafka.admin();
    await admin.connect();
    let offset = '-1';
    let metadata: string | null = null;
    try {
      const [t] = await admin.fetchOffsets({ groupId: this.groupId, topics: [o.sourceTopic] });
      const p = t?.partitions.find((x) => x.partition === partition);
      if (p) {
        offset = p.offset;
        metadata = p.metadata;
      }
    } finally {
      await admin.disconnect();
    }
    const assembler = new PartitionAssembler({ graceMs: o.graceMs, maxHoldMs: o.maxHoldMs, rememberMs: Math.max(o.maxHoldMs * 4, 600_000) });
    assembler.restore(offset === '-1' ? null : offset, metadata);
    const state: PartitionState = { assembler, producer, chain: Promise.resolve(), lastActivity: Date.now(), committed: '' };
    this.parts.set(partition, state);
    return { state, committedOffset: offset === '-1' ? null : offset };
  }

  private async onBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    if (!batch.messages.length) return;
    const { state, committedOffset } = await this.partition(batch.partition);
    // a fresh state must replay from exactly the committed offset its marks belong to
    if (committedOffset !== null && batch.firstOffset() !== committedOffset) {
      this.consumer!.seek({ topic: batch.topic, partition: batch.partition, offset: committedOffset });
      return;
    }
    const run = state.chain.then(async () => {
      const out = new Outbox(this.opts);
      let last: string | null = null;
      for (const m of batch.messages) {
        if (!isRunning() || isStale()) break;
        const decoded = decodeOtlpTraces(m.value, this.opts.encoding, this.opts.maxMessageBytes);
        if (!decoded.ok) {
          out.count.dropped('bad_payload');
          out.dead(m.value ?? Buffer.alloc(0), decoded.reason, batch.topic, batch.partition, m.offset);
        } else {
          out.count.spans += decoded.spans.length;
          const lateBefore = state.assembler.lateSpans;
          for (const c of state.assembler.push(BigInt(m.offset), decoded.spans, Date.now())) this.emit(out, c, batch.partition);
          const late = state.assembler.lateSpans - lateBefore;
          if (late) out.count.dropped('late_span', late);
        }
        last = m.offset;
      }
      if (last === null) return;
      await this.commit(state, out, batch.topic, batch.partition);
      resolveOffset(last);
      state.lastActivity = Date.now();
      await heartbeat();
    });
    state.chain = run.catch(() => {});
    try {
      await run;
    } catch (e) {
      // the transaction was aborted: forget the partition, kafkajs re-reads from the committed offset
      this.parts.delete(batch.partition);
      await state.producer.disconnect().catch(() => {});
      throw e;
    }
  }

  private emit(out: Outbox, c: ReturnType<PartitionAssembler['push']>[number], partition: number): void {
    if (c.kind === 'incomplete') {
      out.count.dropped('incomplete_trace');
      out.deadTrace(c.traceId, c.spans, c.reason, this.opts.sourceTopic, partition);
      return;
    }
    const turn = turnFromTrace(c.spans, { escalatedAttribute: this.opts.escalatedAttribute });
    if (!turn.ok) {
      out.count.dropped('no_user_message');
      return;
    }
    out.count.turns++;
    out.turn(turn.message.session_id ?? c.traceId, JSON.stringify(turn.message));
  }

  private async commit(state: PartitionState, out: Outbox, topic: string, partition: number): Promise<void> {
    const point = state.assembler.commitPoint();
    const txn = await state.producer.transaction();
    try {
      for (const t of out.topics()) await txn.send({ topic: t.topic, acks: -1, messages: t.messages });
      await txn.sendOffsets({
        consumerGroupId: this.groupId,
        topics: [{ topic, partitions: [{ partition, offset: point.offset, metadata: point.metadata } as { partition: number; offset: string }] }],
      });
      await txn.commit();
    } catch (e) {
      await txn.abort().catch(() => {});
      throw e;
    }
    state.committed = `${point.offset}|${point.metadata}`;
    this.counted(out);
    this.metrics.open.set([...this.parts.values()].reduce((n, s) => n + s.assembler.openTraces, 0));
  }

  /** Partitions quiet for idleMs: emit what has its root, give up what waited too long. */
  private async idleFlush(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    for (const [partition, state] of this.parts) {
      if (state.assembler.openTraces === 0 || now - state.lastActivity < this.opts.idleMs) continue;
      const run = state.chain.then(async () => {
        if (this.parts.get(partition) !== state) return;
        const out = new Outbox(this.opts);
        for (const c of state.assembler.flushIdle(Date.now())) this.emit(out, c, partition);
        const point = state.assembler.commitPoint();
        if (out.empty() && `${point.offset}|${point.metadata}` === state.committed) return this.counted(out);
        await this.commit(state, out, this.opts.sourceTopic, partition);
      });
      state.chain = run.catch(() => {});
      try {
        await run;
      } catch (e) {
        this.logger.warn({ err: e, partition }, 'OTLP bridge: idle flush failed; the partition is re-read from its committed offset');
        this.parts.delete(partition);
        await state.producer.disconnect().catch(() => {});
        this.consumer?.seek({ topic: this.opts.sourceTopic, partition, offset: await this.committedOffset(partition) });
      }
    }
  }

  /**
   * The counters move only for what a committed transaction wrote: a transaction that fails is
   * aborted and its batch read again, and would otherwise be counted twice.
   */
  private counted(out: Outbox): void {
    const c = out.count;
    if (c.spans) this.metrics.spans.inc(c.spans);
    if (c.turns) this.metrics.turns.inc(c.turns);
    for (const [reason, n] of c.drops) this.metrics.dropped.inc({ reason }, n);
  }

  private async committedOffset(partition: number): Promise<string> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const [t] = await admin.fetchOffsets({ groupId: this.groupId, topics: [this.opts.sourceTopic] });
      const p = t?.partitions.find((x) => x.partition === partition);
      return p && p.offset !== '-1' ? p.offset : '0';
    } finally {
      await admin.disconnect();
    }
  }
}

/** What one transaction writes: turns to the request topic, dead letters to the dead-letter topic. */
class Outbox {
  private turns: Out['messages'] = [];
  private dlq: Out['messages'] = [];
  /** what this transaction's metrics will count once it commits */
  readonly count = {
    spans: 0,
    turns: 0,
    drops: new Map<string, number>(),
    dropped(reason: string, n = 1): void {
      this.drops.set(reason, (this.drops.get(reason) ?? 0) + n);
    },
  };

  constructor(private readonly opts: OtlpBridgeOptions) {}

  empty(): boolean {
    return this.turns.length === 0 && this.dlq.length === 0;
  }

  turn(key: string, value: string): void {
    this.turns.push({ key, value });
  }

  dead(value: Buffer, reason: string, topic: string, partition: number, offset: string): void {
    this.dlq.push({
      key: null,
      value: value.subarray(0, this.opts.maxMessageBytes),
      headers: {
        'evalgap-error': reason.slice(0, 2000),
        'evalgap-source-topic': topic,
        'evalgap-source-partition': String(partition),
        'evalgap-source-offset': offset,
        'evalgap-failed-at': new Date().toISOString(),
      },
    });
  }

  deadTrace(traceId: string, spans: Span[], reason: string, topic: string, partition: number): void {
    let value = JSON.stringify({ trace_id: traceId, reason, spans });
    if (value.length > DLQ_SPANS_CAP) value = JSON.stringify({ trace_id: traceId, reason, spans: spans.length, truncated: true });
    this.dlq.push({
      key: traceId,
      value,
      headers: { 'evalgap-error': reason, 'evalgap-source-topic': topic, 'evalgap-source-partition': String(partition), 'evalgap-failed-at': new Date().toISOString() },
    });
  }

  topics(): Out[] {
    const out: Out[] = [];
    if (this.turns.length) out.push({ topic: this.opts.requestsTopic, messages: this.turns });
    if (this.dlq.length) out.push({ topic: this.opts.dlqTopic, messages: this.dlq });
    return out;
  }
}
