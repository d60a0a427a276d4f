/**
 * OTLP trace payloads, as the OpenTelemetry Collector's Kafka exporter writes them: one
 * `ExportTraceServiceRequest` per Kafka message, encoded `otlp_proto` (the exporter's default) or
 * `otlp_json`. Both are flattened to the same plain spans.
 *
 * Protobuf is decoded with the message classes that the OpenTelemetry JS project generated from
 * the official opentelemetry-proto definitions (`@opentelemetry/otlp-transformer` 0.210.0, which
 * still ships them; the protobufjs runtime does the wire format). OTLP/JSON is JSON: its shape is
 * checked with zod (ids are hex, 64-bit integers may be strings, enums are numbers).
 * Never throws: a payload that is not a trace request gives a reason.
 */
import { createRequire } from 'node:module';
import { z } from 'zod';
import { jsonDepth } from '../schema/limits.js';

/** A span attribute's value, as plain data (AnyValue). */
export type AttrValue = string | number | boolean | null | AttrValue[] | { [k: string]: AttrValue };

export interface SpanEvent {
  name: string;
  timeMs: number;
  attributes: Record<string, AttrValue>;
}

/** One span, flattened with its resource's attributes. Ids are lower-case hex. */
export interface Span {
  traceId: string;
  spanId: string;
  /** '' for a root span */
  parentSpanId: string;
  name: string;
  /** epoch milliseconds with microseconds as the fraction */
  startMs: number;
  endMs: number;
  /** 0 unset, 1 ok, 2 error (OTLP StatusCode) */
  statusCode: number;
  statusMessage: string;
  attributes: Record<string, AttrValue>;
  resource: Record<string, AttrValue>;
  events: SpanEvent[];
}

export type OtlpEncoding = 'otlp_proto' | 'otlp_json' | 'auto';

export type OtlpDecodeResult = { ok: true; spans: Span[] } | { ok: false; reason: string };

// the generated protobufjs module (CommonJS); its types are protobufjs's own
const require = createRequire(import.meta.url);
interface ProtoRequestClass {
  decode(b: Uint8Array): unknown;
  toObject(m: unknown, o: { longs: typeof String; bytes: typeof String; defaults: boolean; arrays: boolean }): unknown;
}
let protoClass: ProtoRequestClass | null = null;
function requestClass(): ProtoRequestClass {
  if (!protoClass) {
    const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js') as {
      opentelemetry: { proto: { collector: { trace: { v1: { ExportTraceServiceRequest: ProtoRequestClass } } } } };
    };
    protoClass = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
  }
  return protoClass;
}

// ---- the OTLP object shape (both encodings end up here; ids in base64 for proto, hex for JSON) ----

const intLike = z.union([z.number(), z.string().regex(/^-?\d+$/)]);
type AnyValueIn = {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number | string;
  bytesValue?: string;
  arrayValue?: { values?: AnyValueIn[] };
  kvlistValue?: { values?: { key: string; value?: AnyValueIn }[] };
};
const anyValue: z.ZodType<AnyValueIn> = z.lazy(() =>
  z.object({
    stringValue: z.string().optional(),
    boolValue: z.boolean().optional(),
    intValue: intLike.optional(),
    doubleValue: z.union([z.number(), z.string()]).optional(),
    bytesValue: z.string().optional(),
    arrayValue: z.object({ values: z.array(anyValue).optional() }).optional(),
    kvlistValue: z.object({ values: z.array(z.object({ key: z.string(), value: anyValue.optional() })).optional() }).optional(),
  }),
);
const keyValues = z.array(z.object({ key: z.string(), value: anyValue.optional() })).optional();
const spanShape = z.object({
  traceId: z.string().optional(),
  spanId: z.string().optional(),
  parentSpanId: z.string().optional(),
  name: z.string().optional(),
  startTimeUnixNano: intLike.optional(),
  endTimeUnixNano: intLike.optional(),
  attributes: keyValues,
  events: z.array(z.object({ name: z.string().optional(), timeUnixNano: intLike.optional(), attributes: keyValues })).optional(),
  status: z.object({ code: z.union([z.number(), z.string()]).optional(), message: z.string().optional() }).optional(),
});
const requestShape = z.object({
  resourceSpans: z
    .array(
      z.object({
        resource: z.object({ attributes: keyValues }).optional(),
        scopeSpans: z.array(z.object({ spans: z.array(spanShape).optional() })).optional(),
      }),
    )
    .optional(),
});

function value(v: AnyValueIn | undefined, depth = 0): AttrValue {
  if (!v || depth > 16) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return Number(v.doubleValue);
  if (v.bytesValue !== undefined) return v.bytesValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map((x) => value(x, depth + 1));
  if (v.kvlistValue) return attrs(v.kvlistValue.values, depth + 1);
  return null;
}

function attrs(kvs: { key: string; value?: AnyValueIn }[] | undefined, depth = 0): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = Object.create(null);
  for (const kv of kvs ?? []) out[kv.key] = value(kv.value, depth);
  return out;
}

/** Nanoseconds → milliseconds, microseconds kept as the fraction (tools started in one millisecond keep their order). */
const nanosToMs = (v: number | string | undefined): number => (v === undefined ? 0 : Number(BigInt(v) / 1_000n) / 1000);

const STATUS_NAMES: Record<string, number> = { STATUS_CODE_UNSET: 0, STATUS_CODE_OK: 1, STATUS_CODE_ERROR: 2 };
function statusCode(c: number | string | undefined): number {
  if (c === undefined) return 0;
  if (typeof c === 'number') return c;
  return STATUS_NAMES[c] ?? (Number(c) || 0);
}

function flatten(req: z.infer<typeof requestShape>, id: (s: string | undefined) => string): Span[] {
  const spans: Span[] = [];
  for (const rs of req.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        spans.push({
          traceId: id(s.traceId),
          spanId: id(s.spanId),
          parentSpanId: id(s.parentSpanId),
          name: s.name ?? '',
          startMs: nanosToMs(s.startTimeUnixNano),
          endMs: nanosToMs(s.endTimeUnixNano),
          statusCode: statusCode(s.status?.code),
          statusMessage: s.status?.message ?? '',
          attributes: attrs(s.attributes),
          resource,
          events: (s.events ?? []).map((e) => ({ name: e.name ?? '', timeMs: nanosToMs(e.timeUnixNano), attributes: attrs(e.attributes) })),
        });
      }
    }
  }
  return spans;
}

const b64ToHex = (s: string | undefined): string => (s ? Buffer.from(s, 'base64').toString('hex') : '');
const hexId = (s: string | undefined): string => (s ? s.toLowerCase() : '');

function fromProto(bytes: Buffer): OtlpDecodeResult {
  let obj: unknown;
  try {
    const cls = requestClass();
    obj = cls.toObject(cls.decode(bytes), { longs: String, bytes: String, defaults: false, arrays: true });
  } catch (e) {
    return { ok: false, reason: `not an OTLP protobuf ExportTraceServiceRequest: ${(e as Error).message.slice(0, 200)}` };
  }
  const r = requestShape.safeParse(obj);
  if (!r.success) return { ok: false, reason: 'not an OTLP ExportTraceServiceRequest' };
  return { ok: true, spans: flatten(r.data, b64ToHex) };
}

/** OTLP/JSON nests resourceSpans → scopeSpans → spans → attributes → values: 64 leaves room for nested attribute values. */
const MAX_JSON_DEPTH = 64;

function fromJson(bytes: Buffer): OtlpDecodeResult {
  if (jsonDepth(bytes, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) return { ok: false, reason: `OTLP/JSON nested deeper than ${MAX_JSON_DEPTH}` };
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    return { ok: false, reason: e instanceof SyntaxError ? 'invalid OTLP/JSON: not JSON' : 'OTLP/JSON is not valid UTF-8' };
  }
  const r = requestShape.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0]!;
    return { ok: false, reason: `not an OTLP/JSON ExportTraceServiceRequest: ${i.path.join('.') || '(root)'}: ${i.message}` };
  }
  return { ok: true, spans: flatten(r.data, hexId) };
}

/**
 * Decode one Kafka message of the exporter's trace topic. `auto` takes a payload whose first
 * non-blank byte is `{` as OTLP/JSON (no OTLP protobuf request starts with that byte: field 15
 * with the group wire type does not exist in it) and anything else as protobuf.
 */
export function decodeOtlpTraces(payload: Buffer | null, encoding: OtlpEncoding = 'auto', maxBytes = 16 * 1024 * 1024): OtlpDecodeResult {
  if (!payload || payload.length === 0) return { ok: false, reason: 'empty message' };
  if (payload.length > maxBytes) return { ok: false, reason: `message of ${payload.length} bytes exceeds the limit of ${maxBytes}` };
  let enc = encoding;
  if (enc === 'auto') {
    let i = 0;
    while (i < payload.length && (payload[i] === 0x20 || payload[i] === 0x0a || payload[i] === 0x0d || payload[i] === 0x09)) i++;
    enc = payload[i] === 0x7b ? 'otlp_json' : 'otlp_proto';
  }
  return enc === 'otlp_json' ? fromJson(payload) : fromProto(payload);
}
