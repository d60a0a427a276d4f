#!/usr/bin/env node
/**
 * evalgap: where production traffic has left the ground the eval set covers.
 * Commands are thin: parse flags, load config, call the stage modules, print.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, PACKAGE_ROOT, type ConfigOverrides } from '../config/index.js';
import { detectFormat, EvalSetError, parseEvalSet } from '../coverage/evalset.js';
import { DEFAULT_FIT, FitError, fitCoverageModel } from '../coverage/fit.js';
import { loadCoverageModel, ModelLoadError, saveCoverageModel } from '../coverage/model.js';
import { loadEmbedder, ModelNotInstalledError } from '../embed/embedder.js';
import { modelSummary } from './format.js';
import { UserError } from './errors.js';
import { progressReporter } from './progress.js';

const intArg = (name: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}`);
  return n;
};
const rateArg = (v: string) => {
  const n = Number(v);
  if (!(n > 0 && n < 0.5)) throw new InvalidArgumentError('must be a rate between 0 and 0.5, e.g. 0.05');
  return n;
};

const formatArg = (allowed: string[]) => (v: string) => {
  if (!allowed.includes(v)) throw new InvalidArgumentError(`must be one of ${allowed.join(', ')}`);
  return v;
};
/** "7d", "24h", "90m", "2w" → milliseconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([mhdw])$/.exec(v.trim());
  if (!m || Number(m[1]) <= 0) throw new InvalidArgumentError('expected a duration such as 7d, 24h, 90m or 2w');
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'm' | 'h' | 'd' | 'w'];
}

function configFrom(opts: Record<string, unknown>): ReturnType<typeof loadConfig> {
  const o: ConfigOverrides = {
    kafka: {
      brokers: opts.brokers as string | undefined,
      topic: opts.topic as string | undefined,
      dlqTopic: opts.dlqTopic as string | undefined,
      group: opts.group as string | undefined,
    },
    clickhouse: { url: opts.clickhouseUrl as string | undefined, path: opts.dataDir as string | undefined },
    embed: { batchSize: opts.batchSize as number | undefined },
    ingest: { redactText: opts.redactText as boolean | undefined, metricsPort: opts.metricsPort as number | undefined },
  };
  return loadConfig(process.env, o);
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('evalgap')
    .description(
      'Measures where production LLM-agent traffic leaves the ground your eval set covers.\n' +
        'Settings come from EVALGAP_* environment variables (see README) or the flags below.',
    )
    .version(JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')).version)
    .showHelpAfterError();

  program
    .command('fit')
    .description('embed and cluster an eval set into a versioned coverage model')
    .argument('<evalset>', 'eval set: JSONL (one case per line) or CSV with a header')
    .option('--text-field <name>', 'field or column holding the query text', 'query')
    .option('--k <n|auto>', 'number of clusters, or auto (chosen by silhouette)', 'auto')
    .option('--out <dir>', 'model folder (default: models/coverage/<version>)')
    .option('--seed <n>', 'random seed (same seed, same model)', intArg('--seed', 0), DEFAULT_FIT.seed)
    .option('--restarts <n>', 'k-means restarts', intArg('--restarts', 1), DEFAULT_FIT.restarts)
    .option('--neighbours <n>', 'eval cases averaged by the coverage score', intArg('--neighbours', 1), DEFAULT_FIT.neighbours)
    .option('--target-rate <r>', 'calibrated false-uncovered rate', rateArg, DEFAULT_FIT.targetRate)
    .option('--allow-bad-lines', 'fit even when some lines are malformed (they are still listed)')
    .action(async (file: string, opts) => {
      const cfg = configFrom(opts);
      if (!fs.existsSync(file)) throw new EvalSetError(`eval set ${file} does not exist`);
      const content = fs.readFileSync(file, 'utf8');
      const parsed = parseEvalSet(content, detectFormat(file, content), opts.textField);
      for (const e of parsed.errors.slice(0, 20)) console.error(`${file}:${e.line}: ${e.reason}`);
      if (parsed.errors.length > 20) console.error(`… and ${parsed.errors.length - 20} more malformed lines`);
      if (parsed.errors.length && !opts.allowBadLines) {
        throw new EvalSetError(`${parsed.errors.length} malformed line(s) in ${file}; fix them or pass --allow-bad-lines`);
      }
      if (parsed.cases.length === 0) throw new EvalSetError(`${file} holds no eval cases`);
      let k: number | 'auto' = 'auto';
      if (opts.k !== 'auto') {
        k = Number(opts.k);
        if (!Number.isInteger(k) || k < 1) throw new InvalidArgumentError('--k must be a positive integer or auto');
      }
      const embedder = await loadEmbedder(cfg.embed);
      const progress = progressReporter('embedding eval set');
      const out = await fitCoverageModel(
        parsed.cases,
        embedder,
        {
          ...DEFAULT_FIT,
          k,
          seed: opts.seed,
          restarts: opts.restarts,
          neighbours: opts.neighbours,
          targetRate: opts.targetRate,
          source: path.basename(file),
          textField: opts.textField,
        },
        progress.update,
      );
      progress.stop();
      const dir = opts.out ?? path.join(cfg.embed.modelsDir, 'coverage', out.draft.version);
      const manifest = saveCoverageModel(dir, out.draft, out.arrays);
      if (out.kChoice) {
        const best = out.kChoice.scores.find((s) => s.k === out.kChoice!.k);
        console.log(`k=${out.kChoice.k} chosen: ${out.kChoice.criterion}; silhouette ${best?.silhouette.toFixed(4)}`);
        console.log(
          '  scores: ' + out.kChoice.scores.map((s) => `k=${s.k}:${s.silhouette.toFixed(3)}`).join(' '),
        );
      }
      if (out.duplicates) console.log(`${out.duplicates} duplicate case(s) ignored`);
      console.log(modelSummary(manifest));
      console.log(`saved to ${dir}  (fit took ${(out.timings.totalMs / 1000).toFixed(1)} s)`);
    });

  program
    .command('inspect')
    .description('print the summary of a saved coverage model')
    .argument('<model>', 'coverage model folder')
    .option('--json', 'print the manifest as JSON')
    .action((dir: string, opts) => {
      const m = loadCoverageModel(dir);
      console.log(opts.json ? JSON.stringify(m.manifest, null, 2) : modelSummary(m.manifest));
    });

  program
    .command('run')
    .description('consume request logs from Kafka, assign each to eval coverage, store in ClickHouse')
    .requiredOption('--model <dir>', 'coverage model folder (from evalgap fit)')
    .option('--brokers <list>', 'Kafka brokers, host:port[,host:port] (EVALGAP_KAFKA_BROKERS)')
    .option('--topic <name>', 'request-log topic (EVALGAP_TOPIC, default evalgap.requests)')
    .option('--dlq-topic <name>', 'dead-letter topic (EVALGAP_DLQ_TOPIC, default evalgap.requests.dlq)')
    .option('--group <id>', 'consumer group; run more instances with the same group to scale (EVALGAP_GROUP)')
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .option('--redact-text', 'store a sha256 of the query text instead of the text')
    .option('--batch-size <n>', 'embedding sub-batch size (EVALGAP_EMBED_BATCH)', intArg('--batch-size', 1))
    .option('--metrics-port <n>', 'port of /metrics and /healthz on 127.0.0.1 (0: any free port)', intArg('--metrics-port', 0))
    .option('--partitions <n>', 'partitions when evalgap creates the topic', intArg('--partitions', 1), 1)
    .option('--gaps-every <duration>', 'discover and store coverage gaps (last 7 days, all agents and each agent) this often; off to disable', (v: string) => (v === 'off' ? v : (parseDuration(v), v)), '1h')
    .action(async (opts) => {
      const cfg = configFrom(opts);
      const { createLogger } = await import('../config/logger.js');
      const { startRun } = await import('./run.js');
      const logger = createLogger(cfg.logLevel);
      const running = await startRun(cfg, opts.model, logger, { partitions: opts.partitions }, {
        gapsEveryMs: opts.gapsEvery === 'off' ? 0 : parseDuration(opts.gapsEvery),
      });
      let stopping = false;
      const shutdown = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'stopping: finishing the batch in hand, committing, leaving the group');
        await running.stop();
        logger.info('stopped');
        process.exit(0);
      };
      process.on('SIGINT', () => void shutdown('SIGINT'));
      process.on('SIGTERM', () => void shutdown('SIGTERM'));
    });

  program
    .command('produce')
    .description('publish request logs from a JSONL file (one JSON object per line) to the request topic')
    .argument('<file>', 'JSONL file of request logs')
    .option('--brokers <list>', 'Kafka brokers (EVALGAP_KAFKA_BROKERS)')
    .option('--topic <name>', 'topic (EVALGAP_TOPIC)')
    .action(async (file: string, opts) => {
      const cfg = configFrom(opts);
      const { createKafka, produceJson } = await import('../ingest/kafka.js');
      const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/).filter((l) => l.trim());
      const kafka = createKafka(cfg.kafka);
      const producer = kafka.producer();
      await producer.connect();
      await produceJson(producer, cfg.kafka.topic, lines);
      await producer.disconnect();
      console.log(`published ${lines.length} message(s) to ${cfg.kafka.topic}`);
    });

  const storeOptions = (c: Command) =>
    c
      .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
      .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)');
  const durationArg = (v: string) => (parseDuration(v), v);

  storeOptions(
    program
      .command('gaps')
      .description('group the uncovered traffic of a period into coverage gaps, ranked by priority (volume × risk), and store them')
      .option('--since <duration>', 'period to look back: 7d, 24h, 90m, 2w', durationArg, '7d')
      .option('--agent <name>', "one agent's traffic (default: all agents)")
      .option('--format <format>', 'table or json', formatArg(['table', 'json']), 'table')
      .option('--model-version <v>', "rows scored by this coverage model: latest (the period's latest request's), all, or a version", 'latest')
      .option('--examples <n>', 'examples printed per gap', intArg('--examples', 0), 3)
      .option('--no-store', 'print only; do not write coverage_gaps / gap_members'),
  ).action(async (opts) => {
    const { gapsCommand } = await import('./gaps.js');
    await gapsCommand(configFrom(opts), {
      since: parseDuration(opts.since),
      agent: opts.agent,
      format: opts.format,
      modelVersion: opts.modelVersion,
      store: opts.store,
      examples: opts.examples,
    });
  });

  storeOptions(
    program
      .command('export-gaps')
      .description('write candidate eval cases from the coverage gaps (JSONL that evalgap fit reads), deduplicated, stratified by priority')
      .requiredOption('--out <file>', 'JSONL file to write')
      .option('--per-gap <n>', 'cases per gap at most (≤ 25, the examples kept per gap)', intArg('--per-gap', 1), 10)
      .option('--budget <n>', 'cases in all at most, shared across gaps by priority', intArg('--budget', 1))
      .option('--since <duration>', 'period to look back', durationArg, '7d')
      .option('--agent <name>', "one agent's gaps (default: all agents)")
      .option('--model-version <v>', 'latest, all, or a coverage model version', 'latest'),
  ).action(async (opts) => {
    const { exportGapsCommand } = await import('./gaps.js');
    await exportGapsCommand(configFrom(opts), {
      out: opts.out,
      perGap: opts.perGap,
      budget: opts.budget,
      agent: opts.agent,
      since: parseDuration(opts.since),
      modelVersion: opts.modelVersion,
    });
  });

  storeOptions(
    program
      .command('sql')
      .description(
        'run a read-only SQL query against the store (embedded or server); while evalgap run holds the\n' +
          'embedded data folder, the query goes to its read-only POST /query endpoint instead (said on stderr)',
      )
      .argument('<query>', 'SQL, e.g. "SELECT * FROM evalgap.latest_gaps"; bind values with {name:Type} and --param')
      .option('--format <format>', 'table, json or jsonl', formatArg(['table', 'json', 'jsonl']), 'table')
      .option('--param <name=value>', 'a query parameter (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[]),
  ).action(async (query: string, opts) => {
    const { sqlCommand } = await import('./gaps.js');
    await sqlCommand(configFrom(opts), query, { format: opts.format, param: opts.param });
  });

  program
    .command('demo')
    .description('end to end on bundled sample data: services, Kafka, model, ClickHouse')
    .option('--dir <dir>', "folder of the demo's eval set, coverage model and embedded ClickHouse data; those are replaced on each run", '.evalgap/demo')
    .action(async (opts) => {
      const { runDemo } = await import('./demo.js');
      await runDemo(configFrom(opts), path.resolve(opts.dir));
    });

  return program;
}

const KNOWN_ERRORS = [UserError, ConfigError, EvalSetError, FitError, ModelLoadError, ModelNotInstalledError, InvalidArgumentError];

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (KNOWN_ERRORS.some((k) => e instanceof k)) {
      console.error(`evalgap: ${(e as Error).message}`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(new URL(import.meta.url).pathname)) {
  void main();
}
