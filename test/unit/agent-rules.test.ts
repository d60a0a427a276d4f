import { describe, expect, it } from 'vitest';
import { createAgentRules, chainCovered, type AgentRulesState } from '../../src/monitor/agent-rules.js';
import { createEvaluator } from '../../src/monitor/index.js';
import type { Finding, MonitorContext, MonitorState } from '../../src/monitor/types.js';
import { agentSim, chainOf, NEW_CHAIN, simContext, type AgentSimOptions } from '../helpers/agent-sim.js';

const AGENT_RULES = ['depth_mix', 'untested_chains', 'chain_failure'];

/** Run the agent rules over a simulated stream; the first firing window of each rule and the number of episodes. */
function run(o: AgentSimOptions, ctx: MonitorContext = simContext(), opts = {}) {
  const rules = createAgentRules(opts);
  let state: AgentRulesState | null = null;
  const onsets: Record<string, { requestsAfterChange: number; finding: Finding }[]> = {};
  const firing = new Set<string>();
  let changeAt: number | null = null;
  let evaluations = 0;
  for (const w of agentSim(o)) {
    if (w.afterChange && changeAt === null) changeAt = w.requestsBefore;
    if (!w.windows.length) continue;
    const ev = rules.evaluate(state, w.windows, ctx);
    state = ev.state;
    evaluations++;
    for (const f of ev.findings) {
      const key = `${f.rule}|${f.scope.agent}`;
      if (f.firing && !firing.has(key)) (onsets[f.rule] ??= []).push({ requestsAfterChange: w.requestsBefore + w.requests - (changeAt ?? 0), finding: f });
      if (f.firing) firing.add(key);
      else firing.delete(key);
    }
  }
  return { onsets, evaluations, state };
}

describe('agent rules: coverage of chains', () => {
  it('judges a chain as the view tool_chain_coverage does', () => {
    const a = simContext().agent!;
    expect(chainCovered(a, 3, chainOf(3))).toBe(true); // exact
    expect(chainCovered(a, 5, chainOf(3))).toBe(true); // exact elsewhere
    expect(chainCovered(a, 11, chainOf(11))).toBe(false); // the intent without eval chains
    expect(chainCovered(a, 3, NEW_CHAIN)).toBe(false);
    expect(chainCovered(a, 3, [])).toBeNull();
    // relaxed: every bigram of cluster 3's chains (^→lookup_3, lookup_3→act_3, act_3→$)
    expect(chainCovered({ ...a, chains: [{ cluster: 3, tools: ['a', 'b'] }, { cluster: 3, tools: ['b', 'a'] }] }, 3, ['a', 'b', 'a'])).toBe(true);
  });
});

describe('agent rules: silent without a shift', () => {
  for (const [rate, days, windowSeconds] of [
    [0.05, 6, 300],
    [2, 3, 300],
  ] as const) {
    it(`no alert in ${days} days of session traffic at ${rate} requests/s`, () => {
      const r = run({ seed: 11, days, rate, windowSeconds });
      for (const rule of AGENT_RULES) expect(r.onsets[rule] ?? [], rule).toEqual([]);
      expect(r.evaluations).toBeGreaterThan(100);
    });
  }

  it('stays silent without an agent profile in the context, or when disabled', () => {
    const { agent: _drop, ...bare } = simContext();
    const r = run({ seed: 3, days: 3, rate: 0.5, windowSeconds: 300, change: 86_400_000, shift: { newChain: 0.2, meanTurns: 8 } }, bare);
    expect(r.onsets).toEqual({});
    const off = run({ seed: 3, days: 3, rate: 0.5, windowSeconds: 300, change: 86_400_000, shift: { newChain: 0.2, meanTurns: 8 } }, simContext(), { enabled: false });
    expect(off.onsets).toEqual({});
  });
});

describe('agent rules: fire on a shift', () => {
  it('depth_mix: sessions grow longer (the depth mix moves toward turns the eval set tests less)', () => {
    const r = run({ seed: 5, days: 4, rate: 0.5, windowSeconds: 300, change: 2 * 86_400_000, shift: { meanTurns: 7 } });
    const on = r.onsets.depth_mix ?? [];
    expect(on.length).toBeGreaterThan(0);
    expect(on[0].requestsAfterChange).toBeGreaterThan(0); // not before the change
    expect(on[0].finding.summary).toMatch(/deeper than the eval set tests/);
    expect(r.onsets.untested_chains ?? []).toEqual([]);
  });

  it('depth_mix from the first day: production deeper than any eval case, reported once', () => {
    const r = run({ seed: 6, days: 3, rate: 0.5, windowSeconds: 300 }, simContext({ depthShares: [0.7, 0.3, 0, 0], depthCases: 300 }));
    const on = (r.onsets.depth_mix ?? []).filter((x) => x.finding.scope.agent === 'bot');
    expect(on.length).toBeGreaterThanOrEqual(1);
    expect(on.length).toBeLessThanOrEqual(3); // once per tail at most
    expect(Date.parse(on[0].finding.windowStart) - Date.parse('2026-03-02T00:00:00Z')).toBeLessThan(86_400_000);
    expect(on[0].finding.summary).toMatch(/eval set's cases/);
  });

  it('untested_chains: a new chain on 5% of turns', () => {
    const r = run({ seed: 7, days: 4, rate: 0.5, windowSeconds: 300, change: 2 * 86_400_000, shift: { newChain: 0.05 } });
    const on = r.onsets.untested_chains ?? [];
    expect(on.length).toBeGreaterThan(0);
    expect(on[0].requestsAfterChange).toBeGreaterThan(0);
    expect(on[0].finding.summary).toContain(NEW_CHAIN.join(' → '));
  });

  it("chain_failure: one chain's failure rate triples", () => {
    const r = run({ seed: 8, days: 4, rate: 2, windowSeconds: 300, change: 2 * 86_400_000, shift: { failureFactor: 3 } });
    const on = r.onsets.chain_failure ?? [];
    expect(on.length).toBeGreaterThan(0);
    expect(on[0].requestsAfterChange).toBeGreaterThan(0);
    expect(on[0].finding.summary).toContain(chainOf(0).join(' → '));
    expect(on[0].finding.severity).toBe('critical');
  });
});

describe('agent rules in the composed evaluator', () => {
  it('runs beside the core rules with its own state slice', () => {
    const ev = createEvaluator({}, [createAgentRules()]);
    let state: MonitorState | null = null;
    const ctx = simContext();
    let n = 0;
    for (const w of agentSim({ seed: 2, days: 0.2, rate: 0.5, windowSeconds: 300 })) {
      if (!w.windows.length) continue;
      const r = ev(state, w.windows, ctx);
      state = r.state;
      n += r.findings.filter((f) => AGENT_RULES.includes(f.rule)).length;
    }
    expect(n).toBeGreaterThan(0);
    expect((state as unknown as { sets: Record<string, unknown> }).sets.agent).toBeTruthy();
    // the slice is plain JSON
    const slice = (state as unknown as { sets: Record<string, unknown> }).sets.agent;
    expect(JSON.parse(JSON.stringify(slice))).toEqual(slice);
  });
});
