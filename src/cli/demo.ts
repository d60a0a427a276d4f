/**
 * `npm run demo`: the whole story on sample data the project writes itself, in steps.
 * fit an eval set → deploy it → `evalgap run` consumes production traffic from Kafka that shifts
 * part-way (topics the eval set never tested appear) → [alert] → gaps → export them as new cases
 * → refit with --add and deploy to the running consumer (hot reload, no restart) → fresh traffic
 * shows the gap closing → a canary version that regresses in one cluster, caught by the monitor's
 * canary guard while one global test has no evidence yet → an HTML report.
 * Every run uses a fresh topic, group and data folder, so it can be run again and again.
 *
 * Steps are separate functions over one shared context; the gaps, export and closing steps run
 * the same functions as `evalgap gaps` and `evalgap export-gaps` (src/gaps/run.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT, type Config } from '../config/index.js';
import { createLogger } from '../config/logger.js';
import { addFitOptions, mergeCases } from '../coverage/extend.js';
import { DEFAULT_FIT, fitCoverageModel } from '../coverage/fit.js';
import { loadCoverageModel, saveCoverageModel, type Manifest } from '../coverage/model.js';
import { embeddingOf, type Embedder } from '../embed/embedder.js';
import { loadThreadedEmbedder, type ThreadedEmbedder } from '../embed/threaded.js';
import { createKafka, produceJson } from '../ingest/kafka.js';
import { deployModel, resolveModelDir } from '../ingest/model-watch.js';
import type { Store } from '../store/store.js';
import { discoverGaps, exportGapCases, type GapCase, type GapReport } from '../gaps/run.js';
import { formatGapReport } from './gaps.js';
import { modelSummary, pct, table } from './format.js';
import { readAgentFile, saveAgentFile } from '../coverage/agent.js';
import { depthCoverage, toolChains } from '../store/agent.js';
import { untestedDepthNote } from '../report/depth-note.js';
import { writeReport } from './report.js';
import { headline } from './estimate.js';
import { computeEstimate, storeWeightedScores } from '../estimate/run.js';
import { insertEvalResults } from '../store/estimate.js';
import { startRun, type Running } from './run.js';
import { dispatchCaughtUp, startMonitor } from './monitor.js';
import { MonitorStore } from '../store/monitor.js';
import { byTopic, demoTotals, gapTopics } from '../store/demo.js';
import { newSecret, parseMonitorConfig } from '../alert/config.js';
import { WebhookReceiver, type Received } from '../alert/receiver.js';
import { sampleEvalSet, sampleTraffic, SURPRISE_TOPICS } from './sample-data.js';
import { UserError } from './errors.js';
import { rng } from '../coverage/vec.js';
import { ALL, RateComparison } from '../compare/detector.js';
import { CompareStore } from '../store/compare.js';
import type { AlertPayload } from '../alert/payload.js';

const say = (s = '') => console.log(s);
const indent = (s: string) => s.replace(/^(?=.)/gm, '   ');

interface DemoContext {
  cfg: Config;
  dir: string;
  stamp: string;
  embedder: ThreadedEmbedder;
  /** the symlink `evalgap run --model` watches */
  current: string;
  models: Manifest[];
  running: Running | null;
  /** messages published so far (valid + malformed), to wait for */
  published: number;
  /** traffic timeline: the three phases, in event time the demo sets, ending at least a minute ago */
  start: number;
  /** seconds the consumer took to store the first traffic (this machine's measured speed) */
  ingestSeconds: number;
  exported: GapCase[];
  /** the first discovery (before the refit): the gaps the loop should close */
  gaps: GapReport | null;
  step: number;
}

const STEP_MS = 2000;
/**
 * share of the shifted traffic on topics the eval set never tested: half, so that the 300 shifted
 * requests establish the excess over the calibrated rate's upper end (15% for the demo's small
 * eval set, docs/calibration.md) with evidence to spare
 */
const SHIFT = 0.5;
const PHASE = 300;
/** the monitor's dispersion cap in the demo (see alertArrives) */
const DEMO_MAX_DISPERSION = 2;

function header(ctx: DemoContext, title: string): void {
  ctx.step++;
  say(`\n${ctx.step}. ${title}`);
}

async function publish(ctx: DemoContext, values: unknown[]): Promise<void> {
  const producer = createKafka(ctx.cfg.kafka).producer();
  await producer.connect();
  await produceJson(producer, ctx.cfg.kafka.topic, values);
  await producer.disconnect();
  ctx.published += values.length;
}

async function waitStored(ctx: DemoContext): Promise<{ stored: number; dead: number; seconds: number }> {
  const t0 = Date.now();
  const count = async () => {
    const m = await ctx.running!.service.metrics.registry.getMetricsAsJSON();
    const v = (n: string) => (m.find((x) => x.name === n)?.values ?? []).reduce((a, b) => a + Number(b.value), 0);
    return { stored: v('evalgap_rows_stored_total'), dead: v('evalgap_messages_dead_lettered_total') };
  };
  let c = await count();
  while (c.stored + c.dead < ctx.published && Date.now() - t0 < 300_000) {
    await new Promise((r) => setTimeout(r, 250));
    c = await count();
  }
  return { ...c, seconds: (Date.now() - t0) / 1000 };
}

/** The tool chain the eval cases of each topic expect (the agent's tools, as the demo tells it). */
const TOPIC_TOOLS: Record<string, string[]> = {
  shipping: ['order_lookup', 'track_parcel'],
  returns: ['order_lookup', 'create_return'],
  account: ['account_lookup'],
  payments: ['payment_lookup'],
  product: ['search_catalog'],
  discounts: ['apply_coupon'],
};
/** A chain no eval case exercises, that the agent starts calling after the shift. */
const UNTESTED_CHAIN = ['order_lookup', 'refund', 'escalate_human'];

function traffic(ctx: DemoContext, phase: 'a' | 'b' | 'c', surpriseShare: number, seed: number) {
  const offset = { a: 0, b: 1, c: 2 }[phase] * PHASE * STEP_MS;
  return sampleTraffic(PHASE, { seed, start: ctx.start + offset, stepMs: STEP_MS, surpriseShare, idPrefix: `demo-${ctx.stamp}-${phase}` }).map((t, i) => {
    // the agent's side: sessions of 3 turns at first; after the shift users go deeper (up to turn 6)
    // and a tenth of the requests run a tool chain no eval case exercises
    const deep = phase !== 'a';
    const per = deep ? 6 : 3;
    const tools = deep && i % 10 === 3 ? UNTESTED_CHAIN : TOPIC_TOOLS[t.topic_hint] ?? [];
    return { ...t, session_id: `${phase}-${Math.floor(i / per)}`, turn: (i % per) + 1, tools, phase };
  });
}

async function fitAndDeploy(ctx: DemoContext): Promise<void> {
  header(ctx, 'eval set: 180 support-agent test cases over 6 topics (shipping, returns, account, payments, product, discounts), each at turn 1 or 2 of a conversation with the tool chain its topic expects');
  const evalSet = sampleEvalSet(30);
  const evalFile = path.join(ctx.dir, 'evalset.jsonl');
  fs.writeFileSync(evalFile, evalSet.map((c) => JSON.stringify(c)).join('\n') + '\n');
  const fit = await fitCoverageModel(
    evalSet.map((c) => ({ id: c.id, text: c.query, tags: c.tags })),
    ctx.embedder,
    // the demo's traffic is generated from the eval cases' own phrasings (near-duplicates of them),
    // so calibration scores each case against its near-duplicates too (only itself left out)
    { ...DEFAULT_FIT, k: 'auto', nearDuplicateCosine: 1, source: 'evalset.jsonl', textField: 'query' },
  );
  const modelDir = path.join(ctx.dir, 'models', fit.draft.version);
  const manifest = saveCoverageModel(modelDir, fit.draft, fit.arrays);
  // each case's conversation depth (turn 1 or 2) and the tools its topic expects: agent.json
  saveAgentFile(modelDir, manifest.version, loadCoverageModel(modelDir).cases.map((c, i) => ({ id: c.id, turn: 1 + (i % 2), tools: TOPIC_TOOLS[c.tags[0] ?? ''] ?? [] })));
  ctx.models.push(manifest);
  deployModel(modelDir, ctx.current, { expectEmbedding: embeddingOf(ctx.embedder) });
  const rel = (p: string) => path.relative(process.cwd(), p);
  say(`   evalgap fit ${rel(evalFile)} --out ${rel(modelDir)}`);
  say(`   evalgap deploy ${rel(modelDir)} --current ${rel(ctx.current)}\n`);
  say(indent(modelSummary(manifest)));
}

async function startConsumer(ctx: DemoContext): Promise<void> {
  header(ctx, `evalgap run --model ${path.relative(process.cwd(), ctx.current)}: consumer group ${ctx.cfg.kafka.group}, topic ${ctx.cfg.kafka.topic}`);
  ctx.running = await startRun(ctx.cfg, ctx.current, createLogger(ctx.cfg.logLevel), { modelPollMs: 500 });
  say(`   stores into the embedded ClickHouse at ${path.relative(process.cwd(), ctx.cfg.clickhouse.path)}; watches the model symlink for redeploys`);
}

async function streamShift(ctx: DemoContext): Promise<void> {
  header(ctx, `production traffic through Kafka: ${PHASE} requests on the tested topics, then ${PHASE} more in which new topics appear`);
  const malformed = ['{"request_id": "bad-1", "query": "no timestamp"}', 'not json at all', '{"request_id":"bad-3","ts":"2026-01-01T00:00:00Z","query":"   "}'];
  const a = traffic(ctx, 'a', 0, 11);
  const b = traffic(ctx, 'b', SHIFT, 12);
  say(`   (${pct(SHIFT)} of the second part on topics the eval set never tested: ${SURPRISE_TOPICS.join(', ')}), plus ${malformed.length} malformed messages`);
  await publish(ctx, [...a.slice(0, 150), ...malformed, ...a.slice(150), ...b]);
  const c = await waitStored(ctx);
  ctx.ingestSeconds = c.seconds;
  say(`   stored ${c.stored} rows, dead-lettered ${c.dead} messages to ${ctx.cfg.kafka.dlqTopic} in ${c.seconds.toFixed(1)} s`);
  const store = ctx.running!.store;
  const tot = await demoTotals(store, ['a', 'b']);
  const target = ctx.models[0].calibration.targetFalseUncoveredRate;
  say(`   uncovered: ${tot.uncovered} of ${tot.n} (${pct(Number(tot.uncovered) / Number(tot.n))}); calibrated rate under no shift: ${pct(target)}`);
  say(`   escalation rate: covered ${pct(tot.esc_cov)}, uncovered ${pct(tot.esc_unc)}`);
  for (const phase of ['a', 'b'] as const) {
    const rows = await byTopic(store, phase);
    const n = rows.reduce((x, r) => x + Number(r.n), 0);
    const u = rows.reduce((x, r) => x + Number(r.uncovered), 0);
    say(`   ${phase === 'a' ? 'first part (tested topics only)' : 'second part (after the shift)   '}: ${pct(u / n)} uncovered`);
  }
  const rows = await byTopic(store, 'b');
  say('\n   after the shift, by true topic (known to the demo only; a hint field kept in metadata):');
  say(indent(table(['topic', 'in eval set', 'requests', 'uncovered'], rows.map((r) => [r.topic, SURPRISE_TOPICS.includes(r.topic) ? 'no' : 'yes', r.n, pct(Number(r.uncovered) / Number(r.n))]))));
}

/**
 * The monitor, in this process: evaluates the closed windows and sends a signed webhook to a local
 * receiver. The traffic's timestamps are the demo's (event time), so what the detectors see does
 * not depend on the machine; how long they take does. The demo waits for a condition, not a
 * guess: the alert, or else the monitor having evaluated every window of the shifted traffic with
 * every notification delivered (then no alert is an error). A cap scaled to this machine's measured
 * ingest time only bounds a monitor that makes no progress at all.
 */
async function alertArrives(ctx: DemoContext): Promise<void> {
  header(ctx, 'evalgap monitor: the shift is detected and a signed alert arrives at a local webhook receiver');
  const secret = newSecret();
  const got: Received[] = [];
  const receiver = new WebhookReceiver({ secret, onAlert: (r) => got.push(r) });
  await receiver.start(0);
  const mc = parseMonitorConfig({
    notifyBackfill: true,
    pollSeconds: 1,
    controlTopic: `evalgap.demo.${ctx.stamp}.monitor`,
    electionGroup: `evalgap-demo-${ctx.stamp}-monitor`,
    alertsTopic: `evalgap.demo.${ctx.stamp}.alerts`,
    dispatchGroupPrefix: `evalgap-demo-${ctx.stamp}-dispatch`,
    receivers: [{ name: 'demo', url: receiver.url, secret }],
    // The dispersion guard allows for sessions that repeat one query (real traffic: not independent
    // evidence), estimated from the first windows, up to 100× by default. The demo's requests are
    // drawn independently (dispersion 1), and its 300 unshifted requests are too few to measure
    // that: 20 windows of 15 requests let chance inflate the estimate (10× and more) on one run in
    // two. The demo caps it at 2, still twice what its traffic has.
    rules: { maxDispersion: DEMO_MAX_DISPERSION },
  });
  say(`   receiver ${receiver.url} verifies each Standard Webhooks signature (webhook-id, -timestamp, -signature) with the standardwebhooks package`);
  say(`   (monitor rules: maxDispersion ${DEMO_MAX_DISPERSION}, as the demo's requests are independent; the default, 100, allows for sessions that repeat a query)`);
  const mon = await startMonitor(ctx.cfg, mc, ctx.current, createLogger(ctx.cfg.logLevel), { store: ctx.running!.store });
  const ms = new MonitorStore(ctx.running!.store);
  const kafka = createKafka(ctx.cfg.kafka, `${ctx.cfg.kafka.clientId}-demo-admin`);
  const shiftEnd = ctx.start + 2 * PHASE * STEP_MS;
  const t0 = Date.now();
  // only a monitor that makes no progress at all hits this: 10 minutes, or more on a machine that ingested slowly
  const cap = Math.max(600_000, 200 * ctx.ingestSeconds * 1000);
  try {
    // the story's alert is the untested topics' (uncovered_*, or novel_vs_calibrated where the fit
    // puts them in its deep bands); the agent rules (depth_mix, …) may fire first
    const isFiring = (r: (typeof got)[number]) => (r.body as { kind?: string }).kind === 'firing';
    const ruleOf = (r: (typeof got)[number]) => (r.body as { alert?: { rule?: string } }).alert?.rule ?? '';
    const isStory = (rule: string) => rule.startsWith('uncovered') || rule === 'novel_vs_calibrated';
    const story = () => got.find((r) => isFiring(r) && isStory(ruleOf(r)));
    const firing = () => story() ?? got.find(isFiring);
    let done = false;
    while (!story() && !done) {
      if (Date.now() - t0 > cap) throw new Error(`the monitor made no progress for ${Math.round(cap / 1000)} s (see evalgap monitor --status)`);
      await new Promise((r) => setTimeout(r, 250));
      const cp = await ms.loadCheckpoint(mc.electionGroup).catch(() => null);
      // every window of the shifted traffic evaluated, and every notification delivered
      done = !!cp && Date.parse(cp.windowEnd) >= shiftEnd && (await dispatchCaughtUp(kafka, mc).catch(() => false));
    }
    const f = firing();
    if (!f) throw new Error('the monitor evaluated every window of the shifted traffic and no alert fired (see evalgap monitor --status)');
    const a = (f.body as { alert: { rule: string; agent: string; severity: string; summary: string; clusters?: { label?: string; shareNow?: number; examples?: string[] }[] } }).alert;
    say(`   received after ${((Date.now() - t0) / 1000).toFixed(1)} s, signature verified: ${f.id}`);
    say(`   ${a.severity.toUpperCase()} ${a.rule} (agent ${a.agent}): ${a.summary}`);
    for (const c of (a.clusters ?? []).slice(0, 3)) {
      say(`     ${c.label ?? ''}${c.shareNow !== undefined ? ` (now ${pct(c.shareNow)})` : ''}: ${(c.examples ?? []).slice(0, 2).map((e) => JSON.stringify(e)).join(', ')}`);
    }
    for (const o of got.filter((r) => isFiring(r) && r !== f && !isStory(ruleOf(r))).slice(0, 3)) {
      const x = (o.body as { alert: { rule: string; agent: string; severity: string; summary: string } }).alert;
      say(`   also ${x.severity.toUpperCase()} ${x.rule} (agent ${x.agent}): ${x.summary}`);
    }
    say(`   ${got.length} notification(s) in all; every evaluation is also in ${ctx.running!.store.t('alerts')} and ${ctx.running!.store.t('monitor_trends')}`);
  } finally {
    await mon.stop();
    await receiver.stop();
  }
}

/**
 * What `evalgap gaps` prints, trimmed to the top open gaps (closed ones are shown by the caller),
 * without the under-tested clusters and the per-agent table.
 */
function printGaps(r: GapReport, top: number): void {
  const open = r.gaps.filter((g) => g.status !== 'closed');
  say(indent(formatGapReport({ ...r, gaps: open, underTested: [], byAgent: [] }, 2, top).trimEnd()));
  if (open.length > top) say('   (evalgap gaps lists them all, with under-tested eval clusters and coverage per agent)');
}

/** Gap discovery over the traffic so far (`evalgap gaps`), stored in coverage_gaps. */
async function showGaps(ctx: DemoContext): Promise<void> {
  header(ctx, 'evalgap gaps: the uncovered traffic grouped into emerging topics (HDBSCAN on the stored embeddings), new topics before near misses, ranked by volume × risk × depth');
  ctx.gaps = await discoverGaps(ctx.running!.store, { since: ctx.start - 60_000, write: true });
  say(`   (discovery over ${ctx.gaps.grouped} uncovered requests took ${ctx.gaps.ms.read + ctx.gaps.ms.discover + ctx.gaps.ms.write} ms; stored in ${ctx.running!.store.t('coverage_gaps')} and ${ctx.running!.store.t('gap_members')})\n`);
  printGaps(ctx.gaps, 4);
}

/** `evalgap agent-coverage`: conversation depth and tool chains against what the eval set tests. */
async function showAgentCoverage(ctx: DemoContext): Promise<void> {
  header(ctx, 'evalgap agent-coverage: production conversations go deeper than the eval set, and one tool chain is never exercised');
  const store = ctx.running!.store;
  const w = { since: ctx.start - 60_000, until: ctx.start + 2 * PHASE * STEP_MS };
  const [depth, chains] = await Promise.all([depthCoverage(store, w), toolChains(store, w, 3)]);
  say(indent(table(
    ['turn', 'production', 'uncovered', 'eval cases'],
    depth.rows.map((r) => [r.band, `${pct(r.share)} (${r.requests})`, r.requests ? pct(r.uncoveredShare) : '-', r.evalShare === null ? 'unknown' : pct(r.evalShare)]),
  )));
  const beyond = untestedDepthNote(depth.rows, depth.evalCases);
  if (beyond) say(`   ${beyond}`);
  for (const c of chains.untested) say(`   untested tool chain: ${c.chain} (${c.requests} requests, ${pct(c.failureRate)} failed or escalated; first untested step ${c.missingBigram})`);
}

/**
 * `evalgap results` and `evalgap estimate` (part of the report step): an eval run of the current
 * model (simulated by the demo: 'returns' cases fail 2 in 5, the others 1 in 20), reweighted to the
 * traffic that model scored.
 */
async function showEstimate(ctx: DemoContext): Promise<void> {
  const store = ctx.running!.store;
  const m = ctx.running!.model.current().model;
  const passed = (id: string, i: number) => !((id.startsWith('returns-') && i % 5 < 2) || i % 20 === 7);
  await insertEvalResults(
    store,
    m.cases.map((c, i) => {
      const p = passed(c.id, i);
      return { model_version: m.manifest.version, run_id: 'demo-run', case_id: c.id, cluster: m.labels[i], tags: c.tags, passed: p ? 1 : 0, score: null, scores: {}, value: p ? 1 : 0, source: 'demo' };
    }),
    `demo-results-${ctx.stamp}`,
  );
  say(`   evalgap results: ${m.cases.length} simulated results stored as eval run demo-run of ${m.manifest.version} ('returns' cases fail 2 in 5, the others 1 in 20)`);
  say('   evalgap estimate: the eval score reweighted to the traffic that model scored (docs/estimate.md)');
  const rep = await computeEstimate(store, { since: ctx.start - 60_000, until: Date.now() + 1000, modelVersion: m.manifest.version });
  await storeWeightedScores(store, rep);
  say(`   ${headline(rep.estimate)}`);
  const b = rep.estimate.bounds;
  if (b) say(`   on all traffic: ${pct(b.allFail.estimate)} if the untested traffic all failed, ${pct(b.nearest.estimate)} if it passed like its nearest cluster, ${pct(b.allPass.estimate)} if it all passed`);
}

/** `evalgap export-gaps`: candidate eval cases from the stored gaps. */
async function exportCases(ctx: DemoContext): Promise<void> {
  header(ctx, 'evalgap export-gaps --out gap-cases.jsonl: candidate eval cases from the gaps (evalgap fit format, production context kept)');
  const res = await exportGapCases(ctx.running!.store, { scope: '', perGap: 10, budget: 60 });
  ctx.exported = res.cases;
  const file = path.join(ctx.dir, 'gap-cases.jsonl');
  fs.writeFileSync(file, res.cases.map((c) => JSON.stringify(c)).join('\n') + (res.cases.length ? '\n' : ''));
  say(`   ${res.cases.length} cases from ${res.gaps} gap(s) → ${path.relative(process.cwd(), file)}: diverse examples per gap (medoid, then farthest-first; near-duplicates dropped), stratified by priority`);
  for (const a of res.allocation) say(`     ${a.gap_id}  priority ${a.priority.toFixed(0)}  ${a.cases} case(s)`);
  say('   a reviewer would check them and add expected outputs here; e.g.:');
  for (const c of res.cases.slice(0, 3)) {
    say(`     ${JSON.stringify({ id: c.id, query: c.query, tags: c.tags, gap_label: c.gap_label, agent: c.agent, outcome: c.outcome, escalated: c.escalated })}`);
  }
}

async function refitAndRedeploy(ctx: DemoContext): Promise<void> {
  header(ctx, 'evalgap fit --add gap-cases.jsonl --model <current>, then evalgap deploy: the running consumer switches without a restart');
  const base = loadCoverageModel(ctx.current);
  const merged = mergeCases(
    base.cases.map((c) => ({ id: c.id, text: c.text, tags: c.tags ?? [] })),
    ctx.exported.map((c) => ({ id: c.id, text: c.query, tags: c.tags, ...(c.turn !== undefined ? { turn: c.turn } : {}) })),
  );
  const fit = await fitCoverageModel(merged.cases, ctx.embedder, { ...DEFAULT_FIT, ...addFitOptions(base.manifest, 'gap-cases.jsonl', {}) });
  const modelDir = path.join(ctx.dir, 'models', fit.draft.version);
  const m = saveCoverageModel(modelDir, fit.draft, fit.arrays);
  // the depth and tools of the model's own cases come along, and the exported cases' depth (as fit --add does)
  const agentOf = new Map<string, { turn?: number; tools?: string[] }>(readAgentFile(resolveModelDir(ctx.current), base.manifest.version).map((e) => [e.id, e]));
  for (const c of ctx.exported) if (c.turn !== undefined) agentOf.set(c.id, { turn: c.turn });
  saveAgentFile(modelDir, m.version, loadCoverageModel(modelDir).cases.filter((c) => agentOf.has(c.id)).map((c) => ({ id: c.id, ...agentOf.get(c.id)! })));
  ctx.models.push(m);
  say(`   ${base.manifest.version} (${base.cases.length} cases) + ${merged.added} new → ${m.version} (${m.evalSet.uniqueCases} cases, k=${m.params.k})`);
  const t0 = Date.now();
  deployModel(modelDir, ctx.current, { expectEmbedding: embeddingOf(ctx.embedder) });
  while (ctx.running!.model.current().version !== m.version && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 100));
  const now = ctx.running!.model.current().version;
  if (now !== m.version) throw new Error(`the consumer did not switch to ${m.version} (still ${now})`);
  say(`   the running consumer now scores with ${now} (switched ${((Date.now() - t0) / 1000).toFixed(1)} s after the deploy; no restart, no message lost)`);
}

async function showClosing(ctx: DemoContext): Promise<void> {
  header(ctx, `fresh production traffic (${PHASE} requests, the same mix as after the shift): the gap closes`);
  await publish(ctx, traffic(ctx, 'c', SHIFT, 13));
  const c = await waitStored(ctx);
  say(`   stored ${c.stored} rows in all`);
  const before = await byTopic(ctx.running!.store, 'b');
  const after = await byTopic(ctx.running!.store, 'c');
  const rate = (rows: typeof before, surprise: boolean) => {
    const sel = rows.filter((r) => SURPRISE_TOPICS.includes(r.topic) === surprise);
    return sel.reduce((a, r) => a + Number(r.uncovered), 0) / Math.max(1, sel.reduce((a, r) => a + Number(r.n), 0));
  };
  say(indent(table(
    ['traffic', `before (${ctx.models[0].version})`, `after (${ctx.models[1].version})`],
    [
      [`new topics (${SURPRISE_TOPICS.join(', ')})`, pct(rate(before, true)), pct(rate(after, true))],
      ['tested topics', pct(rate(before, false)), pct(rate(after, false))],
    ],
  )));
  say(`   uncovered share of the new topics: ${pct(rate(before, true))} → ${pct(rate(after, true))} (calibrated rate ${pct(ctx.models[1].calibration.targetFalseUncoveredRate)})`);
}

/** Discovery again, over the traffic the new model scored: the gaps it closed are marked closed. */
async function gapsClose(ctx: DemoContext): Promise<void> {
  header(ctx, `evalgap gaps again: discovery over the traffic ${ctx.models[1].version} scored (the fresh requests)`);
  const store = ctx.running!.store;
  const first = ctx.gaps!;
  const topics = await gapTopics(store, first.runId);
  const r = await discoverGaps(store, { since: ctx.start - 60_000, write: true });
  printGaps(r, 4);
  const status = new Map(r.gaps.map((g) => [g.gapId, g.status]));
  say('\n   the gaps found before the refit, now (true topic of their members known to the demo only):');
  say(indent(table(
    ['gap', 'label', 'members then', 'mostly topic', 'status now'],
    first.gaps.map((g) => {
      const t = topics.get(g.gapId);
      return [g.gapId, g.label, g.members, t ? `${t.topic} (${pct(t.share)})` : '', status.get(g.gapId) ?? '?'];
    }),
    40,
  )));
  const novel = first.gaps.filter((g) => SURPRISE_TOPICS.includes(topics.get(g.gapId)?.topic ?? ''));
  const closed = novel.filter((g) => status.get(g.gapId) === 'closed');
  say(`   gaps of the new topics marked closed: ${closed.length} of ${novel.length}`);
}

/** Requests of the canary step (sessions of 3); 40% of the sessions go to the candidate. */
const CANARY = 2100;
const CANARY_SHARE = 0.4;

/**
 * A canary: version v2 serves 40% of fresh sessions and escalates every request of one eval
 * cluster (about 4% of the traffic), as v1 does elsewhere. The monitor, given a canary guard, calls
 * for a rollback naming that cluster, while one test on all traffic (at α = 0.05, no multiplicity)
 * has no evidence yet. Waits for conditions: every row stored, then one evaluation over all of
 * them, then the webhook's delivery.
 */
async function canaryGuard(ctx: DemoContext): Promise<void> {
  header(ctx, `a canary: version v2 answers ${pct(CANARY_SHARE, 0)} of ${CANARY / 3} new sessions (${CANARY} requests) and escalates one kind of request; evalgap monitor --guard canary.json`);
  const store = ctx.running!.store;
  const stepMs = 200;
  const start = Date.now() - CANARY * stepMs - 1000;
  const base = sampleTraffic(CANARY, { seed: 29, start, stepMs, surpriseShare: 0, idPrefix: `demo-${ctx.stamp}-canary` });
  // the regressed kind of request: the requests the deployed model assigns to one covered cluster, about 4% of them
  const assigned = ctx.running!.model.current().assign((await ctx.embedder.embed(base.map((m) => m.query))).vectors, base.length);
  const counts = new Map<number, number>();
  base.forEach((_, i) => assigned.covered[i] && counts.set(assigned.cluster[i], (counts.get(assigned.cluster[i]) ?? 0) + 1));
  const [target] = [...counts.entries()].sort((a, b) => Math.abs(a[1] / CANARY - 0.04) - Math.abs(b[1] / CANARY - 0.04) || a[0] - b[0])[0];
  const r = rng(31);
  const sessionVersion = Array.from({ length: Math.ceil(CANARY / 3) }, () => (r() < CANARY_SHARE ? 'v2' : 'v1'));
  const msgs = base.map(({ topic_hint: _t, ...m }, i) => {
    // a session keeps one version (the canary routes users, not requests)
    const version = sessionVersion[Math.floor(i / 3)];
    const regressed = version === 'v2' && assigned.covered[i] === 1 && assigned.cluster[i] === target;
    return { ...m, session_id: `canary-${ctx.stamp}-${Math.floor(i / 3)}`, turn: (i % 3) + 1, version, ...(regressed ? { escalated: true, outcome: 'escalated' } : {}) };
  });
  await publish(ctx, msgs);
  await waitStored(ctx);
  const guard = {
    baseline: 'v1',
    candidate: 'v2',
    since: new Date(start - 1000).toISOString(),
    // every session is complete once stored (the demo sends whole sessions)
    session_idle_seconds: 0,
    rollback: [{ outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 }],
  };
  fs.writeFileSync(path.join(ctx.dir, 'canary.json'), JSON.stringify(guard, null, 2) + '\n');
  say(`   canary.json: roll back when any cluster with ≥ 1% of the traffic escalates more than 1.5× as often on v2, with confidence (α = 0.05 over all its tests)`);
  const secret = newSecret();
  const got: Received[] = [];
  const receiver = new WebhookReceiver({ secret, onAlert: (x) => got.push(x) });
  await receiver.start(0);
  const mc = parseMonitorConfig({
    start: 'now',
    pollSeconds: 1,
    controlTopic: `evalgap.demo.${ctx.stamp}.canary`,
    electionGroup: `evalgap-demo-${ctx.stamp}-canary`,
    alertsTopic: `evalgap.demo.${ctx.stamp}.canary-alerts`,
    dispatchGroupPrefix: `evalgap-demo-${ctx.stamp}-canary-dispatch`,
    receivers: [{ name: 'demo', url: receiver.url, secret }],
    guard,
  });
  const mon = await startMonitor(ctx.cfg, mc, ctx.current, createLogger(ctx.cfg.logLevel), { store });
  const kafka = createKafka(ctx.cfg.kafka, `${ctx.cfg.kafka.clientId}-demo-admin`);
  try {
    // one evaluation over every stored row (the leader goes on polling; it sends nothing twice)
    const t = await mon.runner.tick({ force: true });
    if (!t.guard?.rollback) throw new Error(`the canary guard did not call for a rollback (${t.guard?.waiting ?? 'no finding'})`);
    const rollback = () => got.find((x) => (x.body as AlertPayload).alert?.rule === 'version_regression');
    const t0 = Date.now();
    while (!rollback()) {
      if ((await dispatchCaughtUp(kafka, mc).catch(() => false)) && !rollback()) throw new Error('the rollback was written to the outbox but not delivered');
      if (Date.now() - t0 > 600_000) throw new Error('the rollback was not delivered within 10 minutes');
      await new Promise((res) => setTimeout(res, 250));
    }
    const a = (rollback()!.body as AlertPayload).alert;
    say(`   signed webhook received, signature verified: ${rollback()!.id} (severity ${a.severity})`);
    for (const s of a.comparison?.segments ?? []) {
      say(
        `   ${s.segment === 'cluster' ? `cluster ${s.cluster}${s.label ? ` (${s.label})` : ''}` : s.segment}${s.cluster === target ? ' [the regressed one]' : ''}: ` +
          `${s.outcome} ${pct(s.candidate.rate ?? 0)} on v2 (${s.candidate.units} sessions) vs ${pct(s.baseline.rate ?? 0)} on v1 (${s.baseline.units}); ratio ≥ ${s.ratio.lo.toFixed(2)} with confidence → rollback`,
      );
      if (s.examples.length) say(`     e.g. ${s.examples.slice(0, 2).map((e) => JSON.stringify(e)).join(', ')}`);
    }
    // the same traffic through one global test: all requests as one segment, escalation, α = 0.05
    const rows = await new CompareStore(store).evidence({ baseline: 'v1', candidate: 'v2', since: guard.since, until: new Date().toISOString(), agent: '', slowMs: Infinity });
    const all = rows.filter((x) => x.segment === ALL).reduce((x, y) => (y.candidate.units > x.candidate.units ? y : x));
    const g = new RateComparison(0.05).set('baseline', { n: all.baseline.units, s: all.baseline.escalated }).set('candidate', { n: all.candidate.units, s: all.candidate.escalated });
    const d = g.interval.difference;
    say(
      `   all traffic (one global test): escalated ${pct(g.rate('candidate') ?? 0)} on v2 vs ${pct(g.rate('baseline') ?? 0)} on v1; ` +
        `difference ${(100 * d.lo).toFixed(1)} to ${(100 * d.hi).toFixed(1)} points: ${g.verdict}`,
    );
  } finally {
    await mon.stop();
    await receiver.stop();
  }
}

async function report(ctx: DemoContext): Promise<string> {
  header(ctx, 'evalgap report');
  await showEstimate(ctx);
  const out = path.join(ctx.dir, 'report.html');
  await writeReport(ctx.running!.store, out, { since: new Date(ctx.start - 60_000), sinceText: '1h', modelPath: ctx.current, embedder: ctx.embedder, mapSample: 400 });
  say(`   report: ${out}  (one self-contained HTML file; open it in a browser, offline)`);
  return out;
}

/** the file that marks a folder as the demo's own (written before anything else of the demo) */
export const DEMO_MARKER = '.evalgap-demo';
/** what the demo writes in its folder, replaced on each run */
const DEMO_FILES = ['evalset.jsonl', 'model', 'models', 'chdb', 'gap-cases.jsonl', 'report.html', 'canary.json'];
export const DEFAULT_DEMO_DIR = path.join(PACKAGE_ROOT, '.evalgap', 'demo');

/**
 * Makes `dir` ready for a demo run: a folder an earlier demo run marked as its own has the demo's
 * files of the last run removed (nothing else); a new folder, or one holding none of the names the
 * demo writes, is marked and used (its other files stay). A folder that holds one of those names
 * (evalset.jsonl, models/, report.html, … the very names a user's own project has) and no marker
 * is refused with a UserError before anything in it is touched. The default folder is also taken
 * when it holds only the demo's files (a run of a release before the marker).
 */
export function prepareDemoDir(dir: string): void {
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new UserError(`${dir} is a file, not a folder: give the demo an empty or new folder with --dir`);
    if (code !== 'ENOENT') throw e;
  }
  const clashes = entries.filter((f) => DEMO_FILES.includes(f));
  const ours =
    clashes.length === 0 ||
    entries.includes(DEMO_MARKER) ||
    (path.resolve(dir) === DEFAULT_DEMO_DIR && entries.every((f) => DEMO_FILES.includes(f)));
  if (!ours) {
    throw new UserError(
      `${dir} holds ${clashes.join(', ')} and no earlier demo run made it (it has no ${DEMO_MARKER}): the demo replaces those names ` +
        `on each run, so it leaves the folder alone; give an empty or new folder with --dir`,
    );
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, DEMO_MARKER), 'written by `evalgap demo`: this folder is the demo\'s, and each run replaces what it wrote here\n');
  // replace only what the demo itself writes there
  for (const f of DEMO_FILES) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
}

export async function runDemo(base: Config, dir = DEFAULT_DEMO_DIR): Promise<void> {
  const stamp = Date.now().toString(36);
  prepareDemoDir(dir);
  const cfg: Config = {
    ...base,
    kafka: { ...base.kafka, topic: `evalgap.demo.${stamp}`, dlqTopic: `evalgap.demo.${stamp}.dlq`, group: `evalgap-demo-${stamp}` },
    clickhouse: base.clickhouse.url ? base.clickhouse : { ...base.clickhouse, path: path.join(dir, 'chdb') },
    ingest: { ...base.ingest, metricsPort: 0 },
    // dead letters are reported by the demo itself; errors (e.g. a refused model) still show
    logLevel: 'error',
  };
  const ctx: DemoContext = {
    cfg,
    dir,
    stamp,
    embedder: await loadThreadedEmbedder(cfg.embed),
    current: path.join(dir, 'models', 'current'),
    models: [],
    running: null,
    published: 0,
    // on a minute boundary, so that every run's traffic falls into the same evaluation windows
    start: Math.floor((Date.now() - 3 * PHASE * STEP_MS - 60_000) / 60_000) * 60_000,
    ingestSeconds: 0,
    exported: [],
    gaps: null,
    step: 0,
  };
  try {
    await fitAndDeploy(ctx);
    await startConsumer(ctx);
    await streamShift(ctx);
    await alertArrives(ctx);
    await showGaps(ctx);
    await showAgentCoverage(ctx);
    await exportCases(ctx);
    await refitAndRedeploy(ctx);
    await showClosing(ctx);
    await gapsClose(ctx);
    await canaryGuard(ctx);
    await report(ctx);
  } finally {
    await ctx.running?.stop();
    await ctx.embedder.close();
  }
  say(`\ndone. Data: ${path.relative(process.cwd(), dir) || '.'}; query it again with evalgap or any ClickHouse client.`);
}
