/**
 * A synthetic multi-turn, tool-using agent stream for the agent rules (src/monitor/agent-rules.ts):
 * sessions arriving with a daily cycle (volume ×4 between night and day; each intent's share ±60%
 * over the day, its own phase), each following one intent for a geometric number of turns 5–90 s apart; a turn calls its intent's tool chain with
 * probability 0.6; failures are per turn, with some sessions "troubled" (their turns fail far more
 * often: failures cluster within sessions). After `change` the stream may shift: longer sessions,
 * a new tool chain on a share of turns, one chain failing more often.
 *
 * It yields WindowCounts with `agentCells` per window and the whole closed sessions as
 * `agentSessions` in the window where they close (idle for `idleSeconds`), as the runner does.
 */
import { rng } from '../../src/coverage/vec.js';
import { depthBand } from '../../src/coverage/agent.js';
import type { AgentContext, AgentSessionCell, MonitorContext, WindowCounts } from '../../src/monitor/types.js';

export interface AgentSimOptions {
  seed: number;
  days: number;
  /** mean requests per second over a day */
  rate: number;
  windowSeconds: number;
  idleSeconds?: number;
  intents?: number;
  /** amplitude of each intent's daily cycle in the mix (default 0.6: ±60%, each intent its own phase) */
  mixCycle?: number;
  /** mean session length in turns (geometric, at most 30) */
  meanTurns?: number;
  /** failure rate of a turn in an ordinary and in a troubled session; share of troubled sessions */
  failure?: number;
  troubledFailure?: number;
  troubled?: number;
  /** from this time (ms since the start) the shift applies to sessions starting after it */
  change?: number;
  shift?: {
    /** mean session length after the change */
    meanTurns?: number;
    /** share of turns calling a new chain no eval case tests */
    newChain?: number;
    /** failure rate of intent 0's chain multiplied by this */
    failureFactor?: number;
  };
  /** called for each session as it starts (for an oracle that knows the stream's truth) */
  onSession?: (s: { t: number; turns: number; after: boolean; tools: string[][]; shares: number[] }) => void;
  /** no session ids: every request is its own session */
  noSessions?: boolean;
  start?: number;
}

export const SIM_START = Date.parse('2026-03-02T00:00:00Z');
export const chainOf = (intent: number) => [`lookup_${intent % 4}`, `act_${intent}`];
export const NEW_CHAIN = ['search_web', 'act_new'];

/** The eval side: chains of every intent but the last (an untested chain in baseline traffic), and a depth profile. */
export function simContext(o: { intents?: number; depthShares?: number[]; depthCases?: number; tools?: boolean } = {}): MonitorContext {
  const K = o.intents ?? 12;
  const agent: AgentContext = {
    depthCases: o.depthCases ?? 1000,
    // by default the depth profile of the unshifted stream (geometric sessions of mean 3 turns)
    depthShares: o.depthShares ?? [0.33, 0.37, 0.24, 0.06],
    toolCases: o.tools === false ? 0 : 400,
    chains: o.tools === false ? [] : Array.from({ length: K - 1 }, (_, k) => ({ cluster: k, tools: chainOf(k) })),
  };
  const evalShares = Object.fromEntries(Array.from({ length: K }, (_, k) => [k, 1 / K]));
  return { modelVersion: 'm1', calibratedRate: 0.05, evalShares, agent };
}

interface Turn {
  t: number;
  session: string;
  turn: number;
  cluster: number;
  tools: string[];
  failed: boolean;
}

/** The stream as windows, in order, with the number of requests before each window and the change's window index. */
export function* agentSim(o: AgentSimOptions): Generator<{ windows: WindowCounts[]; requestsBefore: number; afterChange: boolean; requests: number }> {
  const r = rng(o.seed);
  const K = o.intents ?? 12;
  const idle = (o.idleSeconds ?? 300) * 1000;
  const W = o.windowSeconds * 1000;
  const start = o.start ?? SIM_START;
  const end = start + o.days * 86_400_000;
  const change = o.change ?? Infinity;
  const turnsOf = (mean: number) => {
    let l = 1;
    while (l < 30 && r() > 1 / mean) l++;
    return l;
  };
  // session starts: a thinned Poisson process with the daily cycle; rate in sessions = rate / mean turns
  const pending: Turn[] = [];
  const closing: { at: number; cells: AgentSessionCell[] }[] = [];
  let sid = 0;
  let t = start;
  let requestsBefore = 0;
  let nextStart = start;
  const meanBase = o.meanTurns ?? 3;
  const peak = (o.rate / meanBase) * 1.6;
  const cyc = o.mixCycle ?? 0.6;
  const phases = Array.from({ length: K }, () => r());
  const newSession = (t0: number) => {
    const after = t0 - start >= change;
    const mean = after && o.shift?.meanTurns ? o.shift.meanTurns : meanBase;
    const L = turnsOf(mean);
    // the intent mix follows a daily cycle, each intent with its own phase
    const h = (t0 - start) / 86_400_000;
    const w = phases.map((ph) => 1 + cyc * Math.sin(2 * Math.PI * (h + ph)));
    let u = r() * w.reduce((x, y) => x + y, 0);
    let intent = 0;
    while ((u -= w[intent]) > 0 && intent < K - 1) intent++;
    const troubled = r() < (o.troubled ?? 0.1);
    const id = `s${sid++}`;
    let tt = t0;
    let last = t0;
    const cells: AgentSessionCell[] = [];
    for (let i = 1; i <= L; i++) {
      let tools: string[] = [];
      if (after && o.shift?.newChain && r() < o.shift.newChain) tools = NEW_CHAIN;
      else if (r() < 0.6) tools = chainOf(intent);
      let pf = troubled ? (o.troubledFailure ?? 0.3) : (o.failure ?? 0.04);
      if (after && o.shift?.failureFactor && intent === 0 && tools.length && tools !== NEW_CHAIN) pf = Math.min(1, pf * o.shift.failureFactor);
      const failed = tools.length > 0 && r() < pf;
      const session = o.noSessions ? '' : id;
      pending.push({ t: tt, session, turn: i, cluster: intent, tools, failed });
      const cell: AgentSessionCell = { session, depthBand: depthBand(i), cluster: tools.length ? intent : -1, tools, requests: 1, failed: failed ? 1 : 0 };
      // without session ids a request is its own session, "closed" in its own window
      if (o.noSessions) closing.push({ at: tt, cells: [cell] });
      else cells.push(cell);
      last = tt;
      tt += 5000 + r() * 85_000;
    }
    if (!o.noSessions) closing.push({ at: last + idle, cells });
    o.onSession?.({ t: t0, turns: L, after, tools: pending.slice(-L).map((p) => p.tools), shares: w.map((x) => x / w.reduce((a, b) => a + b, 0)) });
  };
  while (t < end) {
    const we = t + W;
    // sessions starting before the window's end
    while (nextStart < we) {
      const phase = Math.sin((2 * Math.PI * (nextStart - start)) / 86_400_000);
      const lam = (o.rate / meanBase) * (1 + 0.6 * phase);
      if (r() < lam / peak) newSession(nextStart);
      nextStart += (-Math.log(1 - r()) / peak) * 1000;
    }
    pending.sort((a, b) => a.t - b.t);
    const inWin: Turn[] = [];
    while (pending.length && pending[0].t < we) inWin.push(pending.shift()!);
    const cellMap = new Map<string, { depthBand: number; cluster: number; tools: string[]; requests: number; failed: number }>();
    for (const x of inWin) {
      const c = x.tools.length ? x.cluster : -1;
      const k = `${depthBand(x.turn)}|${c}|${x.tools.join(',')}`;
      const e = cellMap.get(k) ?? { depthBand: depthBand(x.turn), cluster: c, tools: x.tools, requests: 0, failed: 0 };
      e.requests += 1;
      if (x.failed) e.failed += 1;
      cellMap.set(k, e);
    }
    const sessions: AgentSessionCell[] = [];
    for (let i = closing.length - 1; i >= 0; i--) {
      if (closing[i].at < we) {
        sessions.push(...closing[i].cells);
        closing.splice(i, 1);
      }
    }
    const ws = new Date(t).toISOString();
    const windows: WindowCounts[] =
      inWin.length || sessions.length
        ? [
            {
              start: ws,
              end: new Date(we).toISOString(),
              agent: 'bot',
              modelVersion: 'm1',
              clusters: [],
              ...(inWin.length ? { agentCells: [...cellMap.values()] } : {}),
              ...(sessions.length ? { agentSessions: sessions } : {}),
            },
          ]
        : [];
    yield { windows, requestsBefore, afterChange: t - start >= change, requests: inWin.length };
    requestsBefore += inWin.length;
    t = we;
  }
}
