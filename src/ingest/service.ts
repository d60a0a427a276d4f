/**
 * `evalgap run`: a kafkajs consumer-group member that turns request logs into stored, assigned rows.
 *
 * Delivery: offsets are committed only after the batch's rows are in ClickHouse. Each row carries
 * its Kafka topic/partition/offset; after every rebalance an instance reads the highest offset
 * already stored for each partition it owns and skips redelivered messages at or below it, so a
 * crash between insert and commit neither loses nor duplicates rows. Rows of one partition are
 * inserted in offset order, one insert per day-partition run, so what is stored is always an
 * offset prefix. Each insert also carries a deduplication token (topic/partition/offset range), so
 * a retried insert is a no-op, in the table and the aggregates' view alike.
 */
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Consumer, EachBatchPayload, Kafka, Producer } from 'kafkajs';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { CoverageAssigner } from '../coverage/model.js';
import type { AssignerSource } from './model-watch.js';
import type { Embedder } from '../embed/embedder.js';
import type { RequestRow, Store } from '../store/store.js';
import { ensureTopics } from './kafka.js';
import { createIngestMetrics, type IngestMetrics } from './metrics.js';
import { processMessages, type DeadLetter, type SourceMessage } from './process.js';

export interface IngestDeps {
  kafka: Kafka;
  store: Store;
  embedder: Embedder;
  /** a fixed model, or a source read once per batch (hot reload: src/ingest/model-watch.ts) */
  assigner: CoverageAssigner | AssignerSource;
  logger: Logger;
  metrics?: IngestMetrics;
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
}

export function ingestOptionsFrom(cfg: Config, over: Partial<IngestOptions> = {}): IngestOptions {
  return {
    topic: cfg.kafka.topic,
    dlqTopic: cfg.kafka.dlqTopic,
    group: cfg.kafka.group,
    redactText: cfg.ingest.redactText,
    maxBatchMessages: cfg.ingest.maxBatchMessages,
    metricsPort: cfg.ingest.metricsPort,
    ...over,
  };
}

/** Split rows (already in offset order) into runs sharing a day, each inserted as one block. */
export function dayRuns(rows: RequestRow[]): RequestRow[][] {
  const runs: RequestRow[][] = [];
  let cur: RequestRow[] = [];
  let day = '';
  for (const r of rows) {
    const d = r.ts.slice(0, 10);
    if (cur.length && d !== day) {
      runs.push(cur);
      cur = [];
    }
    day = d;
    cur.push(r);
  }
  if (cur.length) runs.push(cur);
  return runs;
}

export class IngestService {
  readonly metrics: IngestMetrics;
  private consumer: Consumer | null = null;
  private producer: Producer | null = null;
  private server: http.Server | null = null;
  private readonly watermarks = new Map<string, bigint>();
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private running = false;
  private stopping: Promise<void> | null = null;
  /** partitions this instance has been assigned (across rebalances), for tests and logs */
  readonly assigned = new Set<string>();
  private storeHealthy = true;
  port = 0;

  constructor(
    private readonly deps: IngestDeps,
    private readonly opts: IngestOptions,
  ) {
    this.metrics = deps.metrics ?? createIngestMetrics(opts.metricsPort >= 0);
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
    await ensureTopics(kafka, [
      { topic: o.topic, numPartitions: o.partitions ?? 1 },
      { topic: o.dlqTopic, numPartitions: 1 },
    ]);
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
      sessionTimeout: o.sessionTimeout ?? 30_000,
      heartbeatInterval: 3_000,
      maxBytesPerPartition: 1_048_576,
      retry: { retries: 10 },
    });
    const c = this.consumer;
    c.on(c.events.GROUP_JOIN, (e) => {
      // a new assignment: stored watermarks must be read again for whatever this instance now owns
      this.watermarks.clear();
      for (const [topic, parts] of Object.entries(e.payload.memberAssignment)) {
        for (const p of parts) this.assigned.add(`${topic}:${p}`);
      }
      logger.info({ assignment: e.payload.memberAssignment, group: o.group }, 'joined consumer group');
    });
    c.on(c.events.CRASH, (e) => logger.error({ err: e.payload.error, restart: e.payload.restart }, 'consumer crashed'));
    await c.connect();
    await c.subscribe({ topic: o.topic, fromBeginning: o.fromBeginning ?? true });
    this.loopDelay.enable();
    if (o.metricsPort >= 0) await this.startHttp(o.metricsPort);
    this.running = true;
    await c.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (p) => this.handleBatch(p),
    });
    logger.info(
      { topic: o.topic, group: o.group, model: assigner.version, store: store.location, metricsPort: this.port },
      'evalgap run started',
    );
  }

  private async watermark(topic: string, partition: number): Promise<bigint> {
    const key = `${topic}:${partition}`;
    let w = this.watermarks.get(key);
    if (w === undefined) {
      w = await this.withStoreRetry(() => this.deps.store.storedHighWatermark(topic, partition), () => true);
      this.watermarks.set(key, w);
    }
    return w;
  }

  /** Retry a store call with backoff until it succeeds or the service stops (then it throws). */
  private async withStoreRetry<T>(fn: () => Promise<T>, onFailure: (attempt: number) => boolean | Promise<boolean>): Promise<T> {
    return pRetry(fn, {
      forever: true,
      retries: 10,
      minTimeout: 200,
      maxTimeout: 10_000,
      factor: 2,
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

  private async handleBatch(p: EachBatchPayload): Promise<void> {
    const { batch, heartbeat, resolveOffset, isRunning, isStale, pause } = p;
    const { topic, partition } = batch;
    const m = this.metrics;
    if (batch.messages.length === 0) return;
    const stored = await this.watermark(topic, partition);
    for (let i = 0; i < batch.messages.length && isRunning() && !isStale(); i += this.opts.maxBatchMessages) {
      const slice = batch.messages.slice(i, i + this.opts.maxBatchMessages);
      const fresh: SourceMessage[] = [];
      for (const msg of slice) {
        if (BigInt(msg.offset) <= stored) m.skipped.inc({ topic });
        else fresh.push({ topic, partition, offset: msg.offset, value: msg.value, key: msg.key, timestamp: msg.timestamp });
      }
      m.consumed.inc({ topic }, slice.length);
      m.batchSize.observe(slice.length);
      const res = await processMessages(fresh, {
        embedder: this.deps.embedder,
        assigner: this.assigner(),
        redactText: this.opts.redactText,
        onChunk: () => heartbeat(),
      });
      m.embedSeconds.observe((res.embedMs + res.assignMs) / 1000);
      if (res.dead.length) await this.deadLetter(res.dead);
      let resume: (() => void) | null = null;
      const t = performance.now();
      try {
        // A member that has lost its place in the group (a rebalance, or a session that timed out
        // during a long store outage) must not insert: another member may own the partition now.
        // heartbeat() throws then; the batch is given up uncommitted and redelivered to the owner.
        await heartbeat();
        for (const run of dayRuns(res.rows)) {
          const token = `${topic}:${partition}:${run[0].kafka_offset}-${run[run.length - 1].kafka_offset}`;
          await this.withStoreRetry(
            () => this.deps.store.insertRequests(run, token),
            async () => {
              if (!resume) {
                resume = pause();
                m.paused.inc();
              }
              await heartbeat();
              return true;
            },
          );
        }
      } finally {
        if (resume) {
          (resume as () => void)();
          m.paused.dec();
        }
      }
      m.storeSeconds.observe((performance.now() - t) / 1000);
      m.stored.inc({ topic }, res.rows.length);
      m.deadLettered.inc({ topic }, res.dead.length);
      m.uncovered.inc({ topic }, res.rows.filter((r) => r.covered === 0).length);
      const last = slice[slice.length - 1].offset;
      this.watermarks.set(`${topic}:${partition}`, BigInt(last) > stored ? BigInt(last) : stored);
      resolveOffset(last);
      // rows are durable: now, and only now, the offset may be committed
      await this.consumer!.commitOffsets([{ topic, partition, offset: (BigInt(last) + 1n).toString() }]);
      m.lag.set({ topic, partition: String(partition) }, Math.max(0, Number(BigInt(batch.highWatermark) - BigInt(last) - 1n)));
      await heartbeat();
    }
  }

  private async deadLetter(dead: DeadLetter[]): Promise<void> {
    await this.producer!.send({
      topic: this.opts.dlqTopic,
      acks: -1,
      messages: dead.map((d) => ({
        key: d.source.key ?? null,
        value: d.source.value,
        headers: {
          'evalgap-error': d.reason.slice(0, 2000),
          'evalgap-source-topic': d.source.topic,
          'evalgap-source-partition': String(d.source.partition),
          'evalgap-source-offset': d.source.offset,
          'evalgap-failed-at': new Date().toISOString(),
        },
      })),
    });
    for (const d of dead) {
      this.deps.logger.warn(
        { topic: d.source.topic, partition: d.source.partition, offset: d.source.offset, reason: d.reason },
        'message dead-lettered',
      );
    }
  }

  private startHttp(port: number): Promise<void> {
    this.server = http.createServer(async (req, res) => {
      if (req.url === '/metrics') {
        res.setHeader('content-type', this.metrics.registry.contentType);
        res.end(await this.metrics.registry.metrics());
      } else if (req.url === '/healthz') {
        const ok = this.running && this.storeHealthy;
        res.statusCode = ok ? 200 : 503;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ status: ok ? 'ok' : 'unhealthy', running: this.running, store: this.storeHealthy }));
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

  /** Graceful: finish the batch in hand, write, commit, leave the group. */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        this.running = false;
        await this.consumer?.disconnect();
        await this.producer?.disconnect();
        this.loopDelay.disable();
        await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
      })();
    }
    return this.stopping;
  }
}
