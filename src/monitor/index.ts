/**
 * The monitor's pure core: detectors, the rules that combine them, backtest and scoring.
 * See docs/alerts.md, "Rules and guarantees".
 */
import { evaluateWindow as defaultEvaluate } from './rules.js';
import type { EvaluateWindow } from './types.js';

export const evaluateWindow: EvaluateWindow = defaultEvaluate;
export { createEvaluateWindow, DEFAULT_MONITOR, MonitorOptionsSchema, type MonitorOptions } from './rules.js';
export { backtest, type BacktestAlert, type BacktestOptions, type BacktestResult } from './backtest.js';
export { BernoulliCusum, DirichletMultinomialCusum, sequentialLogBayesFactors, type Verdict } from './detectors.js';
export * from './scoring.js';
export type * from './types.js';

import { createEvaluateWindow as create, MonitorOptionsSchema as Rules } from './rules.js';

/** An evaluator for a config file's `rules` object (validated; a bad or unknown key is named). */
export function createEvaluator(rules: unknown): EvaluateWindow {
  const r = Rules.safeParse(rules ?? {});
  if (!r.success) {
    throw new Error(
      'invalid monitor rules:\n' + r.error.issues.map((i) => `  - rules.${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'),
    );
  }
  return create(r.data);
}
