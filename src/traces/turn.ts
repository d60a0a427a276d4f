/**
 * One trace → one user turn in evalgap's message contract (src/schema/request.ts). Pure.
 *
 * Read from the OpenTelemetry GenAI semantic conventions (current names first, then the older and
 * vendor names that instrumentations still emit; docs/traces.md lists them):
 * - query: the latest user message of `gen_ai.input.messages` (conventions ≥ 1.37: a JSON array of
 *   {role, parts: [{type: 'text', content}]}, or {role, content}), else `gen_ai.prompt.N.role/content`
 *   (OpenLLMetry), `llm.input_messages.N.message.role/content` (OpenInference), the span events
 *   `gen_ai.user.message` / `gen_ai.content.prompt` (conventions 1.26–1.36), `input.value`;
 *   looked up on the root span, then `invoke_agent` spans, then model calls, in start order;
 * - turn: how many user messages that history holds (1 = the first turn); absent without history;
 * - session_id: `gen_ai.conversation.id`, else `session.id`, `traceloop.association.properties.session_id`;
 * - agent: `gen_ai.agent.name`, else the resource's `service.name`; version: `service.version`
 *   (else `gen_ai.agent.version`), the message's `version`;
 * - tools: the `execute_tool` spans (`gen_ai.tool.name`; OpenInference TOOL spans' `tool.name`) in
 *   start order; outcome: `escalated` when the configured attribute is true on any span, `failed`
 *   when the root or a model/agent span has status ERROR, else `ok`; latency: the root's duration;
 *   tokens (`gen_ai.usage.input_tokens`/`output_tokens`, or the older prompt/completion names) in metadata.
 */
import type { AttrValue, Span } from './otlp.js';

export interface TurnOptions {
  /** a span attribute that marks a turn handed to a human (true or "true") */
  escalatedAttribute: string;
}

/** A native request message (validated again by src/schema/request.ts on its way in). */
export interface TurnMessage {
  request_id: string;
  ts: number;
  query: string;
  agent?: string;
  session_id?: string;
  turn?: number;
  escalated: boolean;
  outcome: 'ok' | 'failed' | 'escalated';
  latency_ms?: number;
  tools: string[];
  /** the agent's version (the resource's service.version): evalgap compare's unit of comparison */
  version?: string;
  metadata: Record<string, string | number | boolean>;
}

export type TurnResult = { ok: true; message: TurnMessage } | { ok: false; reason: string };

const MODEL_OPS = new Set(['chat', 'text_completion', 'generate_content']);

function str(v: AttrValue | undefined): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

function num(v: AttrValue | undefined): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

function parseMaybeJson(v: AttrValue | undefined): unknown {
  if (typeof v !== 'string') return v;
  const t = v.trim();
  if (!t.startsWith('[') && !t.startsWith('{')) return v;
  try {
    return JSON.parse(t);
  } catch {
    return v;
  }
}

/** Text of one message: `content` as a string, or its text parts joined. */
function messageText(m: unknown): string | undefined {
  if (!m || typeof m !== 'object') return undefined;
  const o = m as Record<string, unknown>;
  if (typeof o.content === 'string') return o.content;
  const parts = Array.isArray(o.parts) ? o.parts : Array.isArray(o.content) ? o.content : null;
  if (!parts) return undefined;
  const texts = parts
    .map((p) => (p && typeof p === 'object' ? (p as Record<string, unknown>) : {}))
    .filter((p) => p.type === undefined || p.type === 'text')
    .map((p) => (typeof p.content === 'string' ? p.content : typeof p.text === 'string' ? p.text : ''))
    .filter((t) => t.length > 0);
  return texts.length ? texts.join('\n') : undefined;
}

interface Found {
  query: string;
  /** user messages in the history, this one included; undefined when the history is not known */
  turn?: number;
}

function fromMessages(list: unknown): Found | undefined {
  if (!Array.isArray(list)) return undefined;
  const users = list.filter((m) => m && typeof m === 'object' && (m as Record<string, unknown>).role === 'user');
  for (let i = users.length - 1; i >= 0; i--) {
    const t = messageText(users[i]);
    if (t && t.trim()) return { query: t, turn: users.length };
  }
  return undefined;
}

/** `prefix.N.role` / `prefix.N.content` attribute families (OpenLLMetry, OpenInference). */
function fromIndexed(a: Record<string, AttrValue>, prefix: string, roleKey: string, contentKey: string): Found | undefined {
  const msgs: { i: number; role?: string; content?: string }[] = [];
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.(\\d+)\\.(.+)$`);
  const byIndex = new Map<number, { i: number; role?: string; content?: string }>();
  for (const [k, v] of Object.entries(a)) {
    const m = re.exec(k);
    if (!m) continue;
    const i = Number(m[1]);
    let e = byIndex.get(i);
    if (!e) byIndex.set(i, (e = { i }));
    if (m[2] === roleKey) e.role = str(v);
    else if (m[2] === contentKey) e.content = str(v);
  }
  msgs.push(...[...byIndex.values()].sort((x, y) => x.i - y.i));
  return fromMessages(msgs.map((m) => ({ role: m.role, content: m.content })));
}

function queryOf(s: Span): Found | undefined {
  const a = s.attributes;
  const viaMessages = fromMessages(parseMaybeJson(a['gen_ai.input.messages']));
  if (viaMessages) return viaMessages;
  const legacy = fromIndexed(a, 'gen_ai.prompt', 'role', 'content');
  if (legacy) return legacy;
  const oi = fromIndexed(a, 'llm.input_messages', 'message.role', 'message.content');
  if (oi) return oi;
  // span events of conventions 1.26–1.36
  const eventMsgs: unknown[] = [];
  for (const e of s.events) {
    if (e.name === 'gen_ai.user.message' || e.name === 'gen_ai.assistant.message' || e.name === 'gen_ai.system.message') {
      const body = parseMaybeJson(e.attributes['content'] ?? e.attributes['gen_ai.event.content']);
      const content = typeof body === 'string' ? body : messageText(body);
      eventMsgs.push({ role: e.name.split('.')[1], content });
    } else if (e.name === 'gen_ai.content.prompt') {
      const p = parseMaybeJson(e.attributes['gen_ai.prompt']);
      const f = typeof p === 'string' ? { query: p } : fromMessages(p);
      if (f && f.query.trim()) return f;
    }
  }
  const viaEvents = fromMessages(eventMsgs);
  if (viaEvents) return viaEvents;
  const input = str(a['input.value']);
  if (input && input.trim() && !input.trim().startsWith('{') && !input.trim().startsWith('[')) return { query: input };
  return undefined;
}

function firstAttr(spans: Span[], keys: string[]): string | undefined {
  for (const k of keys) {
    for (const s of spans) {
      const v = str(s.attributes[k]);
      if (v !== undefined && v !== '') return v;
    }
  }
  return undefined;
}

const isTrue = (v: AttrValue | undefined): boolean => v === true || v === 'true' || v === 1;

/** The spans of one trace (any order; the root has no parent) → its user turn, or why not. */
export function turnFromTrace(spans: Span[], opts: TurnOptions): TurnResult {
  if (spans.length === 0) return { ok: false, reason: 'no spans' };
  const ordered = [...spans].sort((x, y) => x.startMs - y.startMs); // stable: ties keep the message order
  const root = ordered.find((s) => s.parentSpanId === '') ?? ordered[0]!;
  const op = (s: Span) => str(s.attributes['gen_ai.operation.name']);
  const agents = ordered.filter((s) => op(s) === 'invoke_agent' || op(s) === 'create_agent');
  const models = ordered.filter((s) => MODEL_OPS.has(op(s) ?? ''));
  let found: Found | undefined;
  for (const s of [root, ...agents, ...models]) {
    found = queryOf(s);
    if (found) break;
  }
  if (!found) {
    for (const s of ordered) {
      found = queryOf(s);
      if (found) break;
    }
  }
  if (!found) return { ok: false, reason: 'no user message in the trace' };
  const genai = [root, ...agents, ...models];
  const tools = ordered
    .filter((s) => op(s) === 'execute_tool' || str(s.attributes['openinference.span.kind']) === 'TOOL')
    .map((s) => str(s.attributes['gen_ai.tool.name']) ?? str(s.attributes['tool.name']) ?? s.name.replace(/^execute_tool\s+/, ''))
    .filter((n) => n.length > 0)
    .map((n) => n.slice(0, 256))
    .slice(0, 1000);
  const escalated = ordered.some((s) => isTrue(s.attributes[opts.escalatedAttribute]));
  const failed = genai.some((s) => s.statusCode === 2);
  const sum = (keys: string[]) => {
    let t = 0;
    let any = false;
    for (const s of models.length ? models : ordered) {
      for (const k of keys) {
        const n = num(s.attributes[k]);
        if (n !== undefined) {
          t += n;
          any = true;
          break;
        }
      }
    }
    return any ? t : undefined;
  };
  const metadata: Record<string, string | number | boolean> = { source: 'otlp', trace_id: root.traceId };
  const version = (str(root.resource['service.version']) ?? firstAttr(ordered, ['gen_ai.agent.version']))?.slice(0, 128);
  const inTok = sum(['gen_ai.usage.input_tokens', 'gen_ai.usage.prompt_tokens']);
  const outTok = sum(['gen_ai.usage.output_tokens', 'gen_ai.usage.completion_tokens']);
  if (inTok !== undefined) metadata.input_tokens = inTok;
  if (outTok !== undefined) metadata.output_tokens = outTok;
  const toolErrors = ordered.filter((s) => op(s) === 'execute_tool' && s.statusCode === 2).length;
  if (toolErrors) metadata.tool_errors = toolErrors;
  const model = firstAttr(models, ['gen_ai.request.model', 'gen_ai.response.model']);
  if (model) metadata.model = model.slice(0, 256);
  const session = firstAttr(ordered, ['gen_ai.conversation.id', 'session.id', 'traceloop.association.properties.session_id']);
  const agent = firstAttr([root, ...agents], ['gen_ai.agent.name']) ?? str(root.resource['service.name']);
  const message: TurnMessage = {
    request_id: `otlp-${root.traceId}`,
    ts: Math.floor(root.startMs),
    query: found.query,
    escalated,
    outcome: escalated ? 'escalated' : failed ? 'failed' : 'ok',
    tools,
    metadata,
  };
  if (agent) message.agent = agent.slice(0, 256);
  if (version) message.version = version;
  if (session) message.session_id = session.slice(0, 256);
  if (found.turn !== undefined) message.turn = found.turn;
  if (root.endMs >= root.startMs) message.latency_ms = Math.round((root.endMs - root.startMs) * 1000) / 1000;
  return { ok: true, message };
}
