/** Wiring for `evalgap run`: config → embedder, coverage model (hot-reloaded), store, Kafka → IngestService. */
import type { Logger } from 'pino';
import { maskUrl, redactConfig, type Config } from '../config/index.js';
import { embeddingOf } from '../embed/embedder.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
import { createKafka } from '../ingest/kafka.js';
import { Election } from '../ingest/election.js';
import { OtlpBridge, createOtlpBridgeMetrics } from '../ingest/otlp-bridge.js';
import { clusterRows, ModelWatcher, resolveModelDir } from '../ingest/model-watch.js';
import { loadAgentProfile } from '../coverage/agent.js';
import type { CoverageAssigner } from '../coverage/model.js';
import { registerAgentProfile } from '../store/agent.js';
import { IngestService, ingestOptionsFrom, type IngestOptions } from '../ingest/service.js';
import { createIngestMetrics } from '../ingest/metrics.js';
import { Store } from '../store/store.js';
import { advertiseQueryEndpoint, queryEndpoint } from '../store/http-query.js';
import { scheduleDiscovery, type DiscoverySchedule } from '../gaps/schedule.js';
import { openOwnStore } from './open-store.js';

export interface Running {
  service: IngestService;
  store: Store;
  /** the coverage model in use, and how it is reloaded */
  model: ModelWatcher;
  stop: () => Promise<void>;
  /** periodic gap discovery, when `gapsEveryMs` > 0 */
  gaps?: DiscoverySchedule;
  /** whether this instance is the one of its consumer group that runs the periodic gap discovery */
  gapsLeader?: () => boolean;
  /** OpenTelemetry traces in, with `input: 'otlp'` */
  otlp?: OtlpBridge;
}

/** A start-up failure with a one-line explanation (printed without a stack trace). */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

export interface RunOptions extends Partial<IngestOptions> {
  /** how often to check --model for a newly deployed model, ms (it is also watched with fs.watch) */
  modelPollMs?: number;
}

export async function startRun(
  cfg: Config,
  modelPath: string,
  logger: Logger,
  over: RunOptions = {},
  extra: { gapsEveryMs?: number; input?: 'native' | 'otlp' } = {},
): Promise<Running> {
  logger.info({ config: redactConfig(cfg) }, 'starting');
  const { modelPollMs, ...ingestOver } = over;
  // embedding runs in a worker thread: inference would otherwise hold this event loop for seconds
  const embedder = await loadThreadedEmbedder(cfg.embed);
  const where = cfg.clickhouse.url ? maskUrl(cfg.clickhouse.url) : cfg.clickhouse.path;
  const store = await openOwnStore(cfg, (m, cause) => new StartupError(m, { cause })).catch(async (e) => {
    await embedder.close();
    throw e instanceof StartupError ? e : new StartupError(`cannot open ClickHouse at ${where}: ${oneLine(e)}`, { cause: e });
  });
  const ingestOpts = ingestOptionsFrom(cfg, ingestOver);
  const metrics = createIngestMetrics(ingestOpts.metricsPort >= 0);
  // what the eval set tests of conversation depth and tool chains (the model's agent.json), for the
  // views coverage_by_depth and tool_chain_coverage; a bad agent.json is reported and left out
  const registerAgent = async (a: CoverageAssigner) => {
    try {
      const profile = loadAgentProfile(resolveModelDir(modelPath), a.model);
      if (profile) await registerAgentProfile(store, profile);
    } catch (e) {
      logger.warn({ model: a.version, err: oneLine(e) }, 'agent profile not registered: depth and tool-chain coverage of this model are unknown');
    }
  };
  let model: ModelWatcher;
  try {
    model = new ModelWatcher(modelPath, {
      expectEmbedding: embeddingOf(embedder),
      logger,
      pollMs: modelPollMs,
      metrics,
      // a new model's clusters are registered before any row it scores is stored
      beforeSwap: async (next) => {
        await store.registerClusters(clusterRows(next));
        await registerAgent(next);
      },
    });
    await registerAgent(model.current());
  } catch (e) {
    await store.close();
    await embedder.close();
    throw e;
  }
  const kafka = createKafka(cfg.kafka, cfg.kafka.clientId, logger);
  const queries = queryEndpoint(cfg.clickhouse, cfg.query);
  const service = new IngestService({ kafka, store, embedder, assigner: model, logger, queries, metrics }, ingestOpts);
  try {
    await service.start();
  } catch (e) {
    model.close();
    await service.stop().catch(() => {});
    await queries.close().catch(() => {});
    await store.close().catch(() => {});
    await embedder.close();
    const kafkaError = (e as Error)?.name?.startsWith('KafkaJS');
    throw new StartupError(
      kafkaError ? `cannot reach Kafka at ${cfg.kafka.brokers.join(',')}: ${oneLine(e)}` : `cannot start: ${oneLine(e)}`,
      { cause: e },
    );
  }
  model.start();
  let otlp: OtlpBridge | undefined;
  if (extra.input === 'otlp') {
    const o = ingestOpts;
    otlp = new OtlpBridge(kafka, logger, {
      sourceTopic: cfg.otlp.topic,
      requestsTopic: o.topic,
      dlqTopic: o.dlqTopic,
      group: o.group,
      encoding: cfg.otlp.encoding,
      graceMs: cfg.otlp.graceMs,
      maxHoldMs: cfg.otlp.maxHoldMs,
      idleMs: cfg.otlp.idleMs,
      escalatedAttribute: cfg.otlp.escalatedAttribute,
      maxMessageBytes: Math.max(o.maxMessageBytes ?? 1_048_576, 4 * 1_048_576),
      fromBeginning: o.fromBeginning,
      sessionTimeout: o.sessionTimeout,
    }, createOtlpBridgeMetrics(service.metrics.registry));
    try {
      await otlp.start();
    } catch (e) {
      model.close();
      await otlp.stop().catch(() => {});
      await service.stop().catch(() => {});
      await queries.close().catch(() => {});
      await store.close().catch(() => {});
      await embedder.close();
      throw new StartupError(`cannot start the OTLP bridge on ${cfg.otlp.topic}: ${oneLine(e)}`, { cause: e });
    }
  }
  // evalgap sql / gaps / export-gaps find this instance's read-only POST /query (and its token) through the data folder
  const unadvertise = advertiseQueryEndpoint(cfg.clickhouse, service.port, queries.token);
  // periodic gap discovery: one instance of the consumer group runs it (elected through Kafka), not every one
  let gapsElection: Election | undefined;
  let electionStarted: Promise<void> = Promise.resolve();
  let gaps: DiscoverySchedule | undefined;
  if (extra.gapsEveryMs) {
    gapsElection = new Election(
      kafka,
      { topic: gapsControlTopic(ingestOpts.topic), group: `${ingestOpts.group}.gaps`, roles: { leader: 'elected: this instance runs the periodic gap discovery', standby: 'another instance runs the periodic gap discovery' } },
      logger,
    );
    const election = gapsElection;
    // joined in the background: startRun returns (and the caller installs its signal handlers) without
    // waiting for a group to form; until elected this instance runs no pass. Discovery is not worth
    // refusing to ingest for: if the election cannot start, this instance stays out of it and says so.
    electionStarted = election.start().catch((e: unknown) => {
      logger.warn({ err: oneLine(e) }, 'gap discovery election could not start; this instance will not run periodic gap discovery');
    });
    gaps = scheduleDiscovery(store, { everyMs: extra.gapsEveryMs, logger, modelsDir: cfg.embed.modelsDir, leads: () => election.isLeader() });
  }
  return {
    service,
    store,
    model,
    gaps,
    gapsLeader: gapsElection ? () => gapsElection!.isLeader() : undefined,
    otlp,
    stop: async () => {
      await otlp?.stop();
      model.close();
      // a join still in progress is given a few seconds, then the election is left either way
      await Promise.race([electionStarted, new Promise((r) => setTimeout(r, 5_000).unref())]);
      await gapsElection?.stop().catch(() => {});
      await gaps?.stop();
      unadvertise();
      // a query in progress is killed first: it must not hold the HTTP server (or the stop) open
      await queries.close();
      await service.stop();
      await store.close();
      await embedder.close();
    },
  };
}

/** the one-partition topic on which the instances of a consumer group elect their gap discoverer */
export const gapsControlTopic = (requestsTopic: string) => `${requestsTopic}.gaps-control`;

function oneLine(e: unknown): string {
  const err = e as Error & { cause?: Error };
  const msg = String(err?.message ?? e).split('\n')[0];
  const c = err?.cause?.message ? String(err.cause.message).split('\n')[0] : '';
  const cause = c && c !== msg ? ` (${c})` : '';
  return msg + cause;
}
