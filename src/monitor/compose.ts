/**
 * Rule sets beside the core rules (rules.ts): each is a pure evaluator of the same closed windows
 * with its own slice of the checkpointed state, so that a new family of rules (agent depth and tool
 * chains, the production-weighted eval score, …) lives in its own file and shares the runner's
 * lifecycle, outbox, webhooks and restarts without touching the core.
 *
 * State layout: the core's state object, plus `sets: { [key]: slice }`. The core never sees `sets`
 * (it is removed before the core runs and put back after), so a core reset (a new model version)
 * leaves each set to decide from `ctx.modelVersion` whether its own slice restarts.
 */
import type { EvaluateWindow, Finding, MonitorContext, MonitorEvaluation, MonitorState, TrendRow, WindowCounts } from './types.js';

export interface RuleSetEvaluation<S> {
  state: S;
  findings: Finding[];
  trends: TrendRow[];
  notices: string[];
}

/** A family of rules evaluated on every closed window after the core rules. Pure: no I/O, no clock. */
export interface RuleSet<S = unknown> {
  /** key of this set's slice in the checkpointed state; stable across releases */
  key: string;
  evaluate(state: S | null, windows: WindowCounts[], ctx: MonitorContext): RuleSetEvaluation<S>;
}

type Composite = MonitorState & { sets?: Record<string, unknown> };

/** One EvaluateWindow out of the core's and the rule sets' (findings concatenated, core first). */
export function composeEvaluators(core: EvaluateWindow, sets: readonly RuleSet<any>[]): EvaluateWindow {
  if (!sets.length) return core;
  const keys = new Set<string>();
  for (const s of sets) {
    if (keys.has(s.key)) throw new Error(`two monitor rule sets share the state key "${s.key}"`);
    keys.add(s.key);
  }
  return (state, windows, ctx): MonitorEvaluation => {
    const prev = state as Composite | null;
    let coreState: MonitorState | null = null;
    if (prev) {
      const { sets: _drop, ...rest } = prev;
      coreState = rest as MonitorState;
    }
    const out = core(coreState, windows, ctx);
    const slices: Record<string, unknown> = {};
    const findings = out.findings.slice();
    const trends = out.trends.slice();
    const notices = out.notices.slice();
    for (const s of sets) {
      const r = s.evaluate((prev?.sets?.[s.key] as never) ?? null, windows, ctx);
      slices[s.key] = r.state;
      findings.push(...r.findings);
      trends.push(...r.trends);
      notices.push(...r.notices);
    }
    return { state: { ...out.state, sets: slices } as MonitorState, findings, trends, notices };
  };
}
