/** Wiring for `evalgap run`: config → embedder, coverage model, store, Kafka → IngestService. */
import type { Logger } from 'pino';
import { redactConfig, type Config } from '../config/index.js';
import { CoverageAssigner, loadCoverageModel } from '../coverage/model.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
import { createKafka } from '../ingest/kafka.js';
import { IngestService, ingestOptionsFrom, type IngestOptions } from '../ingest/service.js';
import { Store } from '../store/store.js';
import { advertiseQueryEndpoint, queryEndpoint } from '../store/http-query.js';
import { scheduleDiscovery, type DiscoverySchedule } from '../gaps/schedule.js';

export interface Running {
  service: IngestService;
  store: Store;
  stop: () => Promise<void>;
  /** periodic gap discovery, when `gapsEveryMs` > 0 */
  gaps?: DiscoverySchedule;
}

export async function startRun(
  cfg: Config,
  modelDir: string,
  logger: Logger,
  over: Partial<IngestOptions> = {},
  extra: { gapsEveryMs?: number } = {},
): Promise<Running> {
  logger.info({ config: redactConfig(cfg) }, 'starting');
  // embedding runs in a worker thread: inference would otherwise hold this event loop for seconds
  const embedder = await loadThreadedEmbedder(cfg.embed);
  const model = loadCoverageModel(modelDir, { expectEmbedding: { model: embedder.modelName, checksum: embedder.modelChecksum } });
  const assigner = new CoverageAssigner(model);
  const store = await Store.open(cfg.clickhouse);
  const kafka = createKafka(cfg.kafka, cfg.kafka.clientId, logger);
  const queries = queryEndpoint(cfg.clickhouse);
  const service = new IngestService({ kafka, store, embedder, assigner, logger, queries }, ingestOptionsFrom(cfg, over));
  await service.start();
  // evalgap sql / gaps / export-gaps find this instance's read-only POST /query through the data folder
  const unadvertise = advertiseQueryEndpoint(cfg.clickhouse, service.port);
  const gaps = extra.gapsEveryMs ? scheduleDiscovery(store, { everyMs: extra.gapsEveryMs, logger }) : undefined;
  return {
    service,
    store,
    gaps,
    stop: async () => {
      await gaps?.stop();
      unadvertise();
      await service.stop();
      await queries.close();
      await store.close();
      await embedder.close();
    },
  };
}
