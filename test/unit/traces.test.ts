/**
 * OTLP traces: decoding both encodings (payloads made by the OpenTelemetry JS SDK's own
 * serializers), a trace's user turn under current and older conventions, and the partition
 * assembler's exactly-once replay across crashes.
 */
import { describe, expect, it } from 'vitest';
import { SpanStatusCode, context, trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { decodeOtlpTraces, type Span } from '../../src/traces/otlp.js';
import { turnFromTrace } from '../../src/traces/turn.js';
import { PartitionAssembler, type Completion } from '../../src/traces/assemble.js';

const userMsgs = (...texts: string[]) =>
  JSON.stringify(texts.flatMap((t, i) => [
    { role: 'user', parts: [{ type: 'text', content: t }] },
    ...(i < texts.length - 1 ? [{ role: 'assistant', parts: [{ type: 'text', content: `answer ${i}` }] }] : []),
  ]));

function agentTurn(): ReadableSpan[] {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'support-bot', 'service.version': '2.1.0' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('test-agent');
  const root = tracer.startSpan('invoke_agent support', {
    attributes: {
      'gen_ai.operation.name': 'invoke_agent',
      'gen_ai.agent.name': 'support',
      'gen_ai.conversation.id': 'conv-42',
      'gen_ai.input.messages': userMsgs('hi', 'my card is blocked', 'and the other one?'),
    },
  });
  const ctx = trace.setSpan(context.active(), root);
  const chat = tracer.startSpan('chat gpt-x', { attributes: { 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'gpt-x', 'gen_ai.usage.input_tokens': 120, 'gen_ai.usage.output_tokens': 30 } }, ctx);
  chat.end();
  const t0 = Date.now();
  for (const [i, name] of ['lookup_card', 'block_card'].entries()) {
    const t = tracer.startSpan(`execute_tool ${name}`, { startTime: t0 + i * 5, attributes: { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': name } }, ctx);
    t.end(t0 + i * 5 + 3);
  }
  const chat2 = tracer.startSpan('chat gpt-x', { attributes: { 'gen_ai.operation.name': 'chat', 'gen_ai.usage.input_tokens': 200, 'gen_ai.usage.output_tokens': 60, 'evalgap.escalated': false } }, ctx);
  chat2.setStatus({ code: SpanStatusCode.ERROR, message: 'rate limited' });
  chat2.end();
  root.end();
  return exporter.getFinishedSpans();
}

describe('decodeOtlpTraces', () => {
  const spans = agentTurn();
  const proto = Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);
  const json = Buffer.from(JsonTraceSerializer.serializeRequest(spans)!);

  for (const [name, payload, enc] of [['otlp_proto', proto, 'otlp_proto'], ['otlp_json', json, 'otlp_json'], ['auto proto', proto, 'auto'], ['auto json', json, 'auto']] as const) {
    it(`decodes ${name} into the SDK's spans`, () => {
      const r = decodeOtlpTraces(payload, enc);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.spans).toHaveLength(spans.length);
      const root = spans.find((s) => !s.parentSpanContext)!;
      const got = r.spans.find((s) => s.parentSpanId === '')!;
      expect(got.traceId).toBe(root.spanContext().traceId);
      expect(got.spanId).toBe(root.spanContext().spanId);
      expect(got.resource['service.name']).toBe('support-bot');
      expect(got.attributes['gen_ai.conversation.id']).toBe('conv-42');
      const errored = r.spans.filter((s) => s.statusCode === 2);
      expect(errored).toHaveLength(1);
      expect(errored[0]!.statusMessage).toBe('rate limited');
      const chat = r.spans.find((s) => s.attributes['gen_ai.usage.input_tokens'] === 120)!;
      expect(chat.parentSpanId).toBe(root.spanContext().spanId);
      expect(chat.endMs).toBeGreaterThanOrEqual(chat.startMs);
      const sdk = spans.find((s) => s.spanContext().spanId === chat.spanId)!;
      expect(chat.startMs).toBeCloseTo(sdk.startTime[0] * 1000 + sdk.startTime[1] / 1e6, 2);
    });
  }

  it('gives a reason, never an exception, for what is not a trace request', () => {
    const bad: (Buffer | null)[] = [
      null,
      Buffer.alloc(0),
      Buffer.from('{"resourceSpans": 5}'),
      Buffer.from('{"resourceSpans": ['),
      Buffer.from([0xff, 0xfe, 0x00, 0x7b]),
      Buffer.from('{' + '"a":['.repeat(5000)),
      Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
      Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)),
    ];
    for (const b of bad) {
      const r = decodeOtlpTraces(b, 'auto');
      expect(r.ok, String(b?.subarray(0, 16).toString('hex'))).toBe(false);
      if (!r.ok) expect(r.reason.length).toBeGreaterThan(0);
    }
    expect(decodeOtlpTraces(proto, 'auto', 10)).toEqual({ ok: false, reason: `message of ${proto.length} bytes exceeds the limit of 10` });
  });
});

describe('turnFromTrace', () => {
  const decoded = (() => {
    const r = decodeOtlpTraces(Buffer.from(ProtobufTraceSerializer.serializeRequest(agentTurn())!), 'otlp_proto');
    if (!r.ok) throw new Error(r.reason);
    return r.spans;
  })();

  it('reads the query, turn, session, agent, version, tools, outcome, latency and tokens', () => {
    const r = turnFromTrace([...decoded].reverse(), { escalatedAttribute: 'evalgap.escalated' });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const m = r.message;
    const root = decoded.find((s) => s.parentSpanId === '')!;
    expect(m.request_id).toBe(`otlp-${root.traceId}`);
    expect(m.query).toBe('and the other one?');
    expect(m.turn).toBe(3);
    expect(m.session_id).toBe('conv-42');
    expect(m.agent).toBe('support');
    expect(m.version).toBe('2.1.0');
    expect(m.tools).toEqual(['lookup_card', 'block_card']);
    expect(m.outcome).toBe('failed');
    expect(m.escalated).toBe(false);
    expect(m.metadata.input_tokens).toBe(320);
    expect(m.metadata.output_tokens).toBe(90);
    expect(m.metadata.model).toBe('gpt-x');
    expect(m.ts).toBe(Math.floor(root.startMs));
    expect(m.latency_ms).toBeCloseTo(root.endMs - root.startMs, 3);
  });

  it('marks a turn escalated by the configured attribute', () => {
    const spans = decoded.map((s) => (s.parentSpanId === '' ? { ...s, attributes: { ...s.attributes, 'handoff.human': 'true' } } : s));
    const r = turnFromTrace(spans, { escalatedAttribute: 'handoff.human' });
    expect(r.ok && r.message.outcome).toBe('escalated');
    expect(r.ok && r.message.escalated).toBe(true);
  });

  const base: Span = {
    traceId: 'ab'.repeat(16), spanId: '01'.repeat(8), parentSpanId: '', name: 'llm', startMs: 1_767_225_600_000, endMs: 1_767_225_601_000,
    statusCode: 0, statusMessage: '', attributes: {}, resource: { 'service.name': 'svc' }, events: [],
  };

  it('reads the older conventions: gen_ai.prompt.N attributes, span events, OpenInference', () => {
    const legacy = turnFromTrace([{ ...base, attributes: { 'gen_ai.prompt.0.role': 'system', 'gen_ai.prompt.0.content': 'be nice', 'gen_ai.prompt.1.role': 'user', 'gen_ai.prompt.1.content': 'refund please', 'session.id': 's1' } }], { escalatedAttribute: 'x' });
    expect(legacy.ok && [legacy.message.query, legacy.message.turn, legacy.message.session_id, legacy.message.agent]).toEqual(['refund please', 1, 's1', 'svc']);
    const events = turnFromTrace([{ ...base, events: [
      { name: 'gen_ai.user.message', timeMs: 1, attributes: { content: 'first' } },
      { name: 'gen_ai.assistant.message', timeMs: 2, attributes: { content: 'ok' } },
      { name: 'gen_ai.user.message', timeMs: 3, attributes: { content: 'second question' } },
    ] }], { escalatedAttribute: 'x' });
    expect(events.ok && [events.message.query, events.message.turn]).toEqual(['second question', 2]);
    const prompt = turnFromTrace([{ ...base, events: [{ name: 'gen_ai.content.prompt', timeMs: 1, attributes: { 'gen_ai.prompt': '[{"role":"user","content":"what is my balance"}]' } }] }], { escalatedAttribute: 'x' });
    expect(prompt.ok && prompt.message.query).toBe('what is my balance');
    const oi = turnFromTrace([{ ...base, attributes: { 'llm.input_messages.0.message.role': 'user', 'llm.input_messages.0.message.content': 'open an account' } }], { escalatedAttribute: 'x' });
    expect(oi.ok && oi.message.query).toBe('open an account');
    const input = turnFromTrace([{ ...base, attributes: { 'input.value': 'plain input' } }], { escalatedAttribute: 'x' });
    expect(input.ok && input.message.query).toBe('plain input');
  });

  it('refuses a trace with no user message', () => {
    expect(turnFromTrace([{ ...base, attributes: { 'http.route': '/health' } }], { escalatedAttribute: 'x' })).toEqual({ ok: false, reason: 'no user message in the trace' });
  });
});

// ---- the assembler --------------------------------------------------------------------------

function span(traceId: string, spanId: string, parent: string, endMs: number): Span {
  return { traceId, spanId, parentSpanId: parent, name: 's', startMs: endMs - 10, endMs, statusCode: 0, statusMessage: '', attributes: {}, resource: {}, events: [] };
}

const OPTS = { graceMs: 1000, maxHoldMs: 5000, rememberMs: 60_000 };

describe('PartitionAssembler', () => {
  it('waits for children exported after their root, within the grace', () => {
    const a = new PartitionAssembler(OPTS);
    expect(a.push(0n, [span('t1', 'r', '', 1000)], 0)).toEqual([]);
    expect(a.push(1n, [span('t1', 'c', 'r', 990)], 0)).toEqual([]);
    const done = a.push(2n, [span('t2', 'x', '', 2500)], 0);
    expect(done.map((c) => [c.kind, c.traceId, c.spans.length])).toEqual([['trace', 't1', 2]]);
    expect(a.commitPoint().offset).toBe('2');
    expect(a.push(3n, [span('t1', 'late', 'r', 1200)], 0)).toEqual([]);
    expect(a.lateSpans).toBe(1);
  });

  it('gives up a trace whose root never comes, and flushes on idle', () => {
    const a = new PartitionAssembler(OPTS);
    a.push(0n, [span('orphan', 'c', 'r', 1000)], 0);
    a.push(1n, [span('t2', 'r', '', 1500)], 0);
    const byWatermark = a.push(2n, [span('t3', 'c', 'zz', 6100)], 0);
    expect(byWatermark.map((c) => [c.kind, c.traceId])).toEqual([['incomplete', 'orphan'], ['trace', 't2']]);
    const idle = a.flushIdle(10);
    expect(idle).toEqual([]); // t3 has no root and is young by the clock
    expect(a.flushIdle(10 + OPTS.maxHoldMs).map((c) => [c.kind, c.traceId])).toEqual([['incomplete', 't3']]);
    expect(a.commitPoint()).toEqual({ offset: '3', metadata: JSON.stringify({ v: 1, h: '2', w: 6100, idle: [] }) });
  });

  it('emits every trace exactly once across crashes, replays and idle flushes (1,000 random schedules)', () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let run = 0; run < 1000; run++) {
      // a stream of 40 messages over ~15 traces, children before or after their root, some rootless
      const msgs: Span[][] = [];
      const open: { id: string; left: number; rootAt: number; rootless: boolean }[] = [];
      let t = 0;
      let n = 0;
      const rooted = new Set<string>();
      for (let i = 0; i < 40; i++) {
        t += Math.floor(rnd() * 800);
        if (open.length < 4 && rnd() < 0.5) {
          const id = `t${n++}`;
          const rootless = rnd() < 0.1;
          open.push({ id, left: 1 + Math.floor(rnd() * 4), rootAt: Math.floor(rnd() * 3), rootless });
        }
        const m: Span[] = [];
        for (const tr of [...open]) {
          if (rnd() < 0.6) {
            const isRoot = !tr.rootless && tr.rootAt === 0;
            m.push(span(tr.id, `s${i}`, isRoot ? '' : 'root', t + (isRoot ? 0 : -Math.floor(rnd() * 300))));
            if (isRoot) rooted.add(tr.id);
            tr.rootAt--;
            if (--tr.left <= 0 && tr.rootAt < 0) open.splice(open.indexOf(tr), 1);
          }
        }
        msgs.push(m);
      }
      // process with commits after every step, random idle flushes and crashes
      let committed = { offset: '0', metadata: '' };
      let a = new PartitionAssembler(OPTS);
      let pos = 0;
      let clock = 0;
      const out: Completion[] = [];
      let steps = 0;
      while (pos < msgs.length && steps++ < 10_000) {
        const r = rnd();
        clock += 100;
        if (r < 0.1) {
          a = new PartitionAssembler(OPTS);
          a.restore(committed.offset, committed.metadata);
          pos = Number(committed.offset);
          continue;
        }
        if (r < 0.2) out.push(...a.flushIdle(clock));
        else out.push(...a.push(BigInt(pos), msgs[pos]!, clock)), pos++;
        committed = a.commitPoint();
      }
      out.push(...a.flushIdle(clock + 1e9));
      const traces = out.filter((c) => c.kind === 'trace').map((c) => c.traceId);
      expect(new Set(traces).size, `run ${run}: a trace emitted twice`).toBe(traces.length);
      for (const id of rooted) expect(traces.includes(id), `run ${run}: ${id} lost`).toBe(true);
    }
  });
});
