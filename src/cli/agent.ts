/**
 * `evalgap agent-coverage`: how deep production conversations go against what the eval set tests,
 * which tool chains no eval case exercises, and how many sessions leave coverage; or one session's
 * turns in order (`--session`).
 */
import type { Config } from '../config/index.js';
import { depthCoverage, sessionSummary, sessionTurns, toolChains } from '../store/agent.js';
import { openReader } from './gaps.js';
import { table } from './format.js';
import { untestedDepthNote } from '../report/depth-note.js';

export interface AgentCoverageOptions {
  since: Date;
  until: Date;
  agent?: string;
  format: 'table' | 'json';
  top: number;
  session?: string;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function agentCoverageCommand(cfg: Config, o: AgentCoverageOptions): Promise<void> {
  const opened = await openReader(cfg, { readOnly: true });
  if (opened.note) console.error(opened.note);
  try {
    const r = opened.reader;
    if (o.session) {
      const turns = await sessionTurns(r, o.session);
      if (o.format === 'json') console.log(JSON.stringify({ session: o.session, turns }, null, 2));
      else if (!turns.length) {
        // a mistyped session id is not an empty session: said on stderr, exit 2 (JSON keeps its empty list)
        console.error(`evalgap: no stored turns of session ${o.session}`);
        process.exitCode = 2;
      }
      else {
        console.log(`session ${o.session}: ${turns.length} turn(s)`);
        console.log(table(['turn', 'ts', 'covered', 'cluster', 'tools', 'outcome', 'query'], turns.map((t) => [t.turn, t.ts, Number(t.covered) ? 'yes' : 'NO', t.cluster, t.tools.join(' → '), t.outcome, t.query]), 80));
      }
      return;
    }
    const w = { since: o.since.getTime(), until: o.until.getTime(), agent: o.agent };
    const [depth, chains, sessions] = await Promise.all([depthCoverage(r, w), toolChains(r, w, o.top), sessionSummary(r, w)]);
    if (o.format === 'json') {
      console.log(JSON.stringify({ period: { since: o.since.toISOString(), until: o.until.toISOString() }, agent: o.agent ?? null, depth, toolChains: chains, sessions }, null, 2));
      return;
    }
    const period = `${o.since.toISOString().slice(0, 16)} to ${o.until.toISOString().slice(0, 16)} UTC${o.agent ? `, agent ${o.agent}` : ''}`;
    console.log(`Conversation depth (${period}): ${depth.withTurn} of ${depth.total} requests carry a turn index`);
    if (depth.withTurn) {
      const overall = depth.rows.reduce((a, x) => a + x.uncovered, 0) / depth.withTurn;
      console.log(table(
        ['turn', 'production', 'uncovered', 'vs all turns', 'eval cases'],
        depth.rows.map((x) => [x.band, `${pct(x.share)} (${x.requests})`, x.requests ? pct(x.uncoveredShare) : '-', x.requests && overall ? `${(x.uncoveredShare / overall).toFixed(1)}×` : '-', x.evalShare === null ? 'unknown' : pct(x.evalShare)]),
      ));
      const note = untestedDepthNote(depth.rows, depth.evalCases);
      if (note) console.log(note);
    }
    const v = chains.verdicts;
    const withTools = Object.entries(v).filter(([k]) => k !== 'none').reduce((a, [, n]) => a + n, 0);
    console.log(`\nTool chains: ${withTools} request(s) called tools` + (withTools ? `: ${Object.entries(v).filter(([k]) => k !== 'none').map(([k, n]) => `${k} ${n}`).join(', ')}` : ''));
    if (v.unknown) console.log('  (unknown: the coverage model\'s eval set lists no tools; give eval cases a "tools" field and refit)');
    if (chains.untested.length) {
      console.log(table(
        ['untested chain', 'requests', 'failed+escalated', 'missing step', 'example'],
        chains.untested.map((c) => [c.chain, c.requests, pct(c.failureRate), c.missingBigram, c.examples[0] ?? '']),
        70,
      ));
    }
    console.log(`\nSessions: ${sessions.sessions}` + (sessions.sessions
      ? `, ${sessions.leftCoverage} (${pct(sessions.leftCoverage / sessions.sessions)}) left coverage; first uncovered turn at 1 / 2-3 / 4-7 / 8+: ${sessions.firstUncoveredByBand.join(' / ')}; deepest turn ${sessions.deepestTurn}`
      : ' (no request carries a session_id)'));
  } finally {
    await opened.close();
  }
}
