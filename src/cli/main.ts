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
    .argument('<evalset>', 'eval set: JSONL (one case per line) or CSV with a header')
    .option('--text-field <name>', 'field or column holding the query text', 'query')
    .option('--k <n|auto>', 'number of clusters, or auto (chosen by silhouette)', 'auto')
    .option('--out <dir>', 'model folder (default: models/coverage/<version>)')
    .option('--seed <n>', 'random seed (same seed, same model)', intArg('--seed', 0), DEFAULT_FIT.seed)
    .option('--restarts <n>', 'k-means restarts', intArg('--restarts', 1), DEFAULT_FIT.restarts)
    .option('--neighbours <n>', 'eval cases averaged by the coverage score', intArg('--neighbours', 1), DEFAULT_FIT.neighbours)
    .option('--target-rate <r>', 'calibrated false-uncovered rate', rateArg, DEFAULT_FIT.targetRate)
    .option(
      '--near-duplicate-cosine <c>',
      'calibration leaves out each case\'s neighbours at this cosine or above (1: only the case itself)',
      (v: string) => {
        const n = Number(v);
        if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('must be a cosine in (0, 1], e.g. 0.95');
        return n;
      },
      DEFAULT_FIT.nearDuplicateCosine,
    )
    .addOption(
      new Option('--regions <how>', 'calibrate a threshold per cluster or per tag; auto: per tag when ≥ 90% of cases are tagged')
        .choices(['auto', 'clusters', 'tags'])
        .default(DEFAULT_FIT.regions),
    )
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
          regions: opts.regions,
          nearDuplicateCosine: opts.nearDuplicateCosine,
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
    .command('score')
    .description('score a JSONL file of queries offline: one JSON line per input line (cluster, runner-up, coverage, covered)')
    .argument('<queries>', 'JSONL file, one query object per line ("-" for standard input)')
    .requiredOption('--model <dir>', 'coverage model folder (from evalgap fit)')
    .option('--text-field <name>', 'field holding the query text', 'query')
    .option('--out <file>', 'write the results there instead of standard output')
    .action(async (file: string, opts) => {
      const cfg = configFrom(opts);
      const { CoverageAssigner } = await import('../coverage/model.js');
      const { parseQueryLine, scoreQueries } = await import('../coverage/score.js');
      if (file !== '-' && !fs.existsSync(file)) throw new EvalSetError(`queries file ${file} does not exist`);
      const model = loadCoverageModel(opts.model);
      const embedder = await loadEmbedder(cfg.embed);
      if (embedder.modelChecksum !== model.manifest.embedding.checksum) {
        loadCoverageModel(opts.model, { expectEmbedding: { model: embedder.modelName, checksum: embedder.modelChecksum } });
      }
      const content = fs.readFileSync(file === '-' ? 0 : file, 'utf8').replace(/^\uFEFF/, '');
      const items = content
        .split(/\r?\n/)
        .map((raw, i) => (raw.trim() ? parseQueryLine(raw, i + 1, opts.textField) : null))
        .filter((x) => x !== null);
      const out = opts.out ? fs.openSync(opts.out, 'w') : 1;
      const name = file === '-' ? 'stdin' : file;
      const res = await scoreQueries(items, embedder, new CoverageAssigner(model), (r) => {
        fs.writeSync(out, JSON.stringify(r) + '\n');
        if ('error' in r) console.error(`${name}:${r.line}: ${r.error}`);
      });
      if (opts.out) fs.closeSync(out);
      console.error(
        `scored ${res.scored} quer${res.scored === 1 ? 'y' : 'ies'} with model ${model.manifest.version}: ` +
          `${res.uncovered} uncovered (${res.scored ? ((100 * res.uncovered) / res.scored).toFixed(1) : '0.0'}%; ` +
          `expected under no shift ${(100 * model.manifest.calibration.expectedRate).toFixed(1)}%)` +
          (res.bad ? `; ${res.bad} bad line(s), reported above and as {"line","error"} results` : ''),
      );
      if (res.bad) process.exitCode = 1;
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
    .action(async (opts) => {
      const cfg = configFrom(opts);
      const { createLogger } = await import('../config/logger.js');
      const { startRun } = await import('./run.js');
      const logger = createLogger(cfg.logLevel);
      const running = await startRun(cfg, opts.model, logger, { partitions: opts.partitions });
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
