/**
 * The message contract: one request log per Kafka message, a JSON object.
 * Validated with zod; unknown fields are kept in `metadata` rather than rejected, whatever their
 * name (`__proto__` included). Size and nesting depth are bounded before any recursive work.
 */
import { z } from 'zod';
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_MESSAGE_BYTES, jsonDepth, repairStrings } from './limits.js';

const KNOWN = [
  'request_id', 'ts', 'query', 'agent', 'session_id', 'turn', 'escalated', 'outcome',
  'latency_ms', 'cost_usd', 'tools', 'metadata', 'version',
] as const;

/** Longest accepted `version` (agent or prompt version), in UTF-16 units. */
export const MAX_VERSION_LENGTH = 128;

/**
 * The range any timestamp must fall in, whatever the retention: from 1973-03-03T09:46:40Z (1e11 ms;
 * smaller numbers are ambiguous, see below) to 2105-12-31 (ClickHouse DateTime, which the TTL uses,
 * ends on 2106-02-07).
 */
export const TS_HARD_MIN = 1e11;
export const TS_HARD_MAX = Date.UTC(2105, 11, 31, 23, 59, 59, 999);

const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?(Z|z|[+-]\d{2}:?\d{2})?$/;

function daysIn(y: number, m: number): number {
  return new Date(Date.UTC(y, m, 0)).getUTCDate();
}

/** Parse a timestamp strictly: epoch milliseconds or ISO-8601 (no offset = UTC). A reason when not. */
export function parseTimestamp(v: unknown): { ms: number } | { error: string } {
  if (v === undefined || v === null) return { error: 'required (ISO-8601 string or epoch milliseconds)' };
  let ms: number;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) return { error: 'expected an ISO-8601 string or epoch milliseconds' };
    if (v < TS_HARD_MIN) {
      return {
        error:
          v >= 1e8 && v < 1e11
            ? `ambiguous epoch ${v}: looks like seconds (${new Date(v * 1000).toISOString()}); send epoch milliseconds`
            : `ambiguous epoch ${v}: before 1973 as milliseconds; send epoch milliseconds`,
      };
    }
    if (v > 1e13) return { error: `ambiguous epoch ${v}: looks like micro- or nanoseconds; send epoch milliseconds` };
    ms = Math.round(v);
  } else if (typeof v === 'string') {
    const m = ISO.exec(v);
    if (!m) return { error: 'expected an ISO-8601 string or epoch milliseconds' };
    const [, ys, mos, ds, hs, mis, ss, frac, tz] = m;
    const y = Number(ys), mo = Number(mos), d = Number(ds), h = Number(hs ?? 0), mi = Number(mis ?? 0), s = Number(ss ?? 0);
    if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || s > 59) {
      return { error: `impossible date or time ${JSON.stringify(v)}` };
    }
    let off = 0;
    if (tz && tz !== 'Z' && tz !== 'z') {
      const t = tz.replace(':', '');
      const oh = Number(t.slice(1, 3)), om = Number(t.slice(3, 5));
      if (oh > 23 || om > 59) return { error: `impossible UTC offset in ${JSON.stringify(v)}` };
      off = (tz[0] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
    }
    const fracMs = frac ? Math.round(Number(`0.${frac}`) * 1000) : 0;
    ms = Date.UTC(y, mo - 1, d, h, mi, s) + fracMs - off;
  } else return { error: 'expected an ISO-8601 string or epoch milliseconds' };
  if (ms < TS_HARD_MIN || ms > TS_HARD_MAX) {
    return { error: `${new Date(ms).toISOString()} is outside the storable range 1973-03-03 to 2105-12-31` };
  }
  return { ms };
}

const tsSchema = z.unknown().transform((v, ctx) => {
  const r = parseTimestamp(v);
  if ('error' in r) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: r.error });
    return z.NEVER;
  }
  return r.ms;
});

const plainObject = z.custom<Record<string, unknown>>(
  (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
  'expected an object',
);

const KnownFields = z.object({
  request_id: z.string().min(1).max(256),
  ts: tsSchema,
  query: z.string().refine((s) => s.trim().length > 0, 'query must not be empty'),
  agent: z.string().max(256).optional(),
  session_id: z.string().max(256).optional(),
  turn: z.number().int().nonnegative().max(4_294_967_295).optional(),
  escalated: z.boolean().optional(),
  outcome: z.string().min(1).max(64).optional(),
  latency_ms: z.number().finite().nonnegative().optional(),
  cost_usd: z.number().finite().nonnegative().optional(),
  tools: z.array(z.string().max(256)).max(1000).optional(),
  // the agent or prompt version the request was served by (a number, e.g. 3, is read as "3")
  version: z
    .union([z.string().max(MAX_VERSION_LENGTH), z.number().finite()], {
      errorMap: () => ({ message: `expected a string of at most ${MAX_VERSION_LENGTH} characters` }),
    })
    .transform((v) => String(v))
    .optional(),
  // validated as a plain object; its keys are taken from the input itself (zod drops `__proto__`)
  metadata: plainObject.optional(),
});

/**
 * The schema on an already parsed object. Unknown fields and metadata are copied with
 * Object.entries/fromEntries (own data properties), so no key is lost or reaches a prototype.
 */
export const RequestLogSchema = z.unknown().transform((input, ctx) => {
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'expected a JSON object' });
    return z.NEVER;
  }
  const obj = input as Record<string, unknown>;
  const known = Object.fromEntries(Object.entries(obj).filter(([k]) => (KNOWN as readonly string[]).includes(k)));
  const r = KnownFields.safeParse(known);
  if (!r.success) {
    for (const i of r.error.issues) ctx.addIssue(i);
    return z.NEVER;
  }
  const v = r.data;
  const given = Object.entries((obj.metadata as Record<string, unknown> | undefined) ?? {});
  const extra = Object.entries(obj).filter(([k]) => !(KNOWN as readonly string[]).includes(k));
  const metadata: Record<string, unknown> = Object.fromEntries([...given, ...extra]);
  return {
    request_id: v.request_id,
    ts: v.ts,
    query: v.query,
    agent: v.agent ?? '',
    version: v.version ?? '',
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

export type RequestLog = z.output<typeof RequestLogSchema> & { repaired?: boolean };
export type RequestLogInput = {
  request_id: string;
  ts: string | number;
  query: string;
  [k: string]: unknown;
};

/** The parser's complaint without the text it quotes, and the position when it gives one. */
function jsonErrorKind(msg: string): string {
  const at = /at position (\d+)/.exec(msg)?.[1];
  const kind = /end of JSON input|Unterminated string/i.test(msg) ? 'truncated' : 'syntax error';
  return at ? `${kind} at position ${at}` : kind;
}

export interface DecodeOptions {
  /** messages larger than this are rejected before decoding (default 1 MiB) */
  maxBytes?: number;
  /** deeper `{`/`[` nesting is rejected before parsing (default 32) */
  maxDepth?: number;
  /** accepted ts window in epoch ms; outside it the message is rejected with the reason given */
  window?: { min: number; max: number; minReason: string; maxReason: string };
}

export type DecodeResult = { ok: true; value: RequestLog } | { ok: false; reason: string };

/**
 * Decode one Kafka message value: bounds, UTF-8, JSON, lone surrogates repaired (U+FFFD, the row
 * flagged `repaired`), the schema, the ts window. Never throws; stack use is bounded by maxDepth.
 */
export function decodeRequest(value: Buffer | null, opts: DecodeOptions = {}): DecodeResult {
  if (!value || value.length === 0) return { ok: false, reason: 'empty message' };
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (value.length > maxBytes) return { ok: false, reason: `message of ${value.length} bytes exceeds the limit of ${maxBytes}` };
  if (jsonDepth(value, maxDepth) > maxDepth) return { ok: false, reason: `JSON nested deeper than the limit of ${maxDepth}` };
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
    // the parser's message quotes the text; the reason must not carry message text
    return { ok: false, reason: `invalid JSON: ${jsonErrorKind((e as Error).message)}` };
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) return { ok: false, reason: 'expected a JSON object' };
  const { value: fixed, repaired } = repairStrings(json);
  const r = RequestLogSchema.safeParse(fixed);
  if (!r.success) {
    return { ok: false, reason: r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') };
  }
  const w = opts.window;
  if (w && r.data.ts < w.min) return { ok: false, reason: `ts: ${new Date(r.data.ts).toISOString()} ${w.minReason}` };
  if (w && r.data.ts > w.max) return { ok: false, reason: `ts: ${new Date(r.data.ts).toISOString()} ${w.maxReason}` };
  return { ok: true, value: repaired ? { ...r.data, repaired: true } : r.data };
}
