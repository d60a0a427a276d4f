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
import { ModelNotInstalledError } from '../embed/embedder.js';
import { isValidSecret, loadMonitorConfig, MonitorConfigError } from '../alert/config.js';
import { fitInput } from './fit-input.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
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
    .argument('[evalset]', 'eval set: JSONL (one case per line) or CSV with a header (none with --add)')
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
    .option('--add <cases>', "extend --model with these cases: refit on its cases plus these, with its parameters unless flags are given")
    .option('--model <dir>', 'with --add: the coverage model to extend')
    .action(async (file: string | undefined, opts, cmd: Command) => {
      const cfg = configFrom(opts);
      if (opts.k !== 'auto' && !(Number.isInteger(Number(opts.k)) && Number(opts.k) >= 1)) {
        throw new InvalidArgumentError('--k must be a positive integer or auto');
      }
      const input = fitInput(file, opts, cmd);
      const k: number | 'auto' = opts.k === 'auto' ? 'auto' : Number(opts.k);
      const embedder = await loadThreadedEmbedder(cfg.embed);
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
          regions: opts.regions,
          nearDuplicateCosine: opts.nearDuplicateCosine,
          ...input.options,
        },
        progress.update,
      ).finally(() => embedder.close());
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
      const embedder = await loadThreadedEmbedder(cfg.embed);
      if (embedder.modelChecksum !== model.manifest.embedding.checksum) {
        await embedder.close();
        loadCoverageModel(opts.model, { expectEmbedding: { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision } });
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
      }).finally(() => embedder.close());
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
    .requiredOption('--model <path>', 'coverage model folder, or a symlink/pointer file to one (e.g. models/coverage/current); a model deployed there later is picked up without a restart')
    .option('--model-poll <ms>', 'how often to check --model for a new model, besides watching it', intArg('--model-poll', 100), 5000)
    .option('--brokers <list>', 'Kafka brokers, host:port[,host:port] (EVALGAP_KAFKA_BROKERS)')
    .option('--topic <name>', 'request-log topic (EVALGAP_TOPIC, default evalgap.requests)')
    .option('--dlq-topic <name>', 'dead-letter topic (EVALGAP_DLQ_TOPIC, default evalgap.requests.dlq)')
    .option('--group <id>', 'consumer group; run more instances with the same group to scale (EVALGAP_GROUP)')
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .option('--redact-text', 'store a keyed HMAC-SHA256 of the query text instead of the text (key: EVALGAP_REDACT_KEY or EVALGAP_REDACT_KEY_FILE)')
    .option('--batch-size <n>', 'texts per onnxruntime call, sorted by token count (EVALGAP_EMBED_BATCH; default 8)', intArg('--batch-size', 1))
    .option('--metrics-port <n>', 'port of /metrics, /healthz and /readyz on 127.0.0.1 (0: any free port)', intArg('--metrics-port', 0))
    .option('--partitions <n>', 'partitions when evalgap creates the topic', intArg('--partitions', 1), 1)
    .option('--monitor', 'also run the monitor (alerts) in this process; see evalgap monitor')
    .option('--monitor-config <file>', 'monitor config file (JSON: rules, receivers) for --monitor (EVALGAP_MONITOR_CONFIG)')
    .option('--gaps-every <duration>', 'discover and store coverage gaps (last 7 days, all agents and each agent) this often; off to disable', (v: string) => (v === 'off' ? v : (parseDuration(v), v)), '1h')
    .action(async (opts) => {
      const cfg = configFrom(opts);
      const { createLogger } = await import('../config/logger.js');
      const { startRun } = await import('./run.js');
      const logger = createLogger(cfg.logLevel);
      // a bad monitor config fails before anything starts
      const mc = opts.monitor ? loadMonitorConfig(opts.monitorConfig ?? process.env.EVALGAP_MONITOR_CONFIG) : null;
      let monitor: Awaited<ReturnType<typeof import('./monitor.js').startMonitor>> | null = null;
      let stopping = false;
      let running: Awaited<ReturnType<typeof startRun>> | null = null;
      // a consumer that crashed for good: exit non-zero (a supervisor restarts it), never linger
      const onFatal = () => {
        if (stopping) return;
        stopping = true;
        process.exitCode = 1;
        const force = setTimeout(() => process.exit(1), 10_000);
        force.unref();
        void (running?.stop() ?? Promise.resolve()).finally(() => process.exit(1));
      };
      running = await startRun(cfg, opts.model, logger, { partitions: opts.partitions, onFatal, modelPollMs: opts.modelPoll }, {
        gapsEveryMs: opts.gapsEvery === 'off' ? 0 : parseDuration(opts.gapsEvery),
      });
      if (mc) {
        const { startMonitor } = await import('./monitor.js');
        monitor = await startMonitor(cfg, mc, opts.model, logger, { store: running.store, registry: running.service.metrics.registry });
      }
      const shutdown = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'stopping: finishing the batch in hand, committing, leaving the group');
        await monitor?.stop();
        await running!.stop();
        logger.info('stopped');
        process.exit(0);
      };
      process.on('SIGINT', () => void shutdown('SIGINT'));
      process.on('SIGTERM', () => void shutdown('SIGTERM'));
    });

  program
    .command('monitor')
    .description('evaluate closed windows of the stored aggregates, alert on coverage drift, deliver signed webhooks')
    .requiredOption('--model <dir>', 'coverage model folder in force (from evalgap fit)')
    .option('--config <file>', 'monitor config file (JSON: rules, receivers, lifecycle; EVALGAP_MONITOR_CONFIG)')
    .option('--once', 'evaluate the windows closed now, wait for the receivers to acknowledge, and exit')
    .option('--status', 'print the eval-set mismatch (production vs eval share per cluster) and the firing alerts, and exit')
    .option('--status-days <n>', 'period of --status, in days', intArg('--status-days', 1), 7)
    .option('--backtest', 'replay stored aggregates and closed sessions through the detectors and print what would have fired (needs --from, --to)')
    .option('--from <time>', 'backtest start (ISO-8601)')
    .option('--to <time>', 'backtest end (ISO-8601, exclusive)')
    .option('--json', 'backtest output as JSON (the notifications in the webhook payload format)')
    .option('--brokers <list>', 'Kafka brokers, host:port[,host:port] (EVALGAP_KAFKA_BROKERS)')
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .option('--metrics-port <n>', 'port of /metrics and /healthz on 127.0.0.1 (0: any free port)', intArg('--metrics-port', 0), 9465)
    .action(async (opts) => {
      const cfg = configFrom({ ...opts, metricsPort: undefined });
      const mc = loadMonitorConfig(opts.config ?? process.env.EVALGAP_MONITOR_CONFIG);
      const { createLogger } = await import('../config/logger.js');
      const logger = createLogger(cfg.logLevel);
      const m = await import('./monitor.js');
      if (opts.status) {
        console.log(await m.monitorStatus(cfg, opts.model, opts.statusDays));
        return;
      }
      if (opts.backtest) {
        const t = (v: unknown, name: string) => {
          if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) throw new InvalidArgumentError(`--backtest needs ${name} as an ISO-8601 time`);
          return new Date(v).toISOString();
        };
        console.log(await m.monitorBacktest(cfg, mc, opts.model, t(opts.from, '--from'), t(opts.to, '--to'), Boolean(opts.json)));
        return;
      }
      if (opts.once) {
        const n = await m.monitorOnce(cfg, mc, opts.model, logger);
        console.log(`${n} notification(s) written to ${mc.alertsTopic}`);
        return;
      }
      const running = await m.startMonitor(cfg, mc, opts.model, logger, { metricsPort: opts.metricsPort });
      let stopping = false;
      const shutdown = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'stopping the monitor: leaving the election, finishing the delivery in hand');
        await running.stop();
        logger.info('stopped');
        process.exit(0);
      };
      process.on('SIGINT', () => void shutdown('SIGINT'));
      process.on('SIGTERM', () => void shutdown('SIGTERM'));
    });

  program
    .command('receive')
    .description('a local webhook receiver that verifies Standard Webhooks signatures and prints each alert (for trying alerts out)')
    .option('--port <n>', 'port on 127.0.0.1', intArg('--port', 0), 8787)
    .option('--secret <whsec>', 'the shared secret (prefer --secret-env or --secret-file)')
    .option('--secret-env <name>', 'environment variable holding the secret')
    .option('--secret-file <file>', 'file holding the secret')
    .action(async (opts) => {
      const secret = opts.secret ?? (opts.secretEnv ? process.env[opts.secretEnv] : undefined) ?? (opts.secretFile ? fs.readFileSync(opts.secretFile, 'utf8').trim() : undefined);
      if (!secret || !isValidSecret(secret)) throw new InvalidArgumentError('give the webhook secret (whsec_… base64) with --secret, --secret-env or --secret-file');
      const { WebhookReceiver } = await import('../alert/receiver.js');
      const r = new WebhookReceiver({
        secret,
        onAlert: (x) => {
          const b = x.body as { kind?: string; alert?: { rule?: string; agent?: string; status?: string; summary?: string; clusters?: { label?: string; examples?: string[] }[] }; text?: string };
          const a = b.alert;
          console.log(`${new Date().toISOString()}  ${x.id}  verified`);
          if (a) {
            console.log(`  ${String(b.kind).toUpperCase()} ${a.rule} agent=${a.agent}: ${a.summary}`);
            for (const c of a.clusters ?? []) console.log(`    ${c.label ?? ''}: ${(c.examples ?? []).map((e) => JSON.stringify(e)).join(', ')}`);
          } else if (b.text) console.log(`  ${b.text}`);
        },
      });
      await r.start(opts.port);
      console.log(`listening on ${r.url} (signatures verified with standardwebhooks; duplicates by webhook-id ignored)`);
      const stop = async () => {
        await r.stop();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop());
      process.on('SIGTERM', () => void stop());
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
      const embedder = opts.mapSample > 0 ? await loadThreadedEmbedder(cfg.embed) : null;
      try {
        const d = await writeReport(store, opts.out, { since, sinceText: opts.since, modelPath, embedder, mapSample: opts.mapSample });
        console.log(
          `wrote ${opts.out}: ${d.totals.requests} requests from ${d.period.first} to ${d.period.last} UTC, ` +
            `${d.gaps.filter((g) => g.status !== 'closed').length} open gap(s) (${d.gaps.filter((g) => g.status === 'closed').length} closed), alerts: ${d.alerts.exists ? d.alerts.rows.length : 'no alerts table yet'}`,
        );
      } finally {
        await embedder?.close();
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

const KNOWN_ERRORS = [UserError, ConfigError, MonitorConfigError, EvalSetError, FitError, ModelLoadError, ModelNotInstalledError, InvalidArgumentError];

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if ((e as Error)?.name === 'StartupError') {
      console.error(`evalgap: ${(e as Error).message}`);
      process.exit(1); // the embedding worker or kafkajs timers must not keep the process up
    }
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
