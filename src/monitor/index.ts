/**
 * The monitor's pure core: detectors, the rules that combine them, backtest and scoring.
 * See README "Monitor: rules and guarantees".
 */
import { evaluateWindow as defaultEvaluate } from './rules.js';
import type { EvaluateWindow } from './types.js';

export const evaluateWindow: EvaluateWindow = defaultEvaluate;
export { createEvaluateWindow, DEFAULT_MONITOR, MonitorOptionsSchema, type MonitorOptions } from './rules.js';
export { backtest, type BacktestAlert, type BacktestOptions, type BacktestResult } from './backtest.js';
export { BernoulliCusum, DirichletMultinomialCusum, sequentialLogBayesFactors, type Verdict } from './detectors.js';
export * from './scoring.js';
export type * from './types.js';

import { z } from 'zod';
import { createEvaluateWindow as create } from './rules.js';

/** The `rules` object of a monitor config file: any subset of MonitorOptions, checked by key. */
export const MonitorRulesSchema = z
  .object({
    arlDays: z.number().positive(),
    referenceDays: z.number().positive(),
    warmupHours: z.number().nonnegative(),
    blockMinutes: z.number().int().positive(),
    minRequests: z.number().int().nonnegative(),
    minEvents: z.number().int().nonnegative(),
    ratios: z.array(z.number().gt(1)).min(1),
    concentration: z.number().positive(),
    budget: z.number().gt(0).lt(1).nullable(),
    resolveWindows: z.number().int().positive(),
    freezeHours: z.number().positive(),
    hourShrink: z.number().nonnegative(),
    recentHalfLifeWindows: z.number().positive(),
    mismatchRatio: z.number().gt(1),
    mismatchMinShare: z.number().min(0).max(1),
    maxDispersion: z.number().gte(1),
    drivers: z.number().int().positive(),
  })
  .partial()
  .strict();

/** An evaluator for a config file's `rules` object (validated; unknown keys are refused by name). */
export function createEvaluator(rules: unknown): EvaluateWindow {
  const r = MonitorRulesSchema.safeParse(rules ?? {});
  if (!r.success) {
    throw new Error(
      'invalid monitor rules:\n' + r.error.issues.map((i) => `  - rules.${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'),
    );
  }
  return create(r.data);
}
