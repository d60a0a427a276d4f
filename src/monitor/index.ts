/**
 * The monitor's pure core: detectors, the rules that combine them, backtest and scoring.
 * See docs/alerts.md, "Rules and guarantees".
 */
import { evaluateWindow as defaultEvaluate } from './rules.js';
import type { EvaluateWindow } from './types.js';

export const evaluateWindow: EvaluateWindow = defaultEvaluate;
export { createEvaluateWindow, DEFAULT_MONITOR, MonitorOptionsSchema, type MonitorOptions } from './rules.js';
export { reportedThresholds, clockThresholds, type UpdateThresholds } from './update-rates.js';
export { backtest, backtestAsync, type BacktestAlert, type BacktestOptions, type BacktestResult } from './backtest.js';
export { BernoulliCusum, DirichletMultinomialCusum, sequentialLogBayesFactors, type Verdict } from './detectors.js';
export * from './scoring.js';
export type * from './types.js';
export { composeEvaluators, type RuleSet, type RuleSetEvaluation } from './compose.js';
export { novelSessionRules, DEFAULT_NOVEL_SESSIONS, NovelSessionsOptionsSchema, novelSessionsThreshold, type NovelSessionsOptions } from './session-novel.js';
export { weightedScoreRules, DEFAULT_WEIGHTED_SCORE, WeightedScoreOptionsSchema, type WeightedScoreOptions } from './score-rules.js';

import { createEvaluateWindow as create, MonitorOptionsSchema as Rules } from './rules.js';
import { composeEvaluators, type RuleSet } from './compose.js';

/**
 * An evaluator for a config file's `rules` object (validated; a bad or unknown key is named), with
 * the rule sets that run beside the core rules (src/monitor/compose.ts).
 */
export function createEvaluator(rules: unknown, sets: readonly RuleSet<any>[] = []): EvaluateWindow {
  const r = Rules.safeParse(rules ?? {});
  if (!r.success) {
    throw new Error(
      'invalid monitor rules:\n' + r.error.issues.map((i) => `  - rules.${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'),
    );
  }
  return composeEvaluators(create(r.data), sets);
}
