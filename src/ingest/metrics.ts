/** Prometheus metrics of the ingest service (one registry per service instance). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createIngestMetrics(defaultMetrics = true) {
  const registry = new Registry();
  if (defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'evalgap_' });
  const m = {
    registry,
    consumed: new Counter({ name: 'evalgap_messages_consumed_total', help: 'Kafka messages consumed', labelNames: ['topic'], registers: [registry] }),
    stored: new Counter({ name: 'evalgap_rows_stored_total', help: 'request rows written to ClickHouse', labelNames: ['topic'], registers: [registry] }),
    deadLettered: new Counter({ name: 'evalgap_messages_dead_lettered_total', help: 'messages sent to the dead-letter topic', labelNames: ['topic'], registers: [registry] }),
    skipped: new Counter({
      name: 'evalgap_messages_skipped_total',
      help: 'redelivered messages skipped because their rows were already stored',
      labelNames: ['topic'],
      registers: [registry],
    }),
    uncovered: new Counter({ name: 'evalgap_rows_uncovered_total', help: 'stored rows outside eval coverage', labelNames: ['topic'], registers: [registry] }),
    storeErrors: new Counter({ name: 'evalgap_store_errors_total', help: 'failed ClickHouse writes (retried)', registers: [registry] }),
    embedSeconds: new Histogram({
      name: 'evalgap_embed_seconds',
      help: 'embedding time per batch',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    storeSeconds: new Histogram({
      name: 'evalgap_store_seconds',
      help: 'ClickHouse insert time per batch',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: 'evalgap_batch_size',
      help: 'messages per processed batch',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2000, 5000],
      registers: [registry],
    }),
    lag: new Gauge({ name: 'evalgap_consumer_lag', help: 'messages behind the partition high watermark', labelNames: ['topic', 'partition'], registers: [registry] }),
    paused: new Gauge({ name: 'evalgap_partitions_paused', help: 'partitions paused for back-pressure (store down)', registers: [registry] }),
    modelRefused: new Counter({
      name: 'evalgap_coverage_model_refused_total',
      help: 'newly deployed coverage models refused on hot reload (the model in use was kept)',
      registers: [registry],
    }),
    modelRefusedNow: new Gauge({
      name: 'evalgap_coverage_model_refused',
      help: '1 while the model --model points at is refused and the previous one is still in use, else 0',
      registers: [registry],
    }),
    evictions: new Counter({
      name: 'evalgap_consumer_evictions_total',
      help: 'times the group coordinator dropped this member (session or rebalance timeout) and it re-joined with a new member id',
      registers: [registry],
    }),
    embedCallTexts: new Gauge({ name: 'evalgap_embed_call_texts', help: 'texts per embedding call, chosen from the measured embedding speed', registers: [registry] }),
  };
  return m;
}

export type IngestMetrics = ReturnType<typeof createIngestMetrics>;
