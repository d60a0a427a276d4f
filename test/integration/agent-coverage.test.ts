/**
 * Coverage of conversation depth, tool chains and sessions, end to end with the real parts: an eval
 * set whose cases give `turn` and `tools` is fitted by the CLI (agent.json beside the model), `evalgap
 * run` in-process streams production traffic through the real broker and engine, and the views
 * and `evalgap agent-coverage` must match the generator's truth.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { chainVerdict, depthBand, loadAgentProfile } from '../../src/coverage/agent.js';
import { loadCoverageModel } from '../../src/coverage/model.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { startRun } from '../../src/cli/run.js';
import { sampleEvalSet, sampleTraffic } from '../../src/cli/sample-data.js';
import { Store } from '../../src/store/store.js';
import { discoverGaps, exportGapCases } from '../../src/gaps/run.js';
import { parseEvalSet } from '../../src/coverage/evalset.js';
import { groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const run = promisify(execFile);
const CLI = path.join(PACKAGE_ROOT, 'dist/cli/main.js');
const kafka = testKafka();
let dir: string;
let cfg: Config;
let modelDir: string;

/** The tool chain each eval topic's cases expect, by topic position. */
const CHAINS = [['order_lookup'], ['order_lookup', 'refund'], ['search_kb'], ['account_lookup', 'reset_password'], [], ['search_kb', 'create_ticket']];
const UNTESTED = ['search_kb', 'escalate_human', 'create_ticket'];

const evalCases = sampleEvalSet(30).map((c, i) => {
  const topic = Math.floor(i / 30);
  return { ...c, turn: 1 + (i % 2), tools: CHAINS[topic] };
});
const topics = [...new Set(evalCases.map((c) => c.tags[0]!))];
const traffic = sampleTraffic(360, { seed: 31, surpriseShare: 0.2, idPrefix: uniqueName('agent') }).map((t, i) => {
  const topic = topics.indexOf(t.topic_hint);
  const session = Math.floor(i / 6);
  const turn = 1 + (i % 6) + (session % 3 === 0 ? 6 : 0); // a third of the sessions run past turn 7
  const tools = i % 10 === 0 ? UNTESTED : topic >= 0 ? CHAINS[topic]! : ['order_lookup', 'refund'];
  return { ...t, session_id: `sess-${session}`, agent: session % 2 ? 'support-bot' : 'checkout-assistant', turn, tools };
});

beforeAll(async () => {
  dir = tmpDir();
  const topic = uniqueName('evalgap.test.agent');
  cfg = testConfig(path.join(dir, 'chdb'));
  cfg = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group: uniqueName('g') }, ingest: { ...cfg.ingest, metricsPort: -1 } };
  fs.writeFileSync(path.join(dir, 'evalset.jsonl'), evalCases.map((c) => JSON.stringify(c)).join('\n') + '\n');
  modelDir = path.join(dir, 'model');
  const fit = await run('node', [CLI, 'fit', path.join(dir, 'evalset.jsonl'), '--out', modelDir], { env: { ...process.env, EVALGAP_LOG_LEVEL: 'warn' } });
  // every kept case (duplicate texts are fitted once) gives both
  const m = /agent profile: (\d+) case\(s\) with a conversation depth, (\d+) with expected tools/.exec(fit.stdout);
  expect(m?.[1]).toBe(String(loadCoverageModel(modelDir).cases.length));
  expect(m?.[2]).toBe(m?.[1]);
  const running = await startRun(cfg, modelDir, createLogger('silent'));
  try {
    const p = kafka.producer();
    await p.connect();
    await produceJson(p, topic, traffic);
    await p.disconnect();
    await waitFor(() => groupCaughtUp(kafka, cfg.kafka.group, topic), 300_000, 'the run to store every message');
  } finally {
    await running.stop();
  }
}, 600_000);

describe('conversation depth, tool chains and sessions against the eval set', () => {
  it('the views and evalgap agent-coverage match the generator', async () => {
    const since = new Date(Date.parse(traffic[0]!.ts as string) - 1000).toISOString();
    const until = new Date(Date.parse(traffic.at(-1)!.ts as string) + 1000).toISOString();
    const { stdout } = await run('node', [CLI, 'agent-coverage', '--format', 'json', '--since', since, '--until', until, '--top', '3', '--data-dir', cfg.clickhouse.path]);
    const out = JSON.parse(stdout) as {
      depth: { withTurn: number; rows: { band: string; requests: number; evalShare: number | null }[] };
      toolChains: { verdicts: Record<string, number>; untested: { chain: string; requests: number; missingBigram: string; failureRate: number; examples: string[] }[] };
      sessions: { sessions: number; deepestTurn: number };
    };
    // depth: the generator's counts per band; the eval set tests turns 1 and 2 only
    const truth = [0, 0, 0, 0];
    for (const t of traffic) truth[depthBand(t.turn)]++;
    expect(out.depth.withTurn).toBe(traffic.length);
    expect(out.depth.rows.map((r) => r.requests)).toEqual(truth);
    const depthProfile = loadAgentProfile(modelDir, loadCoverageModel(modelDir))!.depth;
    expect(depthProfile.shares[0]! + depthProfile.shares[1]!).toBeCloseTo(1, 9);
    out.depth.rows.forEach((r, i) => expect(r.evalShare).toBeCloseTo(depthProfile.shares[i]!, 9));
    // tool chains: the view's verdict per request equals the reference check on the stored cluster
    // the untested chain's first missing step per request: it depends on the cluster each lands in
    const heldMissing = new Map<string, number>();
    const store = await Store.open(cfg.clickhouse, { migrate: false });
    try {
      const rows = await store.query<{ request_id: string; cluster: number; tools: string[]; verdict: string; missing_bigram: string }>(
        `SELECT request_id, cluster, tools, verdict, missing_bigram FROM ${store.t('tool_chain_coverage')}`,
      );
      expect(rows).toHaveLength(traffic.length);
      const profile = loadAgentProfile(modelDir, loadCoverageModel(modelDir))!;
      const allChains = new Set(profile.tools.chains.map((c) => c.tools.join(' → ')));
      let checked = 0;
      for (const r of rows) {
        const ref = chainVerdict(profile, Number(r.cluster), r.tools);
        const expected = ref.verdict === 'untested' && allChains.has(r.tools.join(' → ')) ? 'exact_elsewhere' : ref.verdict;
        expect(r.verdict, `${r.request_id} ${r.tools.join(',')}`).toBe(expected);
        if (expected === 'untested') expect(r.missing_bigram).toBe(ref.missing);
        if (r.tools.join(' → ') === UNTESTED.join(' → ')) heldMissing.set(ref.missing ?? '', (heldMissing.get(ref.missing ?? '') ?? 0) + 1);
        checked++;
      }
      expect(checked).toBe(traffic.length);
      const sessions = await store.query<{ session_id: string; turns: string; deepest_turn: number }>(`SELECT session_id, turns, deepest_turn FROM ${store.t('session_coverage')}`);
      const bySession = new Map<string, number[]>();
      for (const t of traffic) bySession.set(t.session_id, [...(bySession.get(t.session_id) ?? []), t.turn]);
      expect(sessions).toHaveLength(bySession.size);
      for (const s of sessions) {
        expect(Number(s.turns)).toBe(bySession.get(s.session_id)!.length);
        expect(Number(s.deepest_turn)).toBe(Math.max(...bySession.get(s.session_id)!));
      }
    } finally {
      await store.close();
    }
    // the chain no eval case takes leads the untested list, with its volume and its first missing step
    const held = out.toolChains.untested[0]!;
    expect(held.chain).toBe(UNTESTED.join(' → '));
    expect(held.requests).toBe(traffic.filter((t) => t.tools === UNTESTED).length);
    // the step most of its requests miss (ties: the larger string): where its cluster's cases call
    // search_kb first that is search_kb→escalate_human, elsewhere the chain's start ^→search_kb
    const mostMissed = [...heldMissing].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? 1 : -1))[0]![0];
    expect(['search_kb→escalate_human', '^→search_kb']).toContain(mostMissed);
    expect(held.missingBigram).toBe(mostMissed);
    // …its failure rate (failed or escalated) and example queries of that chain
    const heldRows = traffic.filter((t) => t.tools === UNTESTED);
    expect(held.failureRate).toBeCloseTo(heldRows.filter((t) => (t as { outcome?: string }).outcome === 'failed' || (t as { escalated?: boolean }).escalated === true).length / heldRows.length, 9);
    expect(held.examples.length).toBeGreaterThan(0);
    for (const e of held.examples) expect(heldRows.map((t) => t.query)).toContain(e);
    expect(out.sessions.sessions).toBe(60);
    expect(out.sessions.deepestTurn).toBe(12);
    // the table view says it in words
    const table = await run('node', [CLI, 'agent-coverage', '--since', since, '--until', until, '--data-dir', cfg.clickhouse.path]);
    expect(table.stdout).toMatch(/No eval case that gives its depth \(\d+ give `turn` or `turns`; cases without either are not counted\) is at turn 4-7, 8\+: \d+\.\d% of production traffic is there/);
    expect(table.stdout).toContain('search_kb → escalate_human → create_ticket');
    // export-gaps: a case deep in a conversation comes with the session's earlier turns, and fit reads its depth
    const gapStore = await Store.open(cfg.clickhouse, { migrate: false });
    try {
      await discoverGaps(gapStore, { since: Date.parse(since), now: Date.parse(until) });
      const exp = await exportGapCases(gapStore, { perGap: 25 });
      const deep = exp.cases.filter((c) => (c.turn ?? 0) > 1);
      expect(deep.length).toBeGreaterThan(0);
      for (const c of deep) {
        const src = traffic.find((t) => t.request_id === c.request_id)!;
        const earlier = traffic.filter((t) => t.session_id === src.session_id && Date.parse(t.ts as string) < Date.parse(src.ts as string)).map((t) => t.query);
        expect(c.turn).toBe(src.turn);
        expect(c.turns).toEqual(earlier);
      }
      const parsed = parseEvalSet(exp.cases.map((c) => JSON.stringify(c)).join('\n'), 'jsonl');
      expect(parsed.errors).toEqual([]);
      for (const c of parsed.cases) {
        const e = exp.cases.find((x) => x.id === c.id)!;
        expect(c.turn).toBe(e.turn);
      }
    } finally {
      await gapStore.close();
    }
    // and the report has the section
    const html = path.join(dir, 'report.html');
    await run('node', [CLI, 'report', '--out', html, '--since', since, '--map-sample', '0', '--model', modelDir, '--data-dir', cfg.clickhouse.path]);
    const page = fs.readFileSync(html, 'utf8');
    expect(page).toContain('id="agent-coverage"');
    expect(page).toContain('search_kb → escalate_human → create_ticket');
    expect(page).toMatch(/No eval case that gives its depth \(\d+ give `turn` or `turns`; cases without either are not counted\) is at turn 4-7, 8\+: \d+\.\d% of production traffic is there\.<\/b>/);
  });
});
