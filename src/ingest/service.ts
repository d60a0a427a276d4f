/**
 * `evalgap run`: a kafkajs consumer-group member that turns request logs into stored, assigned rows.
 *
 * Delivery: offsets are committed only after the batch's rows are in ClickHouse. Each row carries
 * its Kafka topic/partition/offset. Per batch slice: one insert of the raw rows (all days at once),
 * the 'raw' progress mark, the slice's aggregates, the 'agg' mark, then the commit. After every
 * rebalance an instance repairs each partition it owns (store.repairPartition: rows above the
 * 'raw' mark are an unfinished insert and are deleted; missing aggregates are recomputed from raw
 * rows under the token the interrupted insert had) and skips redelivered messages at or below the
 * 'raw' mark. So a crash anywhere neither loses nor duplicates rows or aggregates. An insert that
 * fails on its data (a ClickHouse data error, not an outage) is split in halves until the rows the
 * engine refuses are isolated; those are dead-lettered with the reason and the rest stored.
 */
import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Consumer, EachBatchPayload, Kafka, Producer } from 'kafkajs';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import { refuseBrowserRequest } from '../config/http-guard.js';
import { maskUrl, type Config } from '../config/index.js';
import type { CoverageAssigner } from '../coverage/model.js';
import type { AssignerSource } from './model-watch.js';
import type { Embedder } from '../embed/embedder.js';
import { aggregateRows, aggToken, dataError, type IngestProgress, type RequestRow, type Store } from '../store/store.js';
import { ensureTopics, topicMaxMessageBytes } from './kafka.js';
import type { QueryEndpoint } from '../store/http-query.js';
import { createIngestMetrics, type IngestMetrics } from './metrics.js';
import { CallSizer, processMessages, type DeadLetter, type SourceMessage } from './process.js';

export interface IngestDeps {
  kafka: Kafka;
  store: Store;
  embedder: Embedder;
  /** a fixed model, or a source read once per batch (hot reload: src/ingest/model-watch.ts) */
  assigner: CoverageAssigner | AssignerSource;
  logger: Logger;
  metrics?: IngestMetrics;
  /** read-only POST /query on the metrics port (src/store/http-query.ts) */
  queries?: QueryEndpoint;
}

export interface IngestOptions {
  topic: string;
  dlqTopic: string;
  group: string;
  redactText: boolean;
  maxBatchMessages: number;
  /** 0 = ephemeral port; -1 = no HTTP server */
  metricsPort: number;
  fromBeginning?: boolean;
  /** partitions for the topics when evalgap creates them */
  partitions?: number;
  sessionTimeout?: number;
  /** HMAC key of redactText */
  redactKey?: string;
  maxMessageBytes?: number;
  maxDepth?: number;
  /** rows older than this are dead-lettered (the TTL would delete them on arrival) */
  retentionDays?: number;
  maxFutureHours?: number;
  stallSeconds?: number;
  lagIntervalSeconds?: number;
  /** called once when the consumer crashed for good: the process should exit non-zero */
  onFatal?: (err: Error) => void;
  /**
   * an embedding call lasts about this long at most (ms; default: a sixth of the session timeout,
   * at most 5 s): the call size follows the measured speed (process.ts CallSizer)
   */
  embedCallTargetMs?: number;
}

/** How long stop() waits for kafkajs to leave the group (a re-join in progress can take the rebalance timeout). */
const LEAVE_WAIT_MS = 10_000;

/** Thrown inside a batch when the service stops: the batch is given up before its next write. */
class StoppingError extends Error {
  constructor() {
    super('stopping');
    this.name = 'StoppingError';
  }
}

/** Headroom kept below a topic's max.message.bytes for the key, headers and record-batch overhead. */
const DLQ_HEADROOM = 64 * 1024;

export function ingestOptionsFrom(cfg: Config, over: Partial<IngestOptions> = {}): IngestOptions {
  return {
    topic: cfg.kafka.topic,
    dlqTopic: cfg.kafka.dlqTopic,
    group: cfg.kafka.group,
    redactText: cfg.ingest.redactText,
    maxBatchMessages: cfg.ingest.maxBatchMessages,
    metricsPort: cfg.ingest.metricsPort,
    redactKey: cfg.ingest.redactKey,
    maxMessageBytes: cfg.ingest.maxMessageBytes,
    maxDepth: cfg.ingest.maxDepth,
    retentionDays: cfg.clickhouse.retentionDays,
    maxFutureHours: cfg.ingest.maxFutureHours,
    stallSeconds: cfg.ingest.stallSeconds,
    lagIntervalSeconds: cfg.ingest.lagIntervalSeconds,
    sessionTimeout: cfg.ingest.sessionTimeoutMs,
    ...over,
  };
}

export class IngestService {
  readonly metrics: IngestMetrics;
  private consumer: Consumer | null = null;
  private producer: Producer | null = null;
  private server: http.Server | null = null;
  private readonly watermarks = new Map<string, IngestProgress>();
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private running = false;
  private stopping: Promise<void> | null = null;
  /** partitions this instance has been assigned (across rebalances), for tests and logs */
  readonly assigned = new Set<string>();
  private storeHealthy = true;
  /** set when the consumer crashed for good: liveness fails, the process is expected to exit */
  private crashed: Error | null = null;
  private brokerOk = true;
  private brokerError = '';
  /** messages waiting (high watermark − committed), from the broker, by the lag timer */
  private waiting = 0;
  private lastProgress = Date.now();
  private lagTimer: NodeJS.Timeout | null = null;
  /** the largest dead-letter value that fits the dead-letter topic */
  private dlqValueCap = 1_048_576 - DLQ_HEADROOM;
  /** texts per embedding call, from the measured speed */
  readonly sizer: CallSizer;
  /** the batch being handled, awaited by stop() before anything it uses is closed */
  private inFlight: Promise<void> | null = null;
  /** this member's id in the group, and when its last heartbeat was acknowledged */
  private memberId: string | null = null;
  private lastHeartbeat = Date.now();
  /** the longest time between acknowledged heartbeats since the last join (ms) */
  private longestSilence = 0;
  /** why the last heartbeat failed, when it did (kafkajs error type) */
  private heartbeatError: string | null = null;
  /** times this member was evicted from its group (also a metric) */
  evictions = 0;
  port = 0;

  constructor(
    private readonly deps: IngestDeps,
    private readonly opts: IngestOptions,
  ) {
    this.metrics = deps.metrics ?? createIngestMetrics(opts.metricsPort >= 0);
    this.sizer = new CallSizer(opts.embedCallTargetMs ?? Math.min(5000, this.sessionTimeout() / 6));
  }

  private sessionTimeout(): number {
    return this.opts.sessionTimeout ?? 30_000;
  }

  private heartbeatInterval(): number {
    return Math.min(3_000, Math.floor(this.sessionTimeout() / 3));
  }

  /** The model that scores the next batch. */
  private assigner(): CoverageAssigner {
    const a = this.deps.assigner;
    return 'current' in a ? a.current() : a;
  }

  async start(): Promise<void> {
    const { kafka, logger, store } = this.deps;
    const assigner = this.assigner();
    const o = this.opts;
    const maxBytes = o.maxMessageBytes ?? 1_048_576;
    await ensureTopics(kafka, [
      { topic: o.topic, numPartitions: o.partitions ?? 1 },
      // a dead letter carries the original bytes: the topic takes the largest accepted message
      { topic: o.dlqTopic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: String(maxBytes + DLQ_HEADROOM) }] },
    ]);
    // an existing dead-letter topic may be smaller: larger values are truncated to fit, with size and hash
    const dlqMax = await topicMaxMessageBytes(kafka, o.dlqTopic).catch(() => null);
    this.dlqValueCap = Math.max(1024, (dlqMax ?? 1_048_588) - DLQ_HEADROOM);
    await store.registerClusters(
      assigner.model.manifest.clusters.map((c) => ({
        model_version: assigner.version,
        cluster: c.id,
        label: c.label,
        size: c.size,
        share: c.share,
        examples: c.examples,
      })),
    );
    this.producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: false });
    await this.producer.connect();
    this.consumer = kafka.consumer({
      groupId: o.group,
      sessionTimeout: this.sessionTimeout(),
      rebalanceTimeout: Math.max(this.sessionTimeout(), 10_000),
      heartbeatInterval: this.heartbeatInterval(),
      maxBytesPerPartition: 1_048_576,
      retry: { retries: 10 },
    });
    const c = this.consumer;
    c.on(c.events.GROUP_JOIN, (e) => {
      // a new member id for a member that had one: the coordinator dropped the old one (evicted)
      const before = this.memberId;
      this.memberId = e.payload.memberId;
      if (before !== null && before !== e.payload.memberId) this.evicted(before);
      this.lastHeartbeat = Date.now();
      this.longestSilence = 0;
      this.heartbeatError = null;
      // a new assignment: stored watermarks must be read again for whatever this instance now owns
      this.watermarks.clear();
      for (const [topic, parts] of Object.entries(e.payload.memberAssignment)) {
        for (const p of parts) this.assigned.add(`${topic}:${p}`);
      }
      logger.info({ assignment: e.payload.memberAssignment, group: o.group, memberId: e.payload.memberId }, 'joined consumer group');
    });
    c.on(c.events.CRASH, (e) => {
      logger.error({ err: e.payload.error, restart: e.payload.restart }, 'consumer crashed');
      // kafkajs restarts the consumer after retriable errors; any other crash leaves a member that
      // consumes nothing: that is fatal (liveness fails, the process exits non-zero), never a zombie
      if (!e.payload.restart && this.running) this.fatal(e.payload.error);
    });
    c.on(c.events.FETCH, () => {
      this.brokerOk = true;
    });
    c.on(c.events.HEARTBEAT, () => {
      const now = Date.now();
      this.longestSilence = Math.max(this.longestSilence, now - this.lastHeartbeat);
      this.lastHeartbeat = now;
    });
    c.on(c.events.REBALANCING, () => {
      logger.info({ group: o.group, memberId: this.memberId }, 'consumer group rebalancing: re-joining');
    });
    await c.connect();
    await c.subscribe({ topic: o.topic, fromBeginning: o.fromBeginning ?? true });
    this.loopDelay.enable();
    if (o.metricsPort >= 0) await this.startHttp(o.metricsPort);
    this.running = true;
    this.lastProgress = Date.now();
    this.lagTimer = setInterval(() => void this.measureLag(), (o.lagIntervalSeconds ?? 10) * 1000);
    this.lagTimer.unref();
    void this.measureLag();
    await c.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (p) => this.handleBatch(p),
    });
    logger.info(
      {
        topic: o.topic,
        group: o.group,
        model: assigner.version,
        // the embedded engine's location is its data folder, not a URL
        ...(store.kind === 'embedded' ? { engine: 'chdb (embedded)', dataDir: store.location } : { engine: 'clickhouse server', store: maskUrl(store.location) }),
        metricsPort: this.port,
      },
      'evalgap run started',
    );
  }

  /** The partition's progress marks, repaired once after each (re)assignment. */
  private async watermark(topic: string, partition: number): Promise<IngestProgress> {
    const key = `${topic}:${partition}`;
    let w = this.watermarks.get(key);
    if (w === undefined) {
      const r = await this.withStoreRetry(() => this.deps.store.repairPartition(topic, partition), () => true);
      if (r.deleted || r.aggregated) {
        this.deps.logger.info({ topic, partition, deletedUnfinished: r.deleted, aggregatesRepaired: r.aggregated, raw: String(r.raw) }, 'partition repaired');
      }
      w = { raw: r.raw, agg: r.agg };
      this.watermarks.set(key, w);
    }
    return w;
  }

  /**
   * The coordinator no longer knows this member: its session expired (no heartbeat for the session
   * timeout) or it did not re-join within the rebalance timeout. Its uncommitted batch is consumed
   * again by whichever member owns the partition now (skipped where already stored).
   */
  private evicted(oldMember: string): void {
    this.evictions++;
    this.metrics.evictions.inc();
    const silence = Math.max(this.longestSilence, Date.now() - this.lastHeartbeat);
    const speed = this.sizer.speed();
    this.deps.logger.warn(
      {
        group: this.opts.group,
        oldMemberId: oldMember,
        newMemberId: this.memberId,
        sessionTimeoutMs: this.sessionTimeout(),
        heartbeatError: this.heartbeatError,
        longestHeartbeatGapMs: silence,
        embedMsPerText: speed === null ? null : Number(speed.toFixed(2)),
        textsPerCall: this.sizer.size(),
        eventLoopDelayMaxMs: Math.round(this.loopDelay.max / 1e6),
      },
      `evicted from consumer group ${this.opts.group}: the coordinator dropped this member ` +
        `(${this.heartbeatError ?? 'no heartbeat'}; longest gap between heartbeats ${(silence / 1000).toFixed(1)} s, session timeout ` +
        `${this.sessionTimeout() / 1000} s). Its uncommitted batch is redone. If it repeats, the machine is too slow or too busy for the ` +
        `session timeout: raise EVALGAP_SESSION_TIMEOUT_MS (docs/operations.md, Troubleshooting)`,
    );
  }

  /**
   * Heartbeats on a timer while a batch is handled, so that the session stays alive whatever one
   * embedding call or store write takes (the work runs in worker threads and in the engine, off
   * this event loop). `check()` throws the heartbeat's error once the member has lost its place
   * (a rebalance, an eviction): the batch is then given up before anything is written.
   */
  private keepAlive(heartbeat: () => Promise<void>): { check: () => Promise<void>; stop: () => void } {
    let lost: unknown = null;
    const beat = () =>
      heartbeat().then(
        () => {
          this.heartbeatError = null;
        },
        (e: unknown) => {
          const type = (e as { type?: string }).type ?? (e as Error).name;
          this.heartbeatError = type;
          // rebalance in progress, unknown member, illegal generation: kafkajs re-joins once the
          // batch is given up; anything else (a broker blip) is retried at the next beat
          if (type === 'REBALANCE_IN_PROGRESS' || type === 'UNKNOWN_MEMBER_ID' || type === 'ILLEGAL_GENERATION' || type === 'FENCED_INSTANCE_ID') lost ??= e;
        },
      );
    const timer = setInterval(() => void beat(), Math.max(200, Math.floor(this.heartbeatInterval() / 2)));
    return {
      check: async () => {
        if (lost) throw lost;
        if (!this.running) throw new StoppingError();
        await heartbeat();
      },
      stop: () => clearInterval(timer),
    };
  }

  private fatal(err: Error): void {
    if (this.crashed) return;
    this.crashed = err;
    this.running = false;
    this.deps.logger.fatal({ err }, 'the consumer stopped for good; exiting so that a supervisor restarts it');
    this.opts.onFatal?.(err);
  }

  /** Lag from the broker's high watermarks and the group's committed offsets, on a timer. */
  private async measureLag(): Promise<void> {
    if (!this.running) return;
    const admin = this.deps.kafka.admin();
    try {
      await admin.connect();
      const ends = await admin.fetchTopicOffsets(this.opts.topic);
      const [committed] = await admin.fetchOffsets({ groupId: this.opts.group, topics: [this.opts.topic] });
      let waiting = 0;
      for (const e of ends) {
        const c = committed?.partitions.find((p) => p.partition === e.partition);
        const done = c && BigInt(c.offset) >= 0n ? BigInt(c.offset) : BigInt(e.low);
        const lag = Math.max(0, Number(BigInt(e.high) - done));
        waiting += lag;
        this.metrics.lag.set({ topic: this.opts.topic, partition: String(e.partition) }, lag);
      }
      // the stall clock starts when messages start waiting, not at the last batch of an idle stream
      if (this.waiting === 0) this.lastProgress = Date.now();
      this.waiting = waiting;
      this.brokerOk = true;
      this.brokerError = '';
    } catch (e) {
      this.brokerOk = false;
      this.brokerError = (e as Error).message;
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  /** Liveness and readiness, with the reasons. */
  health(): { live: boolean; ready: boolean; reasons: string[]; stalledSeconds: number } {
    const reasons: string[] = [];
    if (this.crashed) reasons.push(`consumer crashed: ${this.crashed.message}`);
    else if (!this.running) reasons.push('not running');
    if (!this.storeHealthy) reasons.push('store failing');
    if (!this.brokerOk) reasons.push(`broker unreachable: ${this.brokerError}`);
    const stalledSeconds = this.waiting > 0 ? (Date.now() - this.lastProgress) / 1000 : 0;
    if (stalledSeconds > (this.opts.stallSeconds ?? 120)) reasons.push(`no progress for ${Math.round(stalledSeconds)} s with ${this.waiting} messages waiting`);
    return { live: this.running && !this.crashed, ready: reasons.length === 0, reasons, stalledSeconds };
  }

  /** Retry a store call with backoff until it succeeds or the service stops (then it throws). */
  private async withStoreRetry<T>(fn: () => Promise<T>, onFailure: (attempt: number) => boolean | Promise<boolean>): Promise<T> {
    return pRetry(fn, {
      forever: true,
      retries: 10,
      minTimeout: 200,
      maxTimeout: 10_000,
      factor: 2,
      // a data error is not an outage: no retry can fix it (the caller isolates the rows)
      shouldRetry: (e) => dataError(e) === null,
      onFailedAttempt: async (e) => {
        this.metrics.storeErrors.inc();
        this.storeHealthy = false;
        this.deps.logger.warn({ err: e, attempt: e.attemptNumber }, 'ClickHouse write failed; retrying');
        if (!this.running || !(await onFailure(e.attemptNumber))) throw new Error('stopping while the store is unavailable');
      },
    }).then((v) => {
      this.storeHealthy = true;
      return v;
    });
  }

  private handleBatch(p: EachBatchPayload): Promise<void> {
    const run = this.handleBatchInner(p);
    const tracked = run.then(
      () => {},
      () => {},
    );
    this.inFlight = tracked;
    void tracked.finally(() => {
      if (this.inFlight === tracked) this.inFlight = null;
    });
    return run.catch((e) => {
      // stopping: the batch is given up uncommitted (redelivered to the next owner), not an error
      if (e instanceof StoppingError) return;
      throw e;
    });
  }

  private async handleBatchInner(p: EachBatchPayload): Promise<void> {
    const alive = this.keepAlive(p.heartbeat);
    try {
      await this.handleSlices(p, alive.check);
    } finally {
      alive.stop();
    }
  }

  /** The batch in slices of maxBatchMessages: process, write, commit each. */
  private async handleSlices(p: EachBatchPayload, heartbeat: () => Promise<void>): Promise<void> {
    const { batch, resolveOffset, isRunning, isStale, pause } = p;
    const { topic, partition } = batch;
    const m = this.metrics;
    if (batch.messages.length === 0) return;
    this.lastProgress = Date.now();
    const key = `${topic}:${partition}`;
    let prog = await this.watermark(topic, partition);
    const stored = prog.raw;
    for (let i = 0; i < batch.messages.length && isRunning() && !isStale() && this.running; i += this.opts.maxBatchMessages) {
      const slice = batch.messages.slice(i, i + this.opts.maxBatchMessages);
      const fresh: SourceMessage[] = [];
      for (const msg of slice) {
        if (BigInt(msg.offset) <= stored) m.skipped.inc({ topic });
        else fresh.push({ topic, partition, offset: msg.offset, value: msg.value, key: msg.key, timestamp: msg.timestamp });
      }
      m.consumed.inc({ topic }, slice.length);
      m.batchSize.observe(slice.length);
      const now = Date.now();
      const retention = this.opts.retentionDays ?? 90;
      const future = this.opts.maxFutureHours ?? 24;
      const res = await processMessages(fresh, {
        embedder: this.deps.embedder,
        assigner: this.assigner(),
        redactText: this.opts.redactText,
        redactKey: this.opts.redactKey,
        decode: {
          maxBytes: this.opts.maxMessageBytes,
          maxDepth: this.opts.maxDepth,
          window: {
            // a row older than the retention would be deleted by the TTL on arrival: refused instead
            min: now - retention * 86_400_000 + 3_600_000,
            max: now + future * 3_600_000,
            minReason: `is older than the retention of ${retention} days (EVALGAP_RETENTION_DAYS)`,
            maxReason: `is more than ${future} h in the future (EVALGAP_MAX_FUTURE_HOURS)`,
          },
        },
        onChunk: () => heartbeat(),
        sizer: this.sizer,
      });
      m.embedSeconds.observe((res.embedMs + res.assignMs) / 1000);
      m.embedCallTexts.set(this.sizer.size());
      const bySource = new Map(fresh.map((f) => [f.offset, f]));
      const dead: DeadLetter[] = [...res.dead];
      let good: RequestRow[] = res.rows;
      let resume: (() => void) | null = null;
      const onStoreFailure = async () => {
        if (!resume) {
          resume = pause();
          m.paused.inc();
        }
        await heartbeat();
        return true;
      };
      const t = performance.now();
      const hi = BigInt(slice[slice.length - 1].offset);
      try {
        // A member that has lost its place in the group (a rebalance, or a session that timed out
        // during a long store outage) must not insert: another member may own the partition now.
        // heartbeat() throws then; the batch is given up uncommitted and redelivered to the owner.
        await heartbeat();
        if (res.rows.length) {
          // one insert for the whole slice, whatever days it spans; the nonce keeps a token of a
          // deleted unfinished insert from swallowing the same offsets consumed again
          const token = `raw:${topic}:${partition}:${res.rows[0].kafka_offset}-${hi}:${randomUUID()}`;
          const out = await this.insertIsolating(res.rows, token, onStoreFailure);
          good = out.stored;
          // the kept embeddings of the stored rows, before the raw mark moves (a repair deletes
          // both above the mark, so a crash in between cannot leave them twice)
          const kept = new Set(good.map((r) => r.kafka_offset));
          const embs = res.embeddings.filter((e) => kept.has(e.kafka_offset));
          if (embs.length) await this.withStoreRetry(() => this.deps.store.insertEmbeddings(embs, `emb:${token}`), onStoreFailure);
          for (const r of out.rejected) {
            dead.push({ source: bySource.get(r.row.kafka_offset)!, reason: r.reason });
          }
        }
        // dead letters are durable before the raw mark moves past them (a crash re-sends them)
        if (dead.length) await this.deadLetter(dead);
        if (good.length) {
          await this.withStoreRetry(() => this.deps.store.setProgress(topic, partition, 'raw', hi), onStoreFailure);
          const agg = aggregateRows(good);
          const token = aggToken(topic, partition, prog.agg, hi);
          await this.withStoreRetry(() => this.deps.store.insertAggregates(agg, token), onStoreFailure);
          await this.withStoreRetry(() => this.deps.store.setProgress(topic, partition, 'agg', hi), onStoreFailure);
          prog = { raw: hi, agg: hi };
        }
      } finally {
        if (resume) {
          (resume as () => void)();
          m.paused.dec();
        }
      }
      m.storeSeconds.observe((performance.now() - t) / 1000);
      m.stored.inc({ topic }, good.length);
      m.deadLettered.inc({ topic }, dead.length);
      m.uncovered.inc({ topic }, good.filter((r) => r.covered === 0).length);
      const last = slice[slice.length - 1].offset;
      this.watermarks.set(key, prog);
      resolveOffset(last);
      // rows are durable: now, and only now, the offset may be committed
      await this.consumer!.commitOffsets([{ topic, partition, offset: (BigInt(last) + 1n).toString() }]);
      this.lastProgress = Date.now();
      m.lag.set({ topic, partition: String(partition) }, Math.max(0, Number(BigInt(batch.highWatermark) - BigInt(last) - 1n)));
      await heartbeat();
    }
  }

  /**
   * Insert rows as one block; when ClickHouse refuses the data (not an outage), split in halves
   * until the refused rows are isolated. Outages are retried (with the partition paused).
   */
  private async insertIsolating(
    rows: RequestRow[],
    token: string,
    onStoreFailure: () => Promise<boolean>,
  ): Promise<{ stored: RequestRow[]; rejected: { row: RequestRow; reason: string }[] }> {
    try {
      await this.withStoreRetry(() => this.deps.store.insertRequests(rows, token), onStoreFailure);
      return { stored: rows, rejected: [] };
    } catch (e) {
      const d = dataError(e);
      if (!d) throw e;
      if (rows.length === 1) {
        // the engine's message may quote the data: only its name and code are kept
        return { stored: [], rejected: [{ row: rows[0], reason: `ClickHouse refused the row: ${d.type} (code ${d.code})` }] };
      }
      const mid = rows.length >> 1;
      const a = await this.insertIsolating(rows.slice(0, mid), `${token}/a`, onStoreFailure);
      const b = await this.insertIsolating(rows.slice(mid), `${token}/b`, onStoreFailure);
      return { stored: [...a.stored, ...b.stored], rejected: [...a.rejected, ...b.rejected] };
    }
  }

  private async deadLetter(dead: DeadLetter[]): Promise<void> {
    const cap = this.dlqValueCap;
    const messages = dead.map((d) => {
      const value = d.source.value ?? null;
      const headers: Record<string, string> = {
        'evalgap-error': d.reason.slice(0, 2000),
        'evalgap-source-topic': d.source.topic,
        'evalgap-source-partition': String(d.source.partition),
        'evalgap-source-offset': d.source.offset,
        'evalgap-failed-at': new Date().toISOString(),
      };
      let v = value;
      if (value && value.length > cap) {
        // too large for the dead-letter topic: the head is kept, with the size and hash of the whole
        headers['evalgap-truncated'] = 'true';
        headers['evalgap-original-bytes'] = String(value.length);
        headers['evalgap-original-sha256'] = createHash('sha256').update(value).digest('hex');
        v = value.subarray(0, cap);
      }
      let k = d.source.key ?? null;
      if (k && k.length > 1024) {
        headers['evalgap-original-key-sha256'] = createHash('sha256').update(k).digest('hex');
        k = null;
      }
      return { key: k, value: v, headers };
    });
    // one produce request per group of messages that fits the topic's record-batch limit
    let group: typeof messages = [];
    let bytes = 0;
    const flush = async () => {
      if (!group.length) return;
      await this.producer!.send({ topic: this.opts.dlqTopic, acks: -1, messages: group });
      group = [];
      bytes = 0;
    };
    for (const msg of messages) {
      const size = (msg.value?.length ?? 0) + 1024;
      if (group.length && bytes + size > cap) await flush();
      group.push(msg);
      bytes += size;
    }
    await flush();
    for (const d of dead) {
      this.deps.logger.warn(
        { topic: d.source.topic, partition: d.source.partition, offset: d.source.offset, reason: d.reason },
        'message dead-lettered',
      );
    }
  }

  private startHttp(port: number): Promise<void> {
    this.server = http.createServer(async (req, res) => {
      if (await this.deps.queries?.handle(req, res)) return;
      // pages in a browser (and DNS-rebinding ones) get nothing from any route
      if (refuseBrowserRequest(req, res, { allowLocalhost: true })) return;
      if (req.url === '/metrics') {
        res.setHeader('content-type', this.metrics.registry.contentType);
        res.end(await this.metrics.registry.metrics());
      } else if (req.url === '/healthz' || req.url === '/readyz') {
        // /healthz: liveness (the consumer is alive; restart me when not); /readyz: readiness
        // (broker reachable, store writing, no stall while messages wait)
        const h = this.health();
        const ok = req.url === '/healthz' ? h.live : h.ready;
        res.statusCode = ok ? 200 : 503;
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            status: ok ? 'ok' : 'unhealthy',
            running: this.running,
            store: this.storeHealthy,
            broker: this.brokerOk,
            waiting: this.waiting,
            reasons: h.reasons,
          }),
        );
      } else {
        res.statusCode = 404;
        res.end('not found\n');
      }
    });
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, '127.0.0.1', () => {
        const a = this.server!.address();
        this.port = typeof a === 'object' && a ? a.port : port;
        resolve();
      });
    });
  }

  /** Event-loop delay seen while running (ms): how long synchronous work held the loop. */
  eventLoopDelay(): { p50: number; p99: number; max: number } {
    const h = this.loopDelay;
    return { p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6 };
  }

  /**
   * Graceful: the batch in hand stops at its next step (an embedding call in progress finishes; a
   * write in progress completes and is committed), the member leaves the group. Resolves only once
   * no batch is running, so that the caller may close the store and the embedder: closing them
   * under a running call aborted the process (a native error thrown in a teardown).
   */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        this.running = false;
        if (this.lagTimer) clearInterval(this.lagTimer);
        // kafkajs waits for the batch in hand, and for a re-join in progress (up to the rebalance
        // timeout): bounded here, since nothing is left to commit once the batch has stopped
        const left = this.consumer?.disconnect().catch((e) => this.deps.logger.warn({ err: e }, 'leaving the consumer group failed'));
        let timer: NodeJS.Timeout | undefined;
        const bound = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), LEAVE_WAIT_MS)));
        if ((await Promise.race([left, bound])) === 'late') {
          this.deps.logger.warn({ group: this.opts.group, waitedMs: LEAVE_WAIT_MS }, 'the group has not been left yet (a re-join in progress); stopping without waiting for it');
        }
        clearTimeout(timer);
        // whatever kafkajs did, no batch may still be using the store or the embedder when this resolves
        await this.inFlight;
        await this.producer?.disconnect();
        this.loopDelay.disable();
        await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
      })();
    }
    return this.stopping;
  }
}
