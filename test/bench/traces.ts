/**
 * Traces benchmark (npm run bench → "traces"):
 * 1. the OTLP bridge's CPU per span and per turn (decode, assembly, the turn's fields), one span
 *    per Kafka message as an SDK without batching sends them (the worst case), in both encodings,
 *    against bare embedding of the same turns' queries with the real model in the same run: the
 *    share of `run`'s per-request cost the bridge adds;
 * 2. context for follow-ups, on Banking77: a conversation's second turn is a short follow-up
 *    ("and the other one?"). Coverage verdicts of the follow-up embedded alone, and embedded with
 *    the previous user turn before it, against an eval set of the conversation's intents.
 * 3. the agent monitor rules (src/monitor/agent-rules.ts) on a synthetic multi-turn, tool-using
 *    stream (test/helpers/agent-sim.ts: sessions with a daily cycle, tool chains per intent,
 *    failures clustered in troubled sessions): false alarms without a shift over several days at
 *    three volumes, and the detection delay, in requests after the change, of a depth shift
 *    (sessions 3 → 5 turns on average) and of a new tool chain on 5% of traffic, with an oracle
 *    CUSUM that knows both distributions and the change time. `--only=rules` runs this part alone
 *    (no model needed); `--rule-days=7`, `--rule-reps=3`, `--rule-rates=0.05,0.5,5`.
 * Prints one JSON document.
 */
import { performance } from 'node:perf_hooks';
import { context, trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { loadConfig } from '../../src/config/index.js';
import { loadThreadedEmbedder } from '../../src/embed/threaded.js';
import { DEFAULT_FIT, fitCoverageModel } from '../../src/coverage/fit.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CoverageAssigner, loadCoverageModel, saveCoverageModel } from '../../src/coverage/model.js';
import { PartitionAssembler } from '../../src/traces/assemble.js';
import { decodeOtlpTraces, type OtlpEncoding } from '../../src/traces/otlp.js';
import { turnFromTrace } from '../../src/traces/turn.js';
import { BANKING77_MISSING, hasBanking77, loadBanking77 } from '../helpers/banking77.js';
import { createAgentRules, type AgentRulesState } from '../../src/monitor/agent-rules.js';
import { agentSim, simContext, type AgentSimOptions } from '../helpers/agent-sim.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')) as [string, string][]);
const TURNS = Number(args.turns ?? 1000);

function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Traces of an instrumented agent: root, two model calls, 0–3 tools; each span its own OTLP message. */
function agentMessages(queries: string[]): { proto: Buffer[]; json: Buffer[]; spans: number } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'bank-agent', 'service.version': '3.2.1', 'deployment.environment': 'prod' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('agent');
  const r = rng(5);
  const history: string[] = [];
  for (const q of queries) {
    history.push(q);
    if (history.length > 6) history.shift();
    const input = history.flatMap((h, i) => [{ role: 'user', parts: [{ type: 'text', content: h }] }, ...(i < history.length - 1 ? [{ role: 'assistant', parts: [{ type: 'text', content: 'Sure, let me check that for you.' }] }] : [])]);
    const root = tracer.startSpan('invoke_agent bank', { attributes: { 'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': 'bank', 'gen_ai.conversation.id': `c${Math.floor(r() * 200)}`, 'gen_ai.input.messages': JSON.stringify(input) } });
    const ctx = trace.setSpan(context.active(), root);
    for (let k = 0; k < 2; k++) {
      const c = tracer.startSpan('chat gpt', { attributes: { 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'gpt-x', 'gen_ai.usage.input_tokens': 300, 'gen_ai.usage.output_tokens': 80, 'gen_ai.input.messages': JSON.stringify(input) } }, ctx);
      c.end();
    }
    for (let k = 0; k < Math.floor(r() * 4); k++) {
      const t = tracer.startSpan('execute_tool x', { attributes: { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': ['lookup', 'refund', 'search_kb'][k % 3]! } }, ctx);
      t.end();
    }
    root.end();
  }
  const spans = exporter.getFinishedSpans();
  return {
    proto: spans.map((s) => Buffer.from(ProtobufTraceSerializer.serializeRequest([s])!)),
    json: spans.map((s) => Buffer.from(JsonTraceSerializer.serializeRequest([s])!)),
    spans: spans.length,
  };
}

function bridgeCost(messages: Buffer[], encoding: OtlpEncoding): { msPerRound: number; turns: number } {
  const rounds = 5;
  const times: number[] = [];
  let turns = 0;
  for (let round = 0; round < rounds; round++) {
    const a = new PartitionAssembler({ graceMs: 5000, maxHoldMs: 300_000, rememberMs: 600_000 });
    turns = 0;
    const t0 = performance.now();
    messages.forEach((m, i) => {
      const d = decodeOtlpTraces(m, encoding);
      if (!d.ok) throw new Error(d.reason);
      for (const c of a.push(BigInt(i), d.spans, 0)) if (c.kind === 'trace' && turnFromTrace(c.spans, { escalatedAttribute: 'evalgap.escalated' }).ok) turns++;
    });
    for (const c of a.flushIdle(1e12)) if (c.kind === 'trace' && turnFromTrace(c.spans, { escalatedAttribute: 'evalgap.escalated' }).ok) turns++;
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  return { msPerRound: times[Math.floor(rounds / 2)]!, turns };
}

const FOLLOW_UPS = [
  'and the other one?', 'what about that?', 'ok, and then?', 'can you check again?', 'is that normal?',
  'how long will that take?', 'and for my partner?', 'what if it happens again?', 'thanks, anything else I need to do?', 'why?',
];

const DAY = 86_400_000;
const AGENT_RULE_NAMES = ['depth_mix', 'untested_chains', 'chain_failure'] as const;

/** log-likelihood ratio of a geometric session length L (P(L) = (1 − 1/m)^(L−1)/m, capped at 30) for mean m1 against m0 */
function lengthLlr(L: number, m0: number, m1: number): number {
  const lp = (m: number) => (L >= 30 ? 29 * Math.log(1 - 1 / m) : (L - 1) * Math.log(1 - 1 / m) + Math.log(1 / m));
  return lp(m1) - lp(m0);
}

/** The agent rules over one simulated stream: alarms (first firing window per rule and scope), and the oracle's crossing. */
function ruleRun(o: AgentSimOptions, oracle?: { kind: 'depth' | 'chain'; h: number }) {
  const rules = createAgentRules(args['agent-rules'] ? JSON.parse(args['agent-rules']) : {});
  const ctx = simContext();
  let state: AgentRulesState | null = null;
  const firing = new Set<string>();
  const alarms: { rule: string; agent: string; t: string; requestsAfterChange: number | null }[] = [];
  let changeReq: number | null = null;
  let total = 0;
  let sessions = 0;
  // the oracle: per session (its length) for the depth shift; per request (untested or not) for the new chain
  let cu = 0;
  let oracleAt: number | null = null;
  let oracleReq: number | null = null;
  const sim = agentSim({
    ...o,
    onSession: (s) => {
      sessions++;
      if (!oracle || !s.after || oracleAt !== null) return;
      if (oracle.kind === 'depth') cu = Math.max(0, cu + lengthLlr(s.turns, 3, o.shift!.meanTurns!));
      else for (const tools of s.tools) {
        // untested share before: the intent without eval chains at this hour (its share × 0.6); after: 5% more
        const p0 = 0.6 * s.shares[s.shares.length - 1]!;
        const p1 = 0.05 + 0.95 * p0;
        const u = tools.length > 0 && (tools[0] === 'search_web' || tools[1] === 'act_11');
        cu = Math.max(0, cu + (u ? Math.log(p1 / p0) : Math.log((1 - p1) / (1 - p0))));
      }
      if (cu >= oracle.h) oracleAt = s.t;
    },
  });
  for (const w of sim) {
    if (w.afterChange && changeReq === null) changeReq = w.requestsBefore;
    total += w.requests;
    const wStart = w.windows[0] ? Date.parse(w.windows[0].start) : null;
    if (oracleAt !== null && oracleReq === null && wStart !== null && wStart + o.windowSeconds * 1000 > oracleAt) oracleReq = w.requestsBefore + w.requests - (changeReq ?? 0);
    if (!w.windows.length) continue;
    const ev = rules.evaluate(state, w.windows, ctx);
    state = ev.state;
    for (const f of ev.findings) {
      const k = `${f.rule}|${f.scope.agent}`;
      if (f.firing && !firing.has(k)) alarms.push({ rule: f.rule, agent: f.scope.agent, t: f.windowStart, requestsAfterChange: changeReq === null ? null : w.requestsBefore + w.requests - changeReq });
      if (f.firing) firing.add(k);
      else firing.delete(k);
    }
  }
  return { alarms, total, sessions, oracleReq };
}

/** The agent rules' part of the benchmark. */
function agentRulesBench() {
  const days = Number(args['rule-days'] ?? 7);
  const reps = Number(args['rule-reps'] ?? 3);
  const rates = String(args['rule-rates'] ?? '0.05,0.5,5').split(',').map(Number);
  const W = 60;
  const noShift: Record<string, unknown>[] = [];
  for (const rate of rates) {
    for (let rep = 0; rep < (rate >= 5 ? 1 : reps); rep++) {
      const r = ruleRun({ seed: 100 + rep, days, rate, windowSeconds: W });
      noShift.push({ rate, seed: 100 + rep, days, requests: r.total, sessions: r.sessions, alerts: Object.fromEntries(AGENT_RULE_NAMES.map((n) => [n, r.alarms.filter((a) => a.rule === n && a.agent === 'bot').length])), alarms: r.alarms });
    }
  }
  const shifts: Record<string, unknown> = {};
  for (const [name, shift, kind] of [
    ['depth 3 → 5 turns per session', { meanTurns: 5 }, 'depth'],
    ['new tool chain on 5% of traffic', { newChain: 0.05 }, 'chain'],
  ] as const) {
    for (const rate of rates.filter((x) => x < 5)) {
      const runs = [];
      for (let rep = 0; rep < reps; rep++) {
        // the oracle's threshold: ln(its observations in 30 days) — sessions for the depth, requests for the chain
        const perDay = kind === 'depth' ? (rate * 86400) / 3 : rate * 86400;
        const r = ruleRun({ seed: 200 + rep, days: 2 + 5, rate, windowSeconds: W, change: 2 * DAY, shift }, { kind, h: Math.log(30 * perDay) });
        const rule = kind === 'depth' ? 'depth_mix' : 'untested_chains';
        const hit = r.alarms.find((a) => a.agent === 'bot' && a.rule === rule && (a.requestsAfterChange ?? -1) > 0);
        const before = r.alarms.filter((a) => a.agent === 'bot' && (a.requestsAfterChange ?? 0) <= 0);
        runs.push({ seed: 200 + rep, detected: Boolean(hit), delayRequests: hit?.requestsAfterChange ?? null, oracleDelayRequests: r.oracleReq, ratio: hit && r.oracleReq ? Math.round((hit.requestsAfterChange! / r.oracleReq) * 100) / 100 : null, alarmsBeforeChange: before.length });
      }
      const det = runs.filter((x) => x.detected && x.oracleDelayRequests);
      const done = runs;
      const mean = (f: (x: (typeof done)[number]) => number) => (det.length ? Math.round(det.reduce((a, x) => a + f(x), 0) / det.length) : null);
      const md = mean((x) => x.delayRequests!);
      const mo = mean((x) => x.oracleDelayRequests!);
      shifts[`${name} @ ${rate}/s`] = { rate, runs: reps, missed: runs.filter((x) => !x.detected).length, delayRequests: md, oracleDelayRequests: mo, ratioToOracle: md !== null && mo ? Math.round((md / mo) * 100) / 100 : null, each: runs };
    }
  }
  return {
    stream: 'test/helpers/agent-sim.ts: 12 intents (each ±60% over the day, its own phase), sessions of geometric length (mean 3 turns, ≤ 30) 5–90 s apart, volume ×4 between night and day, a turn calls its intent\'s chain with probability 0.6 (one intent has no eval chain: 5% untested), failures 4% per turn and 30% in 10% of sessions; eval depth profile = the stream\'s (1000 cases); 60-second windows; default agentRules',
    oracle: 'depth: a CUSUM over sessions after the change, each adding the log-likelihood ratio of its length (mean 5 vs 3), threshold ln(sessions in 30 days); chain: a Bernoulli CUSUM over requests after the change (untested or not, 5% → 9.75%), threshold ln(requests in 30 days), treating a session\'s requests as independent (optimistic)',
    noShift,
    shifts,
  };
}

async function main() {
  const out: Record<string, unknown> = {};
  if (args.only === 'rules') {
    out.rules = agentRulesBench();
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  out.rules = agentRulesBench();
  const embedder = await loadThreadedEmbedder(loadConfig().embed);
  try {
    // 1. bridge cost
    const qs = hasBanking77() ? loadBanking77('test').map((r) => r.text).slice(0, TURNS) : Array.from({ length: TURNS }, (_, i) => `where is my card number ${i}`);
    const msgs = agentMessages(qs);
    const proto = bridgeCost(msgs.proto, 'otlp_proto');
    const json = bridgeCost(msgs.json, 'otlp_json');
    await embedder.embed(qs.slice(0, 64));
    const e0 = performance.now();
    await embedder.embed(qs);
    const embedMs = performance.now() - e0;
    out.bridge = {
      turns: proto.turns,
      spans: msgs.spans,
      spansPerTurn: msgs.spans / proto.turns,
      otlpProto: { usPerSpan: (1000 * proto.msPerRound) / msgs.spans, usPerTurn: (1000 * proto.msPerRound) / proto.turns },
      otlpJson: { usPerSpan: (1000 * json.msPerRound) / msgs.spans, usPerTurn: (1000 * json.msPerRound) / json.turns },
      bareEmbeddingUsPerQuery: (1000 * embedMs) / qs.length,
      embeddingWorkers: embedder.workers ?? null,
      // the bridge runs on the main thread beside run's consumer; embedding keeps the workers busy:
      // its CPU per turn against the embedding's CPU per query (wall time × workers)
      shareOfRunCpuProto: (proto.msPerRound / proto.turns) / ((embedMs / qs.length) * (embedder.workers ?? 1)),
      shareOfRunCpuJson: (json.msPerRound / json.turns) / ((embedMs / qs.length) * (embedder.workers ?? 1)),
      note: 'one span per Kafka message (an SDK exporting each span); medians of 5 rounds; shares are of the embedding CPU per request, a lower bound of run\'s CPU per request',
    };
    // 2. context for follow-ups
    if (!hasBanking77()) out.context = { skipped: BANKING77_MISSING };
    else {
      const train = loadBanking77('train');
      const test = loadBanking77('test');
      const r = rng(11);
      const intents = [...new Set(train.map((x) => x.category))].sort();
      const cases = intents.flatMap((c) => train.filter((x) => x.category === c).slice(0, 40)).map((x, i) => ({ id: `c${i}`, text: x.text, tags: [x.category] }));
      const fit = await fitCoverageModel(cases, embedder, { ...DEFAULT_FIT, source: 'banking77-40', textField: 'query' });
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-bench-traces-'));
      saveCoverageModel(dir, fit.draft, fit.arrays);
      const model = loadCoverageModel(dir);
      const assigner = new CoverageAssigner(model);
      const first = Array.from({ length: 600 }, () => test[Math.floor(r() * test.length)]!);
      const follow = first.map(() => FOLLOW_UPS[Math.floor(r() * FOLLOW_UPS.length)]!);
      const alone = (await embedder.embed(follow)).vectors;
      const withCtx = (await embedder.embed(first.map((f, i) => `${f.text}\n${follow[i]}`))).vectors;
      const firstVec = (await embedder.embed(first.map((f) => f.text))).vectors;
      const a1 = { ...assigner.assign(alone, follow.length) };
      const a2 = { ...assigner.assign(withCtx, follow.length) };
      const a0 = { ...assigner.assign(firstVec, follow.length) };
      fs.rmSync(dir, { recursive: true, force: true });
      const share = (f: (i: number) => boolean) => first.filter((_, i) => f(i)).length / first.length;
      out.context = {
        eval: { intents: intents.length, casesPerIntent: 40, k: fit.draft.params.k },
        conversations: first.length,
        followUps: FOLLOW_UPS,
        firstTurnCovered: share((i) => a0.covered[i] === 1),
        followUpCoveredAlone: share((i) => a1.covered[i] === 1),
        followUpCoveredWithPreviousTurn: share((i) => a2.covered[i] === 1),
        followUpSameClusterAsFirstTurnAlone: share((i) => a1.cluster[i] === a0.cluster[i]),
        followUpSameClusterAsFirstTurnWithPreviousTurn: share((i) => a2.cluster[i] === a0.cluster[i]),
      };
    }
  } finally {
    await embedder.close();
  }
  console.log(JSON.stringify(out, null, 2));
}

await main();
