#!/usr/bin/env node
/**
 * evalgap: where production traffic has left the ground the eval set covers.
 * Commands are thin: parse flags, load config, call the stage modules, print.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, PACKAGE_ROOT, type ConfigOverrides } from '../config/index.js';
import { EvalSetError } from '../coverage/evalset.js';
import { DEFAULT_FIT, FitError, fitCoverageModel } from '../coverage/fit.js';
import { loadCoverageModel, ModelLoadError, saveCoverageModel } from '../coverage/model.js';
import { embeddingOf, installedEmbedding, ModelNotInstalledError } from '../embed/embedder.js';
import { isValidSecret, loadGuardConfig, loadMonitorConfig, MonitorConfigError } from '../alert/config.js';
import { fitInput } from './fit-input.js';
import { saveAgentFile } from '../coverage/agent.js';
import { loadThreadedEmbedder } from '../embed/threaded.js';
import { calibrationWarnings, escapeControl, modelSummary } from './format.js';
import { checkInputFile, checkOutputFile, readTextInput, utf8Warning } from './input.js';
import { UserError } from './errors.js';
import { openOwnStore } from './open-store.js';
import { StoreUnavailableError } from '../store/store.js';
import { DeployError } from '../ingest/model-watch.js';
import { progressReporter } from './progress.js';
import { registerEstimateCommands } from './estimate-commands.js';

const intArg = (name: string, min: number, max = Infinity) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}${max < Infinity ? ` and ≤ ${max}` : ''}`);
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
    otlp: { topic: opts.otlpTopic as string | undefined },
  };
  return loadConfig(process.env, o);
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('evalgap')
    .description(
      'Measures where production LLM-agent traffic leaves the ground your eval set covers.\n' +
        'Settings come from EVALGAP_* environment variables (docs/configuration.md); some commands take flags that override them (see each command\'s --help).\n' +
        `Docs: README.md and docs/ in ${PACKAGE_ROOT} (docs/README.md lists the pages).`,
    )
    .version(JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')).version)
    .showHelpAfterError()
    // commander's own usage errors (unknown option, bad option value, missing argument) are thrown
    // to main(), which exits 2 as for every other usage error; --help and --version still exit 0.
    // Set before the commands are added: each inherits it.
    .exitOverride();

  program
    .command('fit')
    .description('embed and cluster an eval set into a versioned coverage model')
    .argument('[evalset]', 'eval set: JSONL (one case per line) or CSV with a header (none with --add)')
    .option('--text-field <name>', 'field or column holding the query text', 'query')
    .option('--k <n|auto>', 'number of clusters, or auto (chosen by silhouette)', 'auto')
    .option('--out <dir>', 'model folder, new or empty (default: <models dir>/coverage/<version>, EVALGAP_MODELS_DIR); a folder holding a model is refused, a symlink too')
    .option('--force', 'with --out: replace the coverage model already in that folder')
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
      if (opts.out) checkFitOut(opts.out, Boolean(opts.force));
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
      // conversation depth and expected tool chains of the cases that give them (agent.json)
      const agentCases = new Map<string, { turn?: number; tools?: string[] }>();
      for (const c of input.cases) if ((c.turn !== undefined || c.tools !== undefined) && !agentCases.has(c.id)) agentCases.set(c.id, { turn: c.turn, tools: c.tools });
      const kept = loadCoverageModel(dir).cases.filter((c) => agentCases.has(c.id)).map((c) => ({ id: c.id, ...agentCases.get(c.id)! }));
      if (saveAgentFile(dir, manifest.version, kept)) {
        console.log(`agent profile: ${kept.filter((c) => c.turn !== undefined).length} case(s) with a conversation depth, ${kept.filter((c) => c.tools !== undefined).length} with expected tools (agent.json)`);
      }
      if (out.kChoice) {
        const best = out.kChoice.scores.find((s) => s.k === out.kChoice!.k);
        console.log(`k=${out.kChoice.k} chosen: ${out.kChoice.criterion}; silhouette ${best?.silhouette.toFixed(4)}`);
        console.log(
          '  scores: ' + out.kChoice.scores.map((s) => `k=${s.k}:${s.silhouette.toFixed(3)}`).join(' '),
        );
      }
      if (out.duplicates) console.log(`${out.duplicates} duplicate case(s) ignored`);
      console.log(modelSummary(manifest));
      for (const w of calibrationWarnings(manifest)) console.error(w);
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
      for (const w of calibrationWarnings(m.manifest)) console.error(w);
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
      checkInputFile(file, 'queries file');
      if (opts.out) {
        checkOutputFile(opts.out, '--out');
        const same = (a: string, b: string) => {
          const [x, y] = [fs.statSync(a, { throwIfNoEntry: false }), fs.statSync(b, { throwIfNoEntry: false })];
          return path.resolve(a) === path.resolve(b) || (x !== undefined && y !== undefined && x.dev === y.dev && x.ino === y.ino);
        };
        if (file !== '-' && same(file, opts.out)) throw new InvalidArgumentError(`--out ${opts.out} is the queries file itself: the scores would replace the queries; give another file`);
      }
      const model = loadCoverageModel(opts.model);
      const embedder = await loadThreadedEmbedder(cfg.embed);
      if (embedder.modelChecksum !== model.manifest.embedding.checksum) {
        await embedder.close();
        loadCoverageModel(opts.model, { expectEmbedding: embeddingOf(embedder) });
      }
      const name = file === '-' ? 'stdin' : file;
      const { text: content, invalid } = readTextInput(file, 'queries file');
      const warning = utf8Warning(name, invalid);
      if (warning) console.error(warning);
      const items = content
        .split(/\r?\n/)
        .map((raw, i) => (raw.trim() ? parseQueryLine(raw, i + 1, opts.textField) : null))
        .filter((x) => x !== null);
      const out = opts.out ? fs.openSync(opts.out, 'w') : 1;
      const res = await scoreQueries(items, embedder, new CoverageAssigner(model), (r) => {
        fs.writeSync(out, JSON.stringify(r) + '\n');
        // the reasons quote the input: control bytes of a binary file are shown, not sent to the terminal
        if ('error' in r) console.error(escapeControl(`${name}:${r.line}: ${r.error}`));
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
    .option('--metrics-port <n>', 'port of /metrics, /healthz, /readyz and the token-protected POST /query on 127.0.0.1 (0: any free port)', intArg('--metrics-port', 0))
    .option('--partitions <n>', 'partitions when evalgap creates the topic', intArg('--partitions', 1), 1)
    .option('--monitor', 'also run the monitor (alerts) in this process; see evalgap monitor')
    .option('--monitor-config <file>', 'monitor config file (JSON: rules, receivers) for --monitor (EVALGAP_MONITOR_CONFIG)')
    .option('--gaps-every <duration>', 'discover and store coverage gaps (last 7 days, all agents and each agent) this often, on one instance of the consumer group (elected through Kafka); off to disable', (v: string) => (v === 'off' ? v : (parseDuration(v), v)), '1h')
    .addOption(new Option('--input <kind>', 'native: request logs in evalgap\'s JSON on --topic; otlp: also OpenTelemetry traces from the Collector\'s Kafka exporter (EVALGAP_OTLP_TOPIC, default otlp_spans), assembled into user turns and written to --topic').choices(['native', 'otlp']).default('native'))
    .option('--otlp-topic <name>', 'the Collector Kafka exporter\'s trace topic for --input otlp (EVALGAP_OTLP_TOPIC, default otlp_spans)')
    .action(async (opts) => {
      const cfg = configFrom(opts);
      const { createLogger } = await import('../config/logger.js');
      const { startRun } = await import('./run.js');
      const logger = createLogger(cfg.logLevel);
      // a bad monitor config fails before anything starts
      const mc = opts.monitor ? loadMonitorConfig(opts.monitorConfig ?? process.env.EVALGAP_MONITOR_CONFIG, process.env, { group: cfg.kafka.group }) : null;
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
        input: opts.input,
      });
      if (mc) {
        const { startMonitor } = await import('./monitor.js');
        monitor = await startMonitor(cfg, mc, opts.model, logger, { store: running.store, registry: running.service.metrics.registry });
      }
      const shutdown = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'stopping: the batch in hand stops at its next step, the group is left');
        // a last resort only: stop() bounds each wait itself (an embedding call, the group's leave)
        const force = setTimeout(() => {
          logger.error('did not stop within 60 s; exiting');
          process.exit(1);
        }, 60_000);
        force.unref();
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
    .option('--guard <file>', "a canary guard (JSON rollback conditions, docs/compare.md): the version_regression rule; replaces the config's guard key")
    .option('--once', 'evaluate the windows closed now, wait for the receivers to acknowledge, and exit')
    .option('--status', 'print the eval-set mismatch (production vs eval share per cluster) and the firing alerts, and exit')
    .option('--status-days <n>', 'period of --status, in days', intArg('--status-days', 1), 7)
    .option('--group <id>', "the consumer group of the deployment's run (EVALGAP_GROUP): the monitor's election group, control and alerts topics and dispatch groups derive from it unless the config names them (docs/alerts.md)")
    .option('--backtest', 'replay stored aggregates and closed sessions through the detectors and print what would have fired (needs --from, --to)')
    .option('--from <time>', 'backtest start (ISO-8601)')
    .option('--to <time>', 'backtest end (ISO-8601, exclusive)')
    .option('--json', 'backtest output as JSON (the notifications in the webhook payload format)')
    .option('--brokers <list>', 'Kafka brokers, host:port[,host:port] (EVALGAP_KAFKA_BROKERS)')
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .option('--metrics-port <n>', 'port of /metrics and /healthz on 127.0.0.1 (0: any free port)', intArg('--metrics-port', 0), 9465)
    .action(async (opts, cmd: Command) => {
      // one mode at a time, and no option of another mode: a forgotten --backtest must not start a
      // live monitor that delivers to the receivers
      const given = (k: string) => cmd.getOptionValueSource(k) === 'cli';
      const modes = ['status', 'backtest', 'once'].filter((k) => opts[k]);
      if (modes.length > 1) throw new InvalidArgumentError(`--${modes.join(' and --')} are separate modes: give one`);
      const stray = [
        ...(opts.backtest ? [] : (['from', 'to', 'json'] as const).filter(given).map((k) => `--${k} is an option of --backtest`)),
        ...(opts.status || !given('statusDays') ? [] : ['--status-days is an option of --status']),
      ];
      if (stray.length) throw new InvalidArgumentError(`${stray.join('; ')}; without it the monitor would start evaluating and delivering`);
      const cfg = configFrom({ ...opts, metricsPort: undefined });
      // --status and --backtest deliver nothing: they do not need the receivers' secrets
      const mc = loadMonitorConfig(opts.config ?? process.env.EVALGAP_MONITOR_CONFIG, process.env, { group: cfg.kafka.group, secrets: !(opts.status || opts.backtest) });
      if (opts.guard) mc.guard = loadGuardConfig(opts.guard);
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
        const from = t(opts.from, '--from');
        const to = t(opts.to, '--to');
        if (!(from < to)) throw new InvalidArgumentError(`--from (${from}) must be before --to (${to})`);
        console.log(await m.monitorBacktest(cfg, mc, opts.model, from, to, Boolean(opts.json)));
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
    .option('--port <n>', 'port on 127.0.0.1 (0: any free port)', intArg('--port', 0, 65535), 8787)
    .option('--secret <whsec>', 'the shared secret (prefer --secret-env or --secret-file)')
    .option('--secret-env <name>', 'environment variable holding the secret')
    .option('--secret-file <file>', 'file holding the secret')
    .action(async (opts) => {
      let secret: string | undefined;
      let from = '';
      if (opts.secret !== undefined) [secret, from] = [opts.secret, '--secret'];
      else if (opts.secretEnv) {
        secret = process.env[opts.secretEnv];
        from = `the variable ${opts.secretEnv}`;
        if (secret === undefined) throw new InvalidArgumentError(`--secret-env ${opts.secretEnv}: that variable is not set`);
      } else if (opts.secretFile) {
        checkInputFile(opts.secretFile, '--secret-file');
        [secret, from] = [fs.readFileSync(opts.secretFile, 'utf8').trim(), opts.secretFile];
      }
      if (secret === undefined) throw new InvalidArgumentError('give the webhook secret (whsec_… base64) with --secret, --secret-env or --secret-file');
      if (!isValidSecret(secret)) throw new InvalidArgumentError(`the secret in ${from} is not a webhook secret: expected whsec_ followed by base64 (as evalgap's monitor config holds)`);
      const { WebhookReceiver } = await import('../alert/receiver.js');
      const r = new WebhookReceiver({
        secret,
        onAlert: (x) => {
          const b = x.body as { kind?: string; alert?: { rule?: string; agent?: string; status?: string; summary?: string; clusters?: { label?: string; examples?: string[] }[] }; text?: string };
          const a = b.alert;
          // what a sender put in the alert is shown with its control characters escaped
          console.log(escapeControl(`${new Date().toISOString()}  ${x.id}  verified`));
          if (a) {
            console.log(escapeControl(`  ${String(b.kind).toUpperCase()} ${a.rule} agent=${a.agent}: ${a.summary}`));
            for (const c of a.clusters ?? []) console.log(escapeControl(`    ${c.label ?? ''}: ${(c.examples ?? []).map((e) => JSON.stringify(e)).join(', ')}`));
          } else if (b.text) console.log(escapeControl(`  ${b.text}`));
        },
      });
      try {
        await r.start(opts.port);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EADDRINUSE') throw new UserError(`port ${opts.port} on 127.0.0.1 is in use (another receive?): give another --port, or 0 for any free one`);
        if (code === 'EACCES') throw new UserError(`port ${opts.port} on 127.0.0.1 may not be opened by this user: give another --port`);
        throw e;
      }
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
    .description('make a coverage model the current one: check it as evalgap run would (checksums, values, embedding model), then atomically repoint the symlink a running evalgap run watches')
    .argument('<model>', 'coverage model folder (from evalgap fit)')
    .option('--current <path>', 'the symlink to repoint (default: <models dir>/coverage/current)')
    .action(async (dir: string, opts) => {
      const cfg = configFrom(opts);
      const { deployModel } = await import('../ingest/model-watch.js');
      const current = opts.current ?? path.join(cfg.embed.modelsDir, 'coverage', 'current');
      // the checks evalgap run applies before it swaps a model in, including the embedding model's
      const version = deployModel(dir, current, { expectEmbedding: installedEmbedding(cfg.embed) });
      console.log(`${current} → ${dir} (${version}); a running evalgap run --model ${current} switches to it between batches`);
    });

  program
    .command('report')
    .description('write one self-contained HTML report (opens offline): the eval score on this traffic, coverage over time, cluster shares, escalation, a map, gaps, alerts')
    .option('--out <file>', 'HTML file to write', 'report.html')
    .option('--since <period>', 'period: a duration (30m, 12h, 7d, 2w) or a date', '7d')
    .option('--model <path>', 'coverage model folder or symlink, for the map (default: <models dir>/coverage/current)')
    .option('--map-sample <n>', 'production queries sampled (and embedded) for the map', intArg('--map-sample', 0), 400)
    .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
    .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)')
    .action(async (opts) => {
      const cfg = configFrom(opts);
      checkOutputFile(opts.out, '--out');
      const { parseSince, writeReport } = await import('./report.js');
      const { Store } = await import('../store/store.js');
      let since: Date;
      try {
        since = parseSince(opts.since);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
      const modelPath = opts.model ?? path.join(cfg.embed.modelsDir, 'coverage', 'current');
      if (opts.model !== undefined && !fs.existsSync(opts.model)) throw new InvalidArgumentError(`--model ${opts.model}: no such coverage model folder`);
      // the report needs the folder itself (it may store a gap discovery): a process holding it is said in one line
      const store = await openOwnStore(cfg, (m) => new UserError(m));
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
    .description('publish request logs from a JSONL file (one JSON object per line) to the request topic, keyed by session_id where a line has one')
    .argument('<file>', 'JSONL file of request logs')
    .option('--brokers <list>', 'Kafka brokers (EVALGAP_KAFKA_BROKERS)')
    .option('--topic <name>', 'topic (EVALGAP_TOPIC)')
    .action(async (file: string, opts) => {
      const cfg = configFrom(opts);
      const { createKafka, produceJson } = await import('../ingest/kafka.js');
      const { text, invalid } = readTextInput(file, 'request log file');
      const warning = utf8Warning(file, invalid);
      if (warning) console.error(warning);
      const lines = text.split(/\r?\n/).filter((l) => l.trim());
      const kafka = createKafka(cfg.kafka);
      const producer = kafka.producer();
      try {
        await producer.connect();
        await produceJson(producer, cfg.kafka.topic, lines, sessionKey);
      } catch (e) {
        await producer.disconnect().catch(() => {});
        if ((e as Error)?.name?.startsWith('KafkaJS')) {
          const cause = (e as { cause?: Error }).cause?.message;
          throw new UserError(`cannot publish to Kafka at ${cfg.kafka.brokers.join(',')}: ${(e as Error).message}${cause && cause !== (e as Error).message ? ` (${cause})` : ''}`);
        }
        throw e;
      }
      await producer.disconnect();
      console.log(`published ${lines.length} message(s) to ${cfg.kafka.topic}`);
    });

  const storeOptions = (c: Command) =>
    c
      .option('--clickhouse-url <url>', 'ClickHouse server URL; default: embedded engine (EVALGAP_CLICKHOUSE_URL)')
      .option('--data-dir <dir>', 'embedded ClickHouse data folder (EVALGAP_DATA_DIR)');

  storeOptions(
    program
      .command('gaps')
      .description(
        'group the uncovered traffic of a period into coverage gaps (new topics first, then near misses of tested ' +
          'clusters: thin coverage), each ranked by priority (volume × risk × how far outside the eval set), and store them',
      )
      .option('--since <when>', 'start of the period: a duration back from now (7d, 24h, 90m, 2w) or an ISO-8601 date (2024-05-01, 2024-05-01T12:00Z; no zone: UTC)', '7d')
      .option('--until <when>', 'end of the period, as --since (default: now); e.g. for replayed or backfilled traffic')
      .option('--agent <name>', "one agent's traffic (default: all agents)")
      .option('--format <format>', 'table or json', formatArg(['table', 'json']), 'table')
      .option('--model-version <v>', "rows scored by this coverage model: latest (the period's latest request's), all, or a version", 'latest')
      .option('--examples <n>', 'examples printed per gap', intArg('--examples', 0), 3)
      .option('--no-store', 'print only; do not write coverage_gaps / gap_members'),
  ).action(async (opts) => {
    const { gapsCommand, parsePeriod } = await import('./gaps.js');
    await gapsCommand(configFrom(opts), {
      ...parsePeriod(opts.since, opts.until),
      agent: opts.agent,
      format: opts.format,
      modelVersion: opts.modelVersion,
      store: opts.store,
      examples: opts.examples,
    });
  });

  storeOptions(
    program
      .command('agent-coverage')
      .description('conversation depth, tool chains and sessions of production traffic against what the eval set tests (its cases\' turn and tools fields)')
      .option('--since <period>', 'start: a duration back from now (7d, 12h, 30m) or a date', '7d')
      .option('--until <period>', 'end: a duration back from now or a date (default: now)')
      .option('--agent <name>', "one agent's traffic (default: all agents)")
      .option('--top <n>', 'untested tool chains listed', intArg('--top', 1), 10)
      .option('--session <id>', "print one session's turns in order instead")
      .option('--format <format>', 'table or json', formatArg(['table', 'json']), 'table'),
  ).action(async (opts) => {
    const { parsePeriod } = await import('./period.js');
    const { agentCoverageCommand } = await import('./agent.js');
    // the one period parser (src/cli/period.ts): names the flag at fault, refuses a reversed period
    const { since, until } = parsePeriod(opts.since, opts.until);
    await agentCoverageCommand(configFrom(opts), { since, until, agent: opts.agent, format: opts.format, top: opts.top, session: opts.session });
  });

  storeOptions(
    program
      .command('export-gaps')
      .description('write candidate eval cases from the coverage gaps (JSONL that evalgap fit reads), deduplicated, stratified by priority')
      .requiredOption('--out <file>', 'JSONL file to write')
      .option('--per-gap <n>', 'cases per gap at most (≤ 25, the examples kept per gap)', intArg('--per-gap', 1, 25), 10)
      .option('--budget <n>', 'cases in all at most, shared across gaps by priority', intArg('--budget', 1))
      .option('--since <when>', 'start of the period: a duration back from now (7d, 24h) or an ISO-8601 date (no zone: UTC)', '7d')
      .option('--until <when>', 'end of the period, as --since (default: now)')
      .option('--agent <name>', "one agent's gaps (default: all agents)")
      .option('--model-version <v>', 'latest, all, or a coverage model version', 'latest')
      .option('--kind <kind>', 'gaps to export: topic (new topics), thin (near misses of tested clusters) or all', formatArg(['topic', 'thin', 'all']), 'all')
      .option('--plan', "write the candidate cases of evalgap plan --budget N instead (Neyman allocation over the eval clusters and the gaps; needs --budget and stored eval results; --per-gap and --kind do not apply; see docs/estimate.md)"),
  ).action(async (opts) => {
    checkOutputFile(opts.out, '--out');
    const { exportGapsCommand, parsePeriod } = await import('./gaps.js');
    if (opts.plan) {
      if (opts.budget === undefined) throw new UserError('export-gaps --plan needs --budget N (the new eval cases the plan places)');
      const { exportGapsPlanCommand } = await import('./estimate.js');
      await exportGapsPlanCommand(configFrom(opts), {
        out: opts.out,
        budget: opts.budget,
        agent: opts.agent,
        ...parsePeriod(opts.since, opts.until),
        modelVersion: opts.modelVersion,
        level: 0.9,
      });
      return;
    }
    await exportGapsCommand(configFrom(opts), {
      out: opts.out,
      perGap: opts.perGap,
      budget: opts.budget,
      agent: opts.agent,
      ...parsePeriod(opts.since, opts.until),
      modelVersion: opts.modelVersion,
      kind: opts.kind,
    });
  });

  storeOptions(
    program
      .command('compare')
      .description('compare two agent versions cluster by cluster: outcome rates, anytime-valid intervals, a verdict per cluster (docs/compare.md)')
      .option('--baseline <version>', 'the version in place (the `version` field of the messages)')
      .option('--candidate <version>', 'the new version (canary or shadow)')
      .option('--since <period>', 'start: a duration back from now (30m, 12h, 7d, 2w) or a date', '7d')
      .option('--until <period>', 'end: a duration back from now or a date (default: now)')
      .option('--agent <name>', "one agent's traffic (default: all agents)")
      .option('--alpha <a>', 'family-wise error over all tests (clusters × outcomes, overall, mix)', rateArg, 0.05)
      .option('--model-version <v>', 'coverage model whose clusters are compared (default: the one scoring most of the candidate)')
      .option('--latency-ms <ms>', "a request is slow above this latency (default: the baseline's p95 in the period)", (v: string) => {
        const n = Number(v);
        if (!(n >= 0) || !Number.isFinite(n)) throw new InvalidArgumentError('--latency-ms must be a number ≥ 0');
        return n;
      })
      .option('--outcomes <list>', 'outcomes compared, comma-separated: escalated,refused,failed,slow (default: all; fewer tests, more power each)', (v: string) => {
        const list = [...new Set(v.split(',').map((x) => x.trim()).filter(Boolean))];
        const known = ['escalated', 'refused', 'failed', 'slow'];
        const bad = list.filter((x) => !known.includes(x));
        if (list.length === 0 || bad.length) throw new InvalidArgumentError(`expected a comma-separated list of ${known.join(', ')}`);
        return list;
      })
      .option('--format <format>', 'table or json', formatArg(['table', 'json']), 'table')
      .option('--paired', 'shadow traffic: compare the requests stored under both versions (same request_id) pair by pair (escalated, refused, failed)')
      .addOption(new Option('--guard <file>').hideHelp())
      .addOption(new Option('--watch').hideHelp()),
  ).action(async (opts) => {
    if (opts.guard || opts.watch) {
      // one way to run a canary guard: inside the monitor, with its lifecycle, outbox and state
      throw new InvalidArgumentError('the canary guard runs in the monitor: evalgap monitor --model DIR --guard FILE (or a "guard" key in the monitor config; docs/compare.md)');
    }
    if (!opts.baseline || !opts.candidate) throw new InvalidArgumentError('--baseline and --candidate are required');
    const { compareCommand } = await import('./compare.js');
    const { parseSince } = await import('./report.js');
    const now = new Date();
    let since: Date;
    let until: Date;
    try {
      since = parseSince(opts.since, now);
      until = opts.until === undefined ? now : parseSince(opts.until, now);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message.replace('--since', '--since/--until'));
    }
    if (!(since < until)) throw new InvalidArgumentError('--since must be before --until');
    await compareCommand(configFrom(opts), {
      baseline: opts.baseline,
      candidate: opts.candidate,
      since,
      until,
      agent: opts.agent ?? '',
      alpha: opts.alpha,
      modelVersion: opts.modelVersion,
      latencyMs: opts.latencyMs,
      outcomes: opts.outcomes,
      format: opts.format,
      paired: Boolean(opts.paired),
    });
  });

  storeOptions(
    program
      .command('sql')
      .description(
        'run one read-only SELECT against the store (embedded or server); while evalgap run holds the ' +
          'embedded data folder, the query goes to its POST /query endpoint instead (said on stderr). ' +
          "The engine's parser checks it first: no INTO OUTFILE, FORMAT or SETTINGS, no functions that read " +
          'files or the network; time, memory and result size are limited (EVALGAP_QUERY_*, docs/security.md). ' +
          'A query that starts with "-" (a -- comment) goes after --: evalgap sql -- "-- note\nSELECT 1"',
      )
      .argument('<query>', 'SQL, e.g. "SELECT * FROM evalgap.latest_gaps"; bind values with {name:Type} and --param')
      .option('--format <format>', 'table, json or jsonl', formatArg(['table', 'json', 'jsonl']), 'table')
      .option('--param <name=value>', 'a query parameter (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[]),
  ).action(async (query: string, opts) => {
    const { sqlCommand } = await import('./gaps.js');
    await sqlCommand(configFrom(opts), query, { format: opts.format, param: opts.param });
  });

  registerEstimateCommands(program, storeOptions, configFrom, intArg, formatArg);

  program
    .command('demo')
    .description('end to end on bundled sample data: services, Kafka, model, ClickHouse')
    .option('--dir <dir>', "folder of the demo's eval set, coverage models and embedded ClickHouse data, replaced on each run; a folder no earlier demo made that holds one of those names is refused", '.evalgap/demo')
    .action(async (opts) => {
      const { runDemo } = await import('./demo.js');
      await runDemo(configFrom(opts), path.resolve(opts.dir));
    });

  // each command's help names the docs page that describes it
  const DOCS: Record<string, string> = {
    fit: 'coverage-model.md',
    inspect: 'coverage-model.md',
    score: 'coverage-model.md',
    deploy: 'coverage-model.md',
    run: 'getting-started.md, message-contract.md, operations.md, traces.md',
    produce: 'message-contract.md',
    monitor: 'alerts.md',
    receive: 'alerts.md',
    gaps: 'closing-the-loop.md',
    'export-gaps': 'closing-the-loop.md',
    'agent-coverage': 'traces.md',
    results: 'estimate.md',
    estimate: 'estimate.md',
    plan: 'estimate.md',
    compare: 'compare.md',
    sql: 'sql.md',
    report: 'closing-the-loop.md',
    demo: 'demo.md',
  };
  for (const c of program.commands) {
    const pages = DOCS[c.name()] ?? 'README.md';
    c.addHelpText('after', `\nDocs: ${pages.split(', ').map((p) => `docs/${p}`).join(', ')} (in ${PACKAGE_ROOT})`);
  }

  return program;
}

const FILE_ERRORS: Record<string, string> = {
  EISDIR: 'is a directory; give a file',
  ENOTDIR: 'a part of the path is not a directory',
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EEXIST: 'exists, and is not the folder expected there (a file?)',
};

/**
 * `fit --out`: a model folder is a version, never rewritten in place (rolling back is deploying the
 * old folder, and a running consumer may be watching it); a symlink is a deployed pointer
 * (`current`), which `evalgap deploy` moves.
 */
function checkFitOut(out: string, force: boolean): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(out);
  } catch {
    return; // a new folder
  }
  if (st.isSymbolicLink()) {
    throw new UserError(`--out ${out} is a symlink (a deployed pointer such as current): fit into a new folder, then \`evalgap deploy\` it`);
  }
  if (st.isDirectory() && fs.existsSync(path.join(out, 'manifest.json')) && !force) {
    let version = '';
    try {
      version = ` (${String((JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as { version?: unknown }).version)})`;
    } catch {
      /* unreadable: still refused */
    }
    throw new UserError(`--out ${out} already holds a coverage model${version}: fit into a new folder (a model folder is a version; rolling back is deploying the old one), or give --force to replace it`);
  }
}

/**
 * `produce`'s message key: the session id when the line has one, so that a session's turns keep
 * their order on a topic of several partitions (docs/message-contract.md); otherwise none (the
 * producer spreads the lines). A line that is not JSON is published as it is, keyless (the consumer
 * dead-letters it with its reason).
 */
export function sessionKey(line: unknown): string | undefined {
  if (typeof line !== 'string') return undefined;
  try {
    const v = JSON.parse(line) as { session_id?: unknown };
    return typeof v?.session_id === 'string' && v.session_id.length > 0 ? v.session_id : undefined;
  } catch {
    return undefined;
  }
}

const KNOWN_ERRORS = [UserError, StoreUnavailableError, DeployError, ConfigError, MonitorConfigError, EvalSetError, FitError, ModelLoadError, ModelNotInstalledError, InvalidArgumentError];

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError && !(e instanceof InvalidArgumentError)) {
      // from exitOverride: commander has printed its message (and the usage) already. An
      // InvalidArgumentError thrown by an action itself is printed below, as every usage error.
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    if ((e as Error)?.name === 'StartupError') {
      console.error(`evalgap: ${(e as Error).message}`);
      process.exit(1); // the embedding worker or kafkajs timers must not keep the process up
    }
    if (KNOWN_ERRORS.some((k) => e instanceof k)) {
      console.error(`evalgap: ${(e as Error).message}`);
      process.exitCode = 2;
      return;
    }
    // a path the user gave that cannot be read or written (a directory, a missing folder, no permission)
    const fsErr = e as NodeJS.ErrnoException;
    if (fsErr?.path && fsErr.code && FILE_ERRORS[fsErr.code]) {
      console.error(`evalgap: ${fsErr.path}: ${FILE_ERRORS[fsErr.code]}`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(new URL(import.meta.url).pathname)) {
  void main();
}
