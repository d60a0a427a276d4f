/** Wiring for `evalgap run`: config → embedder, coverage model, store, Kafka → IngestService. */
import type { Logger } from 'pino';
import { redactConfig, type Config } from '../config/index.js';
import { CoverageAssigner, loadCoverageModel } from '../coverage/model.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
import { createKafka } from '../ingest/kafka.js';
import { IngestService, ingestOptionsFrom, type IngestOptions } from '../ingest/service.js';
import { Store } from '../store/store.js';

export interface Running {
  service: IngestService;
  store: Store;
  stop: () => Promise<void>;
}

export async function startRun(cfg: Config, modelDir: string, logger: Logger, over: Partial<IngestOptions> = {}): Promise<Running> {
  logger.info({ config: redactConfig(cfg) }, 'starting');
  // embedding runs in a worker thread: inference would otherwise hold this event loop for seconds
  const embedder = await loadThreadedEmbedder(cfg.embed);
  const model = loadCoverageModel(modelDir, { expectEmbedding: { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision } });
  const assigner = new CoverageAssigner(model);
  const store = await Store.open(cfg.clickhouse);
  const kafka = createKafka(cfg.kafka, cfg.kafka.clientId, logger);
  const service = new IngestService({ kafka, store, embedder, assigner, logger }, ingestOptionsFrom(cfg, over));
  await service.start();
  return {
    service,
    store,
    stop: async () => {
      await service.stop();
      await store.close();
      await embedder.close();
    },
  };
}
