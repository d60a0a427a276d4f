/**
 * End-to-end `evalgap run` on the local broker and the embedded engine (npm run bench; JSON).
 * 1. throughput: N Banking77 queries already on the topic; messages/s from the first consumed
 *    message to the last stored row, against the bare embedding throughput of the same model,
 *    batch size and texts, measured in the same run;
 * 2. latency: paced traffic at half that rate; p50/p99 from produce (ts) to stored (ingested_at);
 * peak RSS of the whole process (an upper bound for evalgap run: this process also fits the
 * coverage model and produces the messages) and the event-loop delay seen by the service.
 * The ratio is taken against bare embedding through the same worker-thread pool the service uses,
 * measured right before and right after the end-to-end phase (their mean).
 */
import path from 'node:path';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { DEFAULT_FIT, buildCoverageModel, dedupeCases, evalSetHash } from '../../src/coverage/fit.js';
import { CoverageAssigner, saveCoverageModel, loadCoverageModel } from '../../src/coverage/model.js';
import { loadThreadedEmbedder } from '../../src/embed/threaded.js';
import { createKafka, ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { IngestService, ingestOptionsFrom } from '../../src/ingest/service.js';
import { Store } from '../../src/store/store.js';
import { BANKING77_MISSING, hasBanking77, loadBanking77 } from '../helpers/banking77.js';
import { tmpDir, uniqueName } from '../helpers/fixtures.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const N = Number(args.get('n') ?? 3000);
const paceSeconds = Number(args.get('pace-seconds') ?? 15);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'ingest', skipped: BANKING77_MISSING }));
    return;
  }
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100);
  const dir = tmpDir('evalgap-bench-');
  const cfg = loadConfig({ ...process.env, EVALGAP_DATA_DIR: path.join(dir, 'chdb') });
  // the same pool of single-threaded sessions evalgap run uses, for the fit and both baselines
  const threaded = await loadThreadedEmbedder(cfg.embed);
  const embedder = threaded;
  const logger = createLogger('warn');

  // a coverage model from 3000 train queries
  const train = dedupeCases(loadBanking77('train').slice(0, 3000).map((r, i) => ({ id: String(i), text: r.text, tags: [] }))).unique;
  const tv = (await embedder.embed(train.map((c) => c.text))).vectors;
  const info = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim: embedder.dim, maxTokens: embedder.maxTokens };
  const built = buildCoverageModel(train, train.length, evalSetHash(train), tv, info, { ...DEFAULT_FIT, k: 60, source: 'banking77', textField: 'text' });
  saveCoverageModel(path.join(dir, 'model'), built.draft, built.arrays);
  const assigner = new CoverageAssigner(loadCoverageModel(path.join(dir, 'model')));

  const test = loadBanking77('test');
  const texts = Array.from({ length: N }, (_, i) => test[i % test.length].text);

  const store = await Store.open(cfg.clickhouse);
  const kafka = createKafka(cfg.kafka, 'evalgap-bench', logger);
  const topic = uniqueName('evalgap.bench');
  await ensureTopics(kafka, [{ topic }, { topic: `${topic}.dlq` }]);
  const producer = kafka.producer();
  await producer.connect();
  const now = Date.now();
  await produceJson(producer, topic, texts.map((q, i) => ({ request_id: `b-${i}`, ts: now, query: q, agent: 'bench' })));

  const c = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group: uniqueName('bench') } };
  // as evalgap run does: the service embeds in the worker pool; bare throughput through that same
  // pool (sequential calls of 256 texts, no pipelining) is the baseline
  const bareWorker = async () => {
    const t0 = performance.now();
    for (let i = 0; i < texts.length; i += 256) await threaded.embed(texts.slice(i, i + 256));
    return texts.length / ((performance.now() - t0) / 1000);
  };
  await threaded.embed(texts.slice(0, 256));
  // this machine's throughput drifts by tens of percent from minute to minute: the end-to-end
  // phase is bracketed by two bare measurements and compared with their mean
  const bareBefore = await bareWorker();
  const service = new IngestService(
    { kafka, store, embedder: threaded, assigner, logger },
    ingestOptionsFrom(c, { metricsPort: -1 }),
  );
  const total = async (name: 'consumed' | 'stored') =>
    (await service.metrics[name].get()).values.reduce((a, v) => a + v.value, 0);
  await service.start();
  while ((await total('consumed')) === 0) await sleep(5);
  const t = performance.now();
  while ((await total('stored')) < N) await sleep(20);
  const e2eSps = N / ((performance.now() - t) / 1000);
  const bareAfter = await bareWorker();
  const bareMean = (bareBefore + bareAfter) / 2;

  // paced traffic at half the measured rate
  const rate = Math.max(1, Math.floor(e2eSps / 2));
  const paced = Math.floor(rate * paceSeconds);
  const tickMs = 100;
  const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
  const start = Date.now();
  let sent = 0;
  while (sent < paced) {
    const batch = [];
    for (let j = 0; j < perTick && sent < paced; j++, sent++) {
      batch.push({ request_id: `p-${sent}`, ts: Date.now(), query: texts[sent % texts.length], agent: 'bench-paced' });
    }
    await produceJson(producer, topic, batch);
    const next = start + ((sent / perTick) * tickMs);
    await sleep(Math.max(0, next - Date.now()));
  }
  while ((await total('stored')) < N + paced) await sleep(20);
  const [lat] = await store.query<{ p50: number; p99: number; max: number }>(
    `SELECT quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS max
     FROM (SELECT toFloat64(dateDiff('millisecond', ts, ingested_at)) AS d FROM ${store.t('requests')} WHERE agent = 'bench-paced')`,
  );
  const loop = service.eventLoopDelay();
  await service.stop();
  await threaded.close();
  await producer.disconnect();
  await store.close();
  clearInterval(sampler);
  console.log(
    JSON.stringify(
      {
        bench: 'ingest',
        store: 'embedded (chdb)',
        messages: N,
        batchSize: cfg.embed.batchSize,
        precision: cfg.embed.precision,
        workers: threaded.workers,
        endToEndMessagesPerSecond: Math.round(e2eSps),
        bareEmbeddingSentencesPerSecond: {
          workerPoolBefore: Math.round(bareBefore),
          workerPoolAfter: Math.round(bareAfter),
        },
        endToEndOverBareEmbedding: Number((e2eSps / bareMean).toFixed(3)),
        paced: { messagesPerSecond: rate, messages: paced, produceToStoredMs: lat },
        eventLoopDelayMs: Object.fromEntries(Object.entries(loop).map(([k, v]) => [k, Number(v.toFixed(1))])),
        peakRssMB: Math.round(peak / 2 ** 20),
      },
      null,
      2,
    ),
  );
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
