/**
 * OpenTelemetry traces in, end to end with real parts: an agent instrumented with the official
 * OpenTelemetry JS SDK exports GenAI spans over OTLP/HTTP to the real OpenTelemetry Collector
 * (scripts/otelcol.sh: OTLP receiver + the contrib Kafka exporter), which writes them to the real
 * broker in `otlp_proto` and in `otlp_json`; the OTLP bridge assembles each trace's user turn and
 * `evalgap run`'s consumer embeds, assigns and stores it in the embedded engine. The stored rows
 * must match what the agent did, once each, also when the bridge is stopped and restarted midway.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SpanStatusCode, context, trace } from '@opentelemetry/api';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { createLogger } from '../../src/config/logger.js';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import { createKafka, ensureTopics } from '../../src/ingest/kafka.js';
import { IngestService, ingestOptionsFrom } from '../../src/ingest/service.js';
import { OtlpBridge } from '../../src/ingest/otlp-bridge.js';
import { Store } from '../../src/store/store.js';
import { sampleEvalSet } from '../../src/cli/sample-data.js';
import type { Config } from '../../src/config/index.js';
import { BROKERS, fitSampleModel, freePort, realEmbedder, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const built = spawnSync('bash', [path.join(ROOT, 'scripts/otelcol.sh'), 'path'], { encoding: 'utf8' });
const COLLECTOR = built.status === 0 ? built.stdout.trim() : '';
if (!COLLECTOR) {
  console.warn('otlp.test.ts: SKIPPED — the OpenTelemetry Collector is not built (bash scripts/otelcol.sh install; needs Go and the Go module proxy)');
}

let cfg: Config;
let store: Store;
let assigner: CoverageAssigner;
const logger = createLogger('silent');
const kafka = testKafka();

async function startCollector(topic: string, encoding: 'otlp_proto' | 'otlp_json'): Promise<{ proc: ChildProcess; url: string }> {
  const port = await freePort();
  const dir = tmpDir('evalgap-otelcol-');
  const conf = path.join(dir, 'config.yaml');
  fs.writeFileSync(conf, [
    'receivers:',
    '  otlp:',
    '    protocols:',
    '      http:',
    `        endpoint: 127.0.0.1:${port}`,
    'exporters:',
    '  kafka:',
    `    brokers: [${BROKERS.join(', ')}]`,
    '    traces:',
    `      topic: ${topic}`,
    `      encoding: ${encoding}`,
    '    partition_traces_by_id: true',
    'service:',
    '  telemetry:',
    '    metrics:',
    '      level: none',
    '  pipelines:',
    '    traces:',
    '      receivers: [otlp]',
    '      exporters: [kafka]',
    '',
  ].join('\n'));
  const proc = spawn(COLLECTOR, ['--config', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d) => (log += String(d)));
  await waitFor(async () => log.includes('Everything is ready') || (proc.exitCode !== null && Promise.reject(new Error(log))), 120_000, 'the collector to start');
  return { proc, url: `http://127.0.0.1:${port}/v1/traces` };
}

interface Planned {
  session: string;
  turn: number;
  query: string;
  tools: string[];
  outcome: 'ok' | 'failed' | 'escalated';
  agent: string;
  version: string;
}

/** An agent instrumented with the OpenTelemetry JS SDK: one trace per user turn. */
async function runAgent(url: string, plan: Planned[]): Promise<Map<string, Planned>> {
  const byTrace = new Map<string, Planned>();
  const providers = new Map<string, BasicTracerProvider>();
  const provider = (version: string) => {
    let p = providers.get(version);
    if (!p) {
      p = new BasicTracerProvider({
        resource: resourceFromAttributes({ 'service.name': 'bank-agent', 'service.version': version }),
        // one export (so one Kafka message) per span, children and root in whatever order they end
        spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url }))],
      });
      providers.set(version, p);
    }
    return p;
  };
  const history = new Map<string, string[]>();
  for (const t of plan) {
    const tracer = provider(t.version).getTracer('bank-agent');
    const msgs = [...(history.get(t.session) ?? []), t.query];
    history.set(t.session, msgs);
    const input = msgs.flatMap((q, i) => [
      { role: 'user', parts: [{ type: 'text', content: q }] },
      ...(i < msgs.length - 1 ? [{ role: 'assistant', parts: [{ type: 'text', content: 'ok' }] }] : []),
    ]);
    const root = tracer.startSpan(`invoke_agent ${t.agent}`, {
      attributes: {
        'gen_ai.operation.name': 'invoke_agent',
        'gen_ai.agent.name': t.agent,
        'gen_ai.conversation.id': t.session,
        'gen_ai.input.messages': JSON.stringify(input),
      },
    });
    const ctx = trace.setSpan(context.active(), root);
    const start = Date.now();
    const chat = tracer.startSpan('chat m', { startTime: start, attributes: { 'gen_ai.operation.name': 'chat', 'gen_ai.usage.input_tokens': 50 } }, ctx);
    chat.end(start + 2);
    t.tools.forEach((name, i) => {
      const s = tracer.startSpan(`execute_tool ${name}`, { startTime: start + 3 + i * 2, attributes: { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': name } }, ctx);
      s.end(start + 4 + i * 2);
    });
    if (t.outcome === 'failed') root.setStatus({ code: SpanStatusCode.ERROR, message: 'model error' });
    if (t.outcome === 'escalated') root.setAttribute('evalgap.escalated', true);
    root.end();
    byTrace.set(root.spanContext().traceId, t);
  }
  for (const p of providers.values()) await p.shutdown();
  return byTrace;
}

function plan(n: number, seed: number): Planned[] {
  const qs = sampleEvalSet(30).map((c) => c.query);
  let x = seed;
  const rnd = () => ((x = (x * 48271) % 2147483647) / 2147483647);
  const out: Planned[] = [];
  const turns = new Map<string, number>();
  const chains = [[], ['lookup_account'], ['lookup_account', 'refund'], ['search_kb', 'search_kb', 'create_ticket']];
  for (let i = 0; i < n; i++) {
    const session = `sess-${seed}-${Math.floor(rnd() * Math.max(2, n / 3))}`;
    const turn = (turns.get(session) ?? 0) + 1;
    turns.set(session, turn);
    const r = rnd();
    out.push({
      session,
      turn,
      query: `${qs[Math.floor(rnd() * qs.length)]} (${i})`,
      tools: chains[Math.floor(rnd() * chains.length)]!,
      outcome: r < 0.15 ? 'failed' : r < 0.25 ? 'escalated' : 'ok',
      agent: rnd() < 0.7 ? 'support' : 'sales',
      version: rnd() < 0.5 ? '1.4.0' : '1.5.0-canary',
    });
  }
  return out;
}

beforeAll(async () => {
  if (!COLLECTOR) return;
  const dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  await fitSampleModel(path.join(dir, 'model'));
  assigner = new CoverageAssigner(loadCoverageModel(path.join(dir, 'model')));
  store = await Store.open(cfg.clickhouse);
});
afterAll(async () => store?.close());

describe.skipIf(!COLLECTOR)('OpenTelemetry traces through the real Collector', () => {
  for (const encoding of ['otlp_proto', 'otlp_json'] as const) {
    it(`stores one row per agent turn, as the agent did it (${encoding}), across a bridge restart`, async () => {
      const spans = uniqueName(`otlp.${encoding}`);
      const requests = `${spans}.requests`;
      const group = uniqueName('g');
      await ensureTopics(kafka, [{ topic: spans, numPartitions: 2 }, { topic: requests }]);
      const c = { ...cfg, kafka: { ...cfg.kafka, topic: requests, dlqTopic: `${requests}.dlq`, group } };
      const ingest = new IngestService(
        { kafka: createKafka(c.kafka, 'evalgap-test', logger), store, embedder: await realEmbedder(), assigner, logger },
        ingestOptionsFrom(c, { metricsPort: -1 }),
      );
      const bridgeOpts = {
        sourceTopic: spans, requestsTopic: requests, dlqTopic: `${requests}.dlq`, group, encoding,
        graceMs: 2000, maxHoldMs: 60_000, idleMs: 1000, escalatedAttribute: 'evalgap.escalated', maxMessageBytes: 4 * 1_048_576,
      };
      const collector = await startCollector(spans, encoding);
      await ingest.start();
      let bridge = new OtlpBridge(createKafka(c.kafka, 'evalgap-otlp', logger), logger, bridgeOpts);
      await bridge.start();
      try {
        const first = await runAgent(collector.url, plan(12, encoding === 'otlp_proto' ? 1 : 2));
        const stored = async (n: number) => {
          const [r] = await store.query<{ n: string }>(`SELECT count() AS n FROM ${store.t('requests')} WHERE kafka_topic = {t:String}`, { t: requests });
          return Number(r!.n) >= n;
        };
        // some turns are stored; then the bridge stops (open traces are re-read by its successor)
        await waitFor(() => stored(3), 120_000, 'the first turns to be stored');
        await bridge.stop();
        const second = await runAgent(collector.url, plan(10, encoding === 'otlp_proto' ? 3 : 4));
        bridge = new OtlpBridge(createKafka(c.kafka, 'evalgap-otlp', logger), logger, bridgeOpts);
        await bridge.start();
        const all = new Map([...first, ...second]);
        await waitFor(() => stored(all.size), 180_000, `${all.size} turns to be stored`);
        // a little longer: nothing more may arrive (no duplicates after the restart)
        await new Promise((r) => setTimeout(r, 3000));
        const rows = await store.query<{ request_id: string; query: string; session_id: string; turn: number; tools: string[]; outcome: string; escalated: number; agent: string; version: string; metadata: string }>(
          `SELECT request_id, query, session_id, turn, tools, outcome, escalated, agent, version, metadata FROM ${store.t('requests')} WHERE kafka_topic = {t:String}`,
          { t: requests },
        );
        const late = (await bridge.metrics.dropped.get()).values;
        expect(late.filter((v) => v.value > 0), 'nothing dropped by the second bridge').toEqual([]);
        expect(rows).toHaveLength(all.size);
        expect(new Set(rows.map((r) => r.request_id)).size).toBe(all.size);
        for (const row of rows) {
          const p = all.get(row.request_id.replace(/^otlp-/, ''));
          expect(p, row.request_id).toBeDefined();
          expect(row.query).toBe(p!.query);
          expect(row.session_id).toBe(p!.session);
          expect(Number(row.turn)).toBe(p!.turn);
          expect(row.tools).toEqual(p!.tools);
          expect(row.outcome).toBe(p!.outcome);
          expect(Number(row.escalated)).toBe(p!.outcome === 'escalated' ? 1 : 0);
          expect(row.agent).toBe(p!.agent);
          const meta = JSON.parse(row.metadata) as Record<string, unknown>;
          expect(row.version).toBe(p!.version);
          expect(meta.source).toBe('otlp');
          expect(meta.input_tokens).toBe(50);
        }
      } finally {
        await bridge.stop();
        await ingest.stop();
        collector.proc.kill('SIGTERM');
      }
    });
  }
});
