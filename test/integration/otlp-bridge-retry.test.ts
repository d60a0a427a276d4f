/**
 * The OTLP bridge's counters count what a committed transaction wrote, once: a transaction that
 * fails is aborted and its batch re-read from the committed offset, and the re-read must not count
 * the batch's spans, turns or drops a second time (real broker; the failure is injected into the
 * first transaction's commit).
 */
import { describe, expect, it } from 'vitest';
import type { Kafka, Producer, Transaction } from 'kafkajs';
import { context, trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { createLogger } from '../../src/config/logger.js';
import { ensureTopics } from '../../src/ingest/kafka.js';
import { OtlpBridge } from '../../src/ingest/otlp-bridge.js';
import { readTopic, testKafka, uniqueName, waitFor } from '../helpers/fixtures.js';

/** One agent turn: a root with the user's message, a chat call and a tool call (3 spans). */
function turnSpans(text: string): ReadableSpan[] {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'bot' }), spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer('test');
  const root = tracer.startSpan('invoke_agent bot', {
    attributes: { 'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': 'bot', 'gen_ai.input.messages': JSON.stringify([{ role: 'user', parts: [{ type: 'text', content: text }] }]) },
  });
  const ctx = trace.setSpan(context.active(), root);
  tracer.startSpan('chat m', { attributes: { 'gen_ai.operation.name': 'chat' } }, ctx).end();
  tracer.startSpan('execute_tool lookup', { attributes: { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'lookup' } }, ctx).end();
  root.end();
  return exporter.getFinishedSpans();
}

/** The broker as it is, except that the first transaction's commit fails (after its sends). */
function failFirstCommit(real: Kafka): { kafka: Kafka; failed: () => number } {
  let failures = 0;
  const kafka = {
    admin: (...a: Parameters<Kafka['admin']>) => real.admin(...a),
    consumer: (...a: Parameters<Kafka['consumer']>) => real.consumer(...a),
    producer: (...a: Parameters<Kafka['producer']>): Producer => {
      const p = real.producer(...a);
      const open = p.transaction.bind(p);
      p.transaction = async (): Promise<Transaction> => {
        const t = await open();
        if (failures === 0) {
          t.commit = async () => {
            failures++;
            throw new Error('injected: the commit failed');
          };
        }
        return t;
      };
      return p;
    },
  } as unknown as Kafka;
  return { kafka, failed: () => failures };
}

describe('OTLP bridge counters', () => {
  it('count each span, turn and drop once when a transaction fails and its batch is read again', async () => {
    const real = testKafka();
    const spans = uniqueName('otlp.retry');
    const requests = `${spans}.requests`;
    await ensureTopics(real, [{ topic: spans, numPartitions: 1 }, { topic: requests }, { topic: `${requests}.dlq` }]);
    const texts = ['where is my card', 'how do I reset my pin', 'close my account'];
    const payloads = texts.map((t) => Buffer.from(JsonTraceSerializer.serializeRequest(turnSpans(t))!));
    const producer = real.producer();
    await producer.connect();
    // the turns and one payload that is not OTLP (dead-lettered, counted as bad_payload), in one batch
    await producer.send({ topic: spans, messages: [...payloads.map((value) => ({ value })), { value: Buffer.from('not otlp') }] });
    await producer.disconnect();

    const flaky = failFirstCommit(real);
    const logger = createLogger('silent');
    const bridge = new OtlpBridge(flaky.kafka, logger, {
      sourceTopic: spans, requestsTopic: requests, dlqTopic: `${requests}.dlq`, group: uniqueName('g'), encoding: 'otlp_json',
      graceMs: 200, maxHoldMs: 60_000, idleMs: 500, escalatedAttribute: 'evalgap.escalated', maxMessageBytes: 1_048_576,
    });
    await bridge.start();
    try {
      const turns = await readTopic(real, requests, texts.length, 60_000);
      expect(turns.map((m) => JSON.parse(String(m.value)).query).sort()).toEqual([...texts].sort());
      expect(flaky.failed(), 'the injected failure happened').toBe(1);
      const value = async (c: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }, reason?: string) =>
        (await c.get()).values.filter((v) => reason === undefined || v.labels.reason === reason).reduce((a, v) => a + v.value, 0);
      await waitFor(async () => (await value(bridge.metrics.turns)) >= texts.length, 60_000, 'the turns counted');
      // settled: a little longer, nothing more may be counted
      await new Promise((r) => setTimeout(r, 1500));
      expect(await value(bridge.metrics.spans)).toBe(3 * texts.length);
      expect(await value(bridge.metrics.turns)).toBe(texts.length);
      expect(await value(bridge.metrics.dropped, 'bad_payload')).toBe(1);
      // and no turn was written twice
      const again = await readTopic(real, requests, texts.length, 5_000);
      expect(again).toHaveLength(texts.length);
    } finally {
      await bridge.stop();
    }
  });
});
