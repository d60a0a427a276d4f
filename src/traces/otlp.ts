/**
 * OTLP trace payloads, as the OpenTelemetry Collector's Kafka exporter writes them: one
 * `ExportTraceServiceRequest` per Kafka message, encoded `otlp_proto` (the exporter's default) or
 * `otlp_json`. Both are flattened to the same plain spans.
 *
 * Protobuf is decoded with the message classes that the OpenTelemetry JS project generated from
 * the official opentelemetry-proto definitions (`@opentelemetry/otlp-transformer` 0.210.0, which
 * still ships them; the protobufjs runtime does the wire format). OTLP/JSON is JSON (ids in hex,
 * 64-bit integers as strings, enums as numbers). Both trees are walked with a type check of every
 * field read.
 * Never throws: a payload that is not a trace request gives a reason.
 */
import { createRequire } from 'node:module';
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

// ---- the OTLP object shape, walked with type checks ----
// Both encodings arrive as the same tree: protobuf as the generated classes' message objects (ids
// as bytes, 64-bit integers as numbers or Long), JSON as parsed objects (ids as hex, 64-bit integers
// as strings, enums as numbers). Every field is checked for its type as it is read; a tree of the
// wrong shape is refused with the path of the first wrong field. (A zod schema of the recursive
// AnyValue cost ~1 ms per span here; this walk costs a few microseconds.)

class Shape extends Error {}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v);

function list(v: unknown, at: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new Shape(`${at}: expected an array`);
  return v;
}

function obj(v: unknown, at: string): Obj {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw new Shape(`${at}: expected an object`);
  return v;
}

function text(v: unknown, at: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new Shape(`${at}: expected a string`);
  return v;
}

/** A 64-bit integer as a number, a decimal string, or a protobufjs Long. */
function int64(v: unknown, at: string): bigint | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'number' && Number.isFinite(v)) return BigInt(Math.trunc(v));
  if (typeof v === 'string' && /^-?\d{1,20}$/.test(v)) return BigInt(v);
  if (isObj(v) && typeof v.low === 'number' && typeof v.high === 'number') {
    return (BigInt(v.high >>> 0) << 32n) + BigInt(v.low >>> 0) - (v.high < 0 ? 1n << 64n : 0n);
  }
  throw new Shape(`${at}: expected an integer`);
}

function value(v: unknown, at: string, depth: number): AttrValue {
  if (!isObj(v) || depth > 16) return null;
  if (typeof v.stringValue === 'string') return v.stringValue;
  if (typeof v.boolValue === 'boolean') return v.boolValue;
  if (v.intValue !== undefined && v.intValue !== null) return Number(int64(v.intValue, `${at}.intValue`));
  if (typeof v.doubleValue === 'number') return v.doubleValue;
  if (typeof v.doubleValue === 'string' && v.doubleValue.trim() !== '' && Number.isFinite(Number(v.doubleValue))) return Number(v.doubleValue);
  if (typeof v.bytesValue === 'string') return v.bytesValue;
  if (v.bytesValue instanceof Uint8Array) return Buffer.from(v.bytesValue).toString('base64');
  if (isObj(v.arrayValue)) return list(v.arrayValue.values, `${at}.arrayValue.values`).map((x, i) => value(x, `${at}.arrayValue.values.${i}`, depth + 1));
  if (isObj(v.kvlistValue)) return attrs(v.kvlistValue.values, `${at}.kvlistValue.values`, depth + 1);
  return null;
}

function attrs(kvs: unknown, at: string, depth = 0): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = Object.create(null);
  list(kvs, at).forEach((kv, i) => {
    if (!isObj(kv)) throw new Shape(`${at}.${i}: expected a key-value object`);
    out[text(kv.key, `${at}.${i}.key`)] = value(kv.value, `${at}.${i}.value`, depth);
  });
  return out;
}

const nanosToMs = (n: bigint | null): number => (n === null ? 0 : Number(n / 1_000n) / 1000);

const STATUS_NAMES: Record<string, number> = { STATUS_CODE_UNSET: 0, STATUS_CODE_OK: 1, STATUS_CODE_ERROR: 2 };
function statusCode(c: unknown): number {
  if (typeof c === 'number') return c;
  if (typeof c === 'string') return STATUS_NAMES[c] ?? (Number(c) || 0);
  return 0;
}

function flatten(req: unknown, id: (v: unknown, at: string) => string): Span[] {
  const spans: Span[] = [];
  if (!isObj(req)) throw new Shape('(root): expected an object');
  list(req.resourceSpans, 'resourceSpans').forEach((rsv, r) => {
    const rs = obj(rsv, `resourceSpans.${r}`);
    const resource = attrs(obj(rs.resource, `resourceSpans.${r}.resource`).attributes, `resourceSpans.${r}.resource.attributes`);
    list(rs.scopeSpans, `resourceSpans.${r}.scopeSpans`).forEach((ssv, k) => {
      const at = `resourceSpans.${r}.scopeSpans.${k}`;
      list(obj(ssv, at).spans, `${at}.spans`).forEach((sv, j) => {
        const sat = `${at}.spans.${j}`;
        const s = obj(sv, sat);
        const traceId = id(s.traceId, `${sat}.traceId`);
        if (!traceId) throw new Shape(`${sat}.traceId: missing`);
        const status = obj(s.status, `${sat}.status`);
        spans.push({
          traceId,
          spanId: id(s.spanId, `${sat}.spanId`),
          parentSpanId: id(s.parentSpanId, `${sat}.parentSpanId`),
          name: text(s.name, `${sat}.name`),
          startMs: nanosToMs(int64(s.startTimeUnixNano, `${sat}.startTimeUnixNano`)),
          endMs: nanosToMs(int64(s.endTimeUnixNano, `${sat}.endTimeUnixNano`)),
          statusCode: statusCode(status.code),
          statusMessage: text(status.message, `${sat}.status.message`),
          attributes: attrs(s.attributes, `${sat}.attributes`),
          resource,
          events: list(s.events, `${sat}.events`).map((ev, e) => {
            const o = obj(ev, `${sat}.events.${e}`);
            return { name: text(o.name, `${sat}.events.${e}.name`), timeMs: nanosToMs(int64(o.timeUnixNano, `${sat}.events.${e}.timeUnixNano`)), attributes: attrs(o.attributes, `${sat}.events.${e}.attributes`) };
          }),
        });
      });
    });
  });
  return spans;
}

const bytesId = (v: unknown, at: string): string => {
  if (v === undefined || v === null) return '';
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  throw new Shape(`${at}: expected bytes`);
};
const hexId = (v: unknown, at: string): string => {
  const s = text(v, at);
  if (s && !/^[0-9a-fA-F]{1,64}$/.test(s)) throw new Shape(`${at}: expected a hex id`);
  return s.toLowerCase();
};

function fromProto(bytes: Buffer): OtlpDecodeResult {
  let msg: unknown;
  try {
    msg = requestClass().decode(bytes);
  } catch (e) {
    return { ok: false, reason: `not an OTLP protobuf ExportTraceServiceRequest: ${(e as Error).message.slice(0, 200)}` };
  }
  try {
    return { ok: true, spans: flatten(msg, bytesId) };
  } catch (e) {
    if (e instanceof Shape) return { ok: false, reason: `not an OTLP ExportTraceServiceRequest: ${e.message}` };
    throw e;
  }
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
  try {
    return { ok: true, spans: flatten(json, hexId) };
  } catch (e) {
    if (e instanceof Shape) return { ok: false, reason: `not an OTLP/JSON ExportTraceServiceRequest: ${e.message}` };
    throw e;
  }
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
