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
