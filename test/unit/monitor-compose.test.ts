import { describe, expect, it } from 'vitest';
import { composeEvaluators, createEvaluator, type RuleSet } from '../../src/monitor/index.js';
import type { EvaluateWindow, MonitorContext, WindowCounts } from '../../src/monitor/types.js';

const ctx: MonitorContext = { modelVersion: 'm1', calibratedRate: 0.05, evalShares: { 0: 0.5, 1: 0.5 } };
const win = (i: number): WindowCounts => ({
  start: new Date(Date.UTC(2026, 0, 1, 0, 0, 30 * i)).toISOString(),
  end: new Date(Date.UTC(2026, 0, 1, 0, 0, 30 * (i + 1))).toISOString(),
  agent: 'a',
  modelVersion: 'm1',
  clusters: [
    { cluster: 0, requests: 10, uncovered: 0, escalated: 0, refused: 0, failed: 0 },
    { cluster: 1, requests: 10, uncovered: 1, escalated: 0, refused: 0, failed: 0 },
  ],
});

/** counts the windows it saw in its own slice of the state */
const counter: RuleSet<{ n: number }> = {
  key: 'counter',
  evaluate: (s, windows) => ({ state: { n: (s?.n ?? 0) + windows.length }, findings: [], trends: [], notices: s ? [] : ['counter started'] }),
};

describe('composeEvaluators', () => {
  it('keeps each rule set its own state slice across windows and hides it from the core', () => {
    const seen: unknown[] = [];
    const core: EvaluateWindow = (state) => {
      seen.push(state);
      return { state: { version: 1, modelVersion: 'm1', core: ((state?.core as number) ?? 0) + 1 }, findings: [], trends: [], notices: [] };
    };
    const ev = composeEvaluators(core, [counter]);
    let st = null as ReturnType<EvaluateWindow>['state'] | null;
    const notices: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = ev(st, [win(i)], ctx);
      st = JSON.parse(JSON.stringify(r.state)); // checkpointed as JSON by the runner
      notices.push(...r.notices);
    }
    expect((st as any).sets.counter.n).toBe(3);
    expect((st as any).core).toBe(3);
    expect(seen.every((s) => s === null || !('sets' in (s as object)))).toBe(true);
    expect(notices).toEqual(['counter started']);
  });

  it('refuses two rule sets with one key, and is the core itself without rule sets', () => {
    const core: EvaluateWindow = () => ({ state: { version: 1, modelVersion: 'm1' }, findings: [], trends: [], notices: [] });
    expect(() => composeEvaluators(core, [counter, counter])).toThrow(/counter/);
    expect(composeEvaluators(core, [])).toBe(core);
  });

  it('runs the real core rules with a rule set beside them', () => {
    const ev = createEvaluator({}, [counter]);
    const r1 = ev(null, [win(0)], ctx);
    const r2 = ev(JSON.parse(JSON.stringify(r1.state)), [win(1)], ctx);
    expect((r2.state as any).sets.counter.n).toBe(2);
    expect(r2.state.modelVersion).toBe('m1');
  });
});
