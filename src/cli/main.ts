#!/usr/bin/env node
/**
 * evalgap: where production traffic has left the ground the eval set covers.
 * Commands are thin: parse flags, load config, call the stage modules, print.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, PACKAGE_ROOT, type ConfigOverrides } from '../config/index.js';
import { EvalSetError } from '../coverage/evalset.js';
import { DEFAULT_FIT, FitError, fitCoverageModel } from '../coverage/fit.js';
import { loadCoverageModel, ModelLoadError, saveCoverageModel } from '../coverage/model.js';
import { loadEmbedder, ModelNotInstalledError } from '../embed/embedder.js';
import { fitInput } from './fit-input.js';
import { modelSummary } from './format.js';
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
    .argument('[evalset]', 'eval set: JSONL (one case per line) or CSV with a header (none with --add)')
    .option('--text-field <name>', 'field or column holding the query text', 'query')
    .option('--k <n|auto>', 'number of clusters, or auto (chosen by silhouette)', 'auto')
    .option('--out <dir>', 'model folder (default: models/coverage/<version>)')
    .option('--seed <n>', 'random seed (same seed, same model)', intArg('--seed', 0), DEFAULT_FIT.seed)
    .option('--restarts <n>', 'k-means restarts', intArg('--restarts', 1), DEFAULT_FIT.restarts)
    .option('--neighbours <n>', 'eval cases averaged by the coverage score', intArg('--neighbours', 1), DEFAULT_FIT.neighbours)
    .option('--target-rate <r>', 'calibrated false-uncovered rate', rateArg, DEFAULT_FIT.targetRate)
    .option('--allow-bad-lines', 'fit even when some lines are malformed (they are still listed)')
    .option('--add <cases>', "extend --model with these cases: refit on its cases plus these, with its parameters unless flags are given")
    .option('--model <dir>', 'with --add: the coverage model to extend')
    .action(async (file: string | undefined, opts, cmd: Command) => {
      const cfg = configFrom(opts);
      if (opts.k !== 'auto' && !(Number.isInteger(Number(opts.k)) && Number(opts.k) >= 1)) {
        throw new InvalidArgumentError('--k must be a positive integer or auto');
      }
      const input = fitInput(file, opts, cmd);
      const k: number | 'auto' = opts.k === 'auto' ? 'auto' : Number(opts.k);
      const embedder = await loadEmbedder(cfg.embed);
      const progress = progressReporter('embedding eval set');
      const out = await fitCoverageModel(
        input.cases,
        embedder,
        {
          ...DEFAULT_FIT,
          k,
          seed: opts.seed,
          restarts: opts.restarts,
          neighbours: opts.neighbours,
          targetRate: opts.targetRate,
          ...input.options,
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
    .requiredOption('--model <path>', 'coverage model folder, or a symlink/pointer file to one (e.g. models/coverage/current); a model deployed there later is picked up without a restart')
    .option('--model-poll <ms>', 'how often to check --model for a new model, besides watching it', intArg('--model-poll', 100), 5000)
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
    .action(async (opts) => {
      const cfg = configFrom(opts);
      const { createLogger } = await import('../config/logger.js');
      const { startRun } = await import('./run.js');
      const logger = createLogger(cfg.logLevel);
      const running = await startRun(cfg, opts.model, logger, { partitions: opts.partitions, modelPollMs: opts.modelPoll });
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
    .command('deploy')
    .description('make a coverage model the current one: atomically repoint the symlink a running evalgap run watches')
    .argument('<model>', 'coverage model folder (from evalgap fit)')
    .option('--current <path>', 'the symlink to repoint (default: <models dir>/coverage/current)')
    .action(async (dir: string, opts) => {
      const cfg = configFrom(opts);
      const { deployModel } = await import('../ingest/model-watch.js');
      const current = opts.current ?? path.join(cfg.embed.modelsDir, 'coverage', 'current');
      const version = deployModel(dir, current);
      console.log(`${current} → ${dir} (${version}); a running evalgap run --model ${current} switches to it between batches`);
    });

  program
    .command('report')
    .description('write one self-contained HTML report (opens offline): coverage over time, cluster shares, escalation, a map, gaps, alerts')
    .option('--out <file>', 'HTML file to write', 'report.html')
    .option('--since <period>', 'period: a duration (30m, 12h, 7d, 2w) or a date', '7d')
    .option('--model <path>', 'coverage model folder or symlink, for the map (default: <models dir>/coverage/current)')
    .option('--map-sample <n>', 'production queries sampled (and embedded) for the map', intArg('--map-sample', 0), 400)
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .action(async (opts) => {
      const cfg = configFrom(opts);
      const { parseSince, writeReport } = await import('./report.js');
      const { Store } = await import('../store/store.js');
      let since: Date;
      try {
        since = parseSince(opts.since);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
      const modelPath = opts.model ?? path.join(cfg.embed.modelsDir, 'coverage', 'current');
      const store = await Store.open(cfg.clickhouse);
      const embedder = opts.mapSample > 0 ? await loadEmbedder(cfg.embed) : null;
      try {
        const d = await writeReport(store, opts.out, { since, sinceText: opts.since, modelPath, embedder, mapSample: opts.mapSample });
        console.log(
          `wrote ${opts.out}: ${d.totals.requests} requests from ${d.period.first} to ${d.period.last} UTC, ` +
            `${d.gaps.length} gap(s), alerts: ${d.alerts.exists ? d.alerts.rows.length : 'no alerts table yet'}`,
        );
      } finally {
        await store.close();
      }
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

const KNOWN_ERRORS = [ConfigError, EvalSetError, FitError, ModelLoadError, ModelNotInstalledError, InvalidArgumentError];

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
