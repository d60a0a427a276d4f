/** Wiring for `evalgap run`: config → embedder, coverage model (hot-reloaded), store, Kafka → IngestService. */
import type { Logger } from 'pino';
import { maskUrl, redactConfig, type Config } from '../config/index.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
import { createKafka } from '../ingest/kafka.js';
import { clusterRows, ModelWatcher } from '../ingest/model-watch.js';
import { IngestService, ingestOptionsFrom, type IngestOptions } from '../ingest/service.js';
import { Store } from '../store/store.js';
import { advertiseQueryEndpoint, queryEndpoint } from '../store/http-query.js';
import { scheduleDiscovery, type DiscoverySchedule } from '../gaps/schedule.js';

export interface Running {
  service: IngestService;
  store: Store;
  /** the coverage model in use, and how it is reloaded */
  model: ModelWatcher;
  stop: () => Promise<void>;
  /** periodic gap discovery, when `gapsEveryMs` > 0 */
  gaps?: DiscoverySchedule;
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
  extra: { gapsEveryMs?: number } = {},
): Promise<Running> {
  logger.info({ config: redactConfig(cfg) }, 'starting');
  const { modelPollMs, ...ingestOver } = over;
  // embedding runs in a worker thread: inference would otherwise hold this event loop for seconds
  const embedder = await loadThreadedEmbedder(cfg.embed);
  const where = cfg.clickhouse.url ? maskUrl(cfg.clickhouse.url) : cfg.clickhouse.path;
  const store = await Store.open(cfg.clickhouse).catch(async (e) => {
    await embedder.close();
    throw new StartupError(`cannot open ClickHouse at ${where}: ${oneLine(e)}`, { cause: e });
  });
  let model: ModelWatcher;
  try {
    model = new ModelWatcher(modelPath, {
      expectEmbedding: { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision },
      logger,
      pollMs: modelPollMs,
      // a new model's clusters are registered before any row it scores is stored
      beforeSwap: (next) => store.registerClusters(clusterRows(next)),
    });
  } catch (e) {
    await store.close();
    await embedder.close();
    throw e;
  }
  const kafka = createKafka(cfg.kafka, cfg.kafka.clientId, logger);
  const queries = queryEndpoint(cfg.clickhouse);
  const service = new IngestService({ kafka, store, embedder, assigner: model, logger, queries }, ingestOptionsFrom(cfg, ingestOver));
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
  // evalgap sql / gaps / export-gaps find this instance's read-only POST /query through the data folder
  const unadvertise = advertiseQueryEndpoint(cfg.clickhouse, service.port);
  const gaps = extra.gapsEveryMs ? scheduleDiscovery(store, { everyMs: extra.gapsEveryMs, logger, modelsDir: cfg.embed.modelsDir }) : undefined;
  return {
    service,
    store,
    model,
    gaps,
    stop: async () => {
      model.close();
      await gaps?.stop();
      unadvertise();
      await service.stop();
      await queries.close();
      await store.close();
      await embedder.close();
    },
  };
}

function oneLine(e: unknown): string {
  const err = e as Error & { cause?: Error };
  const msg = String(err?.message ?? e).split('\n')[0];
  const c = err?.cause?.message ? String(err.cause.message).split('\n')[0] : '';
  const cause = c && c !== msg ? ` (${c})` : '';
  return msg + cause;
}
