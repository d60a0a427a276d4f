/**
 * Backtest: replay stored windows through the same rules and list the alerts that would have fired.
 * Pure: the caller (evalgap monitor --backtest) reads the windows from the store.
 */
import { breather } from '../config/breathe.js';
import { createEvaluateWindow, type MonitorOptions } from './rules.js';
import type { EvaluateWindow, MonitorContext, MonitorState, RuleName, Scope, TrendRow, Effect, Severity, WindowCounts } from './types.js';

export interface BacktestAlert {
  rule: RuleName;
  scope: Scope;
  severity: Severity;
  /** window start at which the episode began firing (ISO) */
  onset: string;
  /** the statistic and threshold at onset */
  statistic: number;
  threshold: number;
  effect: Effect;
  summary: string;
  clusters: number[];
  /** window end at which it resolved (null: still firing at the end of the replay) */
  resolvedAt: string | null;
}

export interface BacktestResult {
  windows: number;
  alerts: BacktestAlert[];
  notices: string[];
  /** the final state, to continue from */
  state: MonitorState | null;
  trends?: TrendRow[];
}

export interface BacktestOptions {
  monitor?: Partial<MonitorOptions>;
  /** an evaluate function to use instead (tests) */
  evaluate?: EvaluateWindow;
  /** state to start from (default: none, references warm up from the first window) */
  state?: MonitorState | null;
  /** keep the trend rows (default false: they are many) */
  trends?: boolean;
  /** keep eval_mismatch notices out of the alert list (default false) */
  skipInfo?: boolean;
}

/** One replay's accumulator, shared by backtest and backtestAsync: windows in, alerts out. */
function replay(ctx: MonitorContext, opts: BacktestOptions): { push(w: WindowCounts[]): void; result(): BacktestResult } {
  const evaluate = opts.evaluate ?? createEvaluateWindow({ output: opts.trends ? 'all' : 'changes', ...opts.monitor });
  let state = opts.state ?? null;
  const open = new Map<string, BacktestAlert>();
  const alerts: BacktestAlert[] = [];
  const notices: string[] = [];
  const trends: TrendRow[] = [];
  let count = 0;
  return {
    push(w) {
      if (w.length === 0) return;
      count++;
      const r = evaluate(state, w, ctx);
      state = r.state;
      notices.push(...r.notices.map((n) => `${w[0].start}: ${n}`));
      if (opts.trends) trends.push(...r.trends);
      for (const f of r.findings) {
        if (opts.skipInfo && f.severity === 'info') continue;
        const key = `${f.rule}|${f.scope.agent}|${f.scope.cluster ?? ''}`;
        const a = open.get(key);
        if (f.firing && !a) {
          const alert: BacktestAlert = {
            rule: f.rule,
            scope: f.scope,
            severity: f.severity,
            onset: f.onset ?? f.windowStart,
            statistic: f.statistic,
            threshold: f.threshold,
            effect: f.effect,
            summary: f.summary,
            clusters: f.clusters.map((c) => c.cluster),
            resolvedAt: null,
          };
          open.set(key, alert);
          alerts.push(alert);
        } else if (!f.firing && a) {
          a.resolvedAt = f.windowEnd;
          open.delete(key);
        }
      }
    },
    result: () => ({ windows: count, alerts, notices, state, ...(opts.trends ? { trends } : {}) }),
  };
}

/**
 * Replays `windows` (each item: every agent's counts of one closed window, in time order) and
 * returns the alerts that would have fired, with onset, statistic and resolution time.
 */
export function backtest(windows: Iterable<WindowCounts[]>, ctx: MonitorContext, opts: BacktestOptions = {}): BacktestResult {
  const r = replay(ctx, opts);
  for (const w of windows) r.push(w);
  return r.result();
}

/**
 * The same replay, handing the event loop a turn whenever `yieldMs` of work has passed since the
 * last one (default 250 ms; src/config/breathe.ts): weeks of windows take minutes, and a process that
 * also answers messages (a test runner's, a server's) must not go silent that long. The result is
 * the same as backtest's: when it yields changes nothing the replay computes.
 */
export async function backtestAsync(
  windows: Iterable<WindowCounts[]> | AsyncIterable<WindowCounts[]>,
  ctx: MonitorContext,
  opts: BacktestOptions & { yieldMs?: number } = {},
): Promise<BacktestResult> {
  const r = replay(ctx, opts);
  const breathe = breather(opts.yieldMs);
  for await (const w of windows) {
    r.push(w);
    await breathe();
  }
  return r.result();
}
