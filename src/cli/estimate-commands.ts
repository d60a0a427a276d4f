/** The flags of `evalgap results`, `estimate` and `plan` (the work is in ./estimate.ts, loaded when one runs). */
import { Command, InvalidArgumentError } from 'commander';
import type { Config } from '../config/index.js';
import { parseSince, TIME_FORMS } from './period.js';

export { parseSince } from './period.js';

type ConfigFrom = (opts: Record<string, unknown>) => Config;

const timeArg = (name: string) => (v: string) => {
  try {
    parseSince(v);
  } catch {
    throw new InvalidArgumentError(`${name} must be ${TIME_FORMS}`);
  }
  return v;
};

const levelArg = (v: string) => {
  const n = Number(v);
  if (!(n >= 0.5 && n < 1)) throw new InvalidArgumentError('must be an interval level in [0.5, 1), e.g. 0.9');
  return n;
};

export function registerEstimateCommands(
  program: Command,
  storeOptions: (c: Command) => Command,
  configFrom: ConfigFrom,
  intArg: (name: string, min: number) => (v: string) => number,
  formatArg: (allowed: string[]) => (v: string) => string,
): void {
  program
    .command('results')
    .description('store an eval run\'s per-case results (JSONL: {"id", "passed"} or {"id", "score"}, optional "scores": {metric: 0–1}) against a coverage model\'s cases, for evalgap estimate')
    .argument('<file>', 'JSONL file of results, one case per line, matched to the model\'s cases by "id" (- reads standard input)')
    .requiredOption('--model <dir>', 'the coverage model whose eval set was run (from evalgap fit)')
    .option('--run-id <id>', "eval run id (default: run-<sha256 of the file, 12 hex>). A run is replaced whole: another file under the same run id and model replaces all of the run's results, and the same file again changes nothing")
    .option('--allow-bad-lines', 'store the good results even when some lines are malformed or name no case (they are still listed)')
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .action(async (file: string, opts) => {
      const { resultsCommand } = await import('./estimate.js');
      await resultsCommand(configFrom(opts), file, { model: opts.model, runId: opts.runId, allowBadLines: opts.allowBadLines });
    });

  const windowOptions = (c: Command) =>
    storeOptions(
      c
        .option('--since <time>', 'period start: a duration ago (30m, 12h, 7d, 2w) or a date', timeArg('--since'), '7d')
        .option('--until <time>', 'period end (exclusive): a duration ago or a date (default: now)', timeArg('--until'))
        .option('--agent <name>', "one agent's traffic (default: all agents)")
        .option('--model-version <v>', "coverage model: latest (the period's latest request's) or a version", 'latest')
        .option('--run-id <id>', 'eval run (default: the latest stored for the model)')
        .option('--metric <name>', 'a per-metric score of the run instead of passed/score')
        .option('--within-cluster <mode>', "tilt: correct for production's lean toward the failing tags inside clusters (as far as it leans toward failing clusters) and widen the interval for it; off: plain post-stratification (docs/estimate.md)", formatArg(['tilt', 'off']), 'tilt')
        .option('--level <p>', 'interval level', levelArg, 0.9)
        .option('--format <format>', 'table or json', formatArg(['table', 'json']), 'table'),
    );
  const window = (opts: Record<string, unknown>) => {
    const now = new Date();
    return {
      since: parseSince(opts.since as string, now),
      until: opts.until ? parseSince(opts.until as string, now) : now,
      agent: opts.agent as string | undefined,
      modelVersion: opts.modelVersion as string,
      runId: opts.runId as string | undefined,
      metric: opts.metric as string | undefined,
      level: opts.level as number,
      withinCluster: opts.withinCluster as 'tilt' | 'off',
      format: opts.format as 'table' | 'json',
    };
  };

  windowOptions(
    program
      .command('estimate')
      .description('the eval score reweighted to production traffic (post-stratified by eval cluster, with an interval), the untested share and its bounds, per agent and day; stores one row per day in production_weighted_score')
      .option('--no-store', 'print only; do not write production_weighted_score'),
  ).action(async (opts) => {
    const { estimateCommand } = await import('./estimate.js');
    await estimateCommand(configFrom(opts), { ...window(opts), store: opts.store });
  });

  windowOptions(
    program
      .command('plan')
      .description('where N new eval cases most narrow the production-weighted score: Neyman allocation over the clusters and the untested gaps, with production queries to start from')
      .requiredOption('--budget <n>', 'new eval cases to place', intArg('--budget', 1))
      .option('--covered-only', 'spend the budget on the covered clusters only (the score evalgap estimate reports), not on the gaps')
      .option('--examples <n>', 'example production queries printed per cluster or gap', intArg('--examples', 0), 3)
      .option('--out <file>', 'also write the candidate cases (JSONL that evalgap fit reads: the example queries, up to each allocation)'),
  ).action(async (opts) => {
    const { planCommand } = await import('./estimate.js');
    await planCommand(configFrom(opts), { ...window(opts), budget: opts.budget, coveredOnly: Boolean(opts.coveredOnly), examples: opts.examples, out: opts.out });
  });
}
