/**
 * The message contract: one request log per Kafka message, a JSON object.
 * Validated with zod; unknown fields are kept in `metadata` rather than rejected.
 */
import { z } from 'zod';

const KNOWN = [
  'request_id', 'ts', 'query', 'agent', 'session_id', 'turn', 'escalated', 'outcome',
  'latency_ms', 'cost_usd', 'tools', 'metadata',
] as const;

/** The range every timestamp must fall in (ClickHouse DateTime64 holds 1900–2299; Kafka logs are after 1970). */
const TS_MIN = 0;
const TS_MAX = Date.UTC(2299, 11, 31, 23, 59, 59, 999);

const tsSchema = z.unknown().transform((v, ctx) => {
  if (v === undefined || v === null) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'required (ISO-8601 string or epoch milliseconds)' });
    return z.NEVER;
  }
  let ms = NaN;
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) ms = v;
  else if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}/.test(v)) ms = Date.parse(v);
  if (!Number.isFinite(ms)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'expected an ISO-8601 string or epoch milliseconds' });
    return z.NEVER;
  }
  if (ms < TS_MIN || ms > TS_MAX) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'outside the storable range 1970-01-01 to 2299-12-31' });
    return z.NEVER;
  }
  return Math.round(ms);
});

export const RequestLogSchema = z
  .object({
    request_id: z.string().min(1).max(256),
    ts: tsSchema,
    query: z.string().refine((s) => s.trim().length > 0, 'query must not be empty'),
    agent: z.string().max(256).optional(),
    session_id: z.string().max(256).optional(),
    turn: z.number().int().nonnegative().optional(),
    escalated: z.boolean().optional(),
    outcome: z.string().min(1).max(64).optional(),
    latency_ms: z.number().finite().nonnegative().optional(),
    cost_usd: z.number().finite().nonnegative().optional(),
    tools: z.array(z.string().max(256)).optional(),
    metadata: z.record(z.unknown()).optional(),
  })
  .passthrough()
  .transform((v) => {
    const extra: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v)) if (!(KNOWN as readonly string[]).includes(k)) extra[k] = val;
    const metadata = Object.keys(extra).length ? { ...(v.metadata ?? {}), ...extra } : v.metadata ?? {};
    return {
      request_id: v.request_id,
      ts: v.ts,
      query: v.query,
      agent: v.agent ?? '',
      session_id: v.session_id ?? '',
      turn: v.turn ?? 0,
      escalated: v.escalated ?? v.outcome === 'escalated',
      outcome: v.outcome ?? 'ok',
      latency_ms: v.latency_ms ?? null,
      cost_usd: v.cost_usd ?? null,
      tools: v.tools ?? [],
      metadata,
    };
  });

export type RequestLog = z.output<typeof RequestLogSchema>;
export type RequestLogInput = z.input<typeof RequestLogSchema>;

export type DecodeResult = { ok: true; value: RequestLog } | { ok: false; reason: string };

/** Decode one Kafka message value: UTF-8 JSON, then the schema. Never throws. */
export function decodeRequest(value: Buffer | null): DecodeResult {
  if (!value || value.length === 0) return { ok: false, reason: 'empty message' };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(value);
  } catch {
    return { ok: false, reason: 'message is not valid UTF-8' };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return { ok: false, reason: `invalid JSON: ${(e as Error).message}` };
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) return { ok: false, reason: 'expected a JSON object' };
  const r = RequestLogSchema.safeParse(json);
  if (!r.success) {
    return { ok: false, reason: r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') };
  }
  return { ok: true, value: r.data };
}
