/** Wiring for `evalgap run`: config → embedder, coverage model (hot-reloaded), store, Kafka → IngestService. */
import type { Logger } from 'pino';
import { redactConfig, type Config } from '../config/index.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
import { createKafka } from '../ingest/kafka.js';
import { clusterRows, ModelWatcher } from '../ingest/model-watch.js';
import { IngestService, ingestOptionsFrom, type IngestOptions } from '../ingest/service.js';
import { Store } from '../store/store.js';

export interface Running {
  service: IngestService;
  store: Store;
  /** the coverage model in use, and how it is reloaded */
  model: ModelWatcher;
  stop: () => Promise<void>;
}

export interface RunOptions extends Partial<IngestOptions> {
  /** how often to check --model for a newly deployed model, ms (it is also watched with fs.watch) */
  modelPollMs?: number;
}

export async function startRun(cfg: Config, modelPath: string, logger: Logger, over: RunOptions = {}): Promise<Running> {
  logger.info({ config: redactConfig(cfg) }, 'starting');
  const { modelPollMs, ...ingestOver } = over;
  // embedding runs in a worker thread: inference would otherwise hold this event loop for seconds
  const embedder = await loadThreadedEmbedder(cfg.embed);
  const store = await Store.open(cfg.clickhouse);
  let model: ModelWatcher;
  try {
    model = new ModelWatcher(modelPath, {
      expectEmbedding: { model: embedder.modelName, checksum: embedder.modelChecksum },
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
  const service = new IngestService({ kafka, store, embedder, assigner: model, logger }, ingestOptionsFrom(cfg, ingestOver));
  await service.start();
  model.start();
  return {
    service,
    store,
    model,
    stop: async () => {
      model.close();
      await service.stop();
      await store.close();
      await embedder.close();
    },
  };
}
