/** Wiring for `evalgap monitor`, `evalgap run --monitor` and `evalgap receive`. */
import http from 'node:http';
import type { Kafka } from 'kafkajs';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { refuseBrowserRequest } from '../config/http-guard.js';
import type { Config } from '../config/index.js';
import { loadCoverageModel } from '../coverage/model.js';
import { createKafka } from '../ingest/kafka.js';
import { resolveModelDir } from '../ingest/model-watch.js';
import type { MonitorContext } from '../monitor/types.js';
import { describeMonitorConfig, type MonitorConfig } from '../alert/config.js';
import { createMonitorMetrics } from '../alert/metrics.js';
import { contextFromManifest, MonitorRunner } from '../alert/runner.js';
import { VersionGuard } from '../alert/version-guard.js';
import { runBacktest } from '../alert/backtest.js';
import { evalMismatch, formatMismatch } from '../alert/status.js';
import { MonitorStore } from '../store/monitor.js';
import { Store } from '../store/store.js';
import { UserError } from './errors.js';
import { openOwnStore } from './open-store.js';
import { deepFloorWarning, escapeControl } from './format.js';
import { createEvaluator, novelSessionRules, weightedScoreRules } from '../monitor/index.js';
import { evalPassRates } from '../estimate/run.js';
import { evalgapPayload } from '../alert/payload.js';
import { agentContextOf, createAgentRules } from '../monitor/agent-rules.js';
import { loadAgentProfile } from '../coverage/agent.js';

/**
 * The monitor's context of a model folder: its manifest, and what its eval set tests of conversation
 * depth and tool chains (agent.json; the agent rules stay silent without it or when it is invalid).
 */
export function monitorContext(dir: string, model: ReturnType<typeof loadCoverageModel>, logger?: Logger): MonitorContext {
  const ctx = contextFromManifest(model.manifest);
  if (ctx.heldOutDeep?.belowFloor) logger?.warn({ model: model.manifest.version }, deepFloorWarning(ctx.heldOutDeep.deepBands).replace(/^warning: /, ''));
  try {
    const p = loadAgentProfile(dir, model);
    if (p) ctx.agent = agentContextOf(p);
  } catch (e) {
    logger?.warn({ err: e, model: model.manifest.version }, 'agent.json cannot be read: the agent rules (depth_mix, untested_chains, chain_failure) stay silent');
  }
  return ctx;
}

export interface StartedMonitor {
  runner: MonitorRunner;
  store: Store;
  port: number;
  stop: () => Promise<void>;
}

/** The rule sets beside the core rules, from the monitor config. */
const ruleSets = (mc: MonitorConfig) => [createAgentRules(mc.agentRules), weightedScoreRules(mc.weightedScore), novelSessionRules(mc.novelSessions)];

/** The model's eval pass rates (its latest stored eval run) for the weighted_score rule; none when unreadable. */
async function withPassRates(store: Store, ctx: MonitorContext, logger?: Logger): Promise<MonitorContext> {
  try {
    const rates = await evalPassRates(store, ctx.modelVersion, Object.keys(ctx.evalShares).map(Number));
    return rates ? { ...ctx, evalPassRates: rates } : ctx;
  } catch (e) {
    logger?.warn({ err: e }, 'eval results unreadable: the weighted_score rule waits for them');
    return ctx;
  }
}

/** Start a monitor: election, evaluation of closed windows, outbox, webhook dispatcher. */
export async function startMonitor(
  cfg: Config,
  mc: MonitorConfig,
  modelDir: string,
  logger: Logger,
  opts: { store?: Store; kafka?: Kafka; registry?: Registry; metricsPort?: number } = {},
): Promise<StartedMonitor> {
  const model = loadCoverageModel(modelDir);
  // a model deployed while the monitor runs (a `current` symlink or pointer file repointed):
  // its context is read when the target changes, and the detectors restart their references
  const ownStore = !opts.store;
  const store = opts.store ?? (await openOwnStore(cfg, (m) => new UserError(m)));
  let cached = { dir: resolveModelDir(modelDir), ctx: await withPassRates(store, monitorContext(resolveModelDir(modelDir), model, logger), logger), loaded: Date.now() };
  // eval results loaded later (evalgap results) reach the weighted_score rule within RATES_REFRESH_MS
  const RATES_REFRESH_MS = 600_000;
  let refreshing = false;
  const ctxNow = (): MonitorContext => {
    let dir = cached.dir;
    try {
      dir = resolveModelDir(modelDir);
      if (dir !== cached.dir) cached = { dir, ctx: monitorContext(dir, loadCoverageModel(dir), logger), loaded: 0 };
    } catch (e) {
      logger.warn({ err: e, model: modelDir }, 'the deployed coverage model cannot be read; the monitor keeps the one in force');
    }
    if (!refreshing && Date.now() - cached.loaded >= (cached.loaded ? RATES_REFRESH_MS : 0)) {
      refreshing = true;
      const c = cached;
      const { evalPassRates: _old, ...base } = c.ctx;
      void withPassRates(store, base, logger)
        .then((ctx) => {
          if (cached === c) cached = { ...c, ctx, loaded: Date.now() };
        })
        .finally(() => (refreshing = false));
    }
    return cached.ctx;
  };
  const kafka = opts.kafka ?? createKafka(cfg.kafka, `${cfg.kafka.clientId}-monitor`, logger);
  const metrics = createMonitorMetrics({ registry: opts.registry, defaultMetrics: !opts.registry });
  const runner = new MonitorRunner({
    store,
    kafka,
    logger,
    evaluate: createEvaluator(mc.rules, ruleSets(mc)),
    ctx: ctxNow,
    config: mc,
    metrics,
    // EVALGAP_SESSION_TIMEOUT_MS: the election's and the dispatchers' consumer groups too
    sessionTimeoutMs: cfg.ingest.sessionTimeoutMs,
    ...(mc.guard ? { guard: new VersionGuard(store, mc.guard, store.database) } : {}),
  });
  logger.info({ monitor: describeMonitorConfig(mc), model: model.manifest.version }, 'starting monitor');
  // the metrics port is bound before the monitor joins its Kafka groups: a port in use stops it with
  // one line, having joined nothing
  let server: http.Server | null = null;
  let port = 0;
  if (opts.metricsPort !== undefined && opts.metricsPort >= 0) {
    server = http.createServer(async (req, res) => {
      // pages in a browser (and DNS-rebinding ones) get nothing (src/config/http-guard.ts)
      if (refuseBrowserRequest(req, res, { allowLocalhost: true })) return;
      if (req.url === '/metrics') {
        res.setHeader('content-type', metrics.registry.contentType);
        res.end(await metrics.registry.metrics());
      } else if (req.url === '/healthz') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ status: 'ok', leader: runner.isLeader() }));
      } else {
        res.statusCode = 404;
        res.end('not found\n');
      }
    });
    try {
      port = await new Promise<number>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(opts.metricsPort, '127.0.0.1', () => {
          const a = server!.address();
          resolve(typeof a === 'object' && a ? a.port : 0);
        });
      });
    } catch (e) {
      if (ownStore) await store.close().catch(() => {});
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') throw new UserError(`the monitor's metrics port ${opts.metricsPort} on 127.0.0.1 is in use: give another --metrics-port, or -1 for none`);
      throw e;
    }
  }
  try {
    await runner.start();
  } catch (e) {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    if (ownStore) await store.close().catch(() => {});
    throw e;
  }
  // with run --monitor the series are served on run's metrics port (its registry), not here
  logger.info({ metricsPort: server ? port : opts.registry ? "evalgap run's" : 'none', electionGroup: mc.electionGroup, controlTopic: mc.controlTopic, alertsTopic: mc.alertsTopic, receivers: mc.receivers.map((r) => r.name) }, 'evalgap monitor started');
  return {
    runner,
    store,
    port,
    stop: async () => {
      await runner.stop();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      if (ownStore) await store.close();
    },
  };
}

/** True when every receiver's dispatch group has committed the end of the alerts topic. */
export async function dispatchCaughtUp(kafka: Kafka, mc: MonitorConfig): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(mc.alertsTopic);
    for (const r of mc.receivers) {
      const [committed] = await admin.fetchOffsets({ groupId: `${mc.dispatchGroupPrefix}.${r.name}`, topics: [mc.alertsTopic] });
      const ok = ends.every((e) => {
        if (BigInt(e.high) === 0n) return true;
        const c = committed.partitions.find((p) => p.partition === e.partition);
        return c !== undefined && BigInt(c.offset) >= BigInt(e.high);
      });
      if (!ok) return false;
    }
    return true;
  } finally {
    await admin.disconnect();
  }
}

/** `--once`: evaluate the closed windows now, then wait until the receivers have everything. */
export async function monitorOnce(cfg: Config, mc: MonitorConfig, modelDir: string, logger: Logger, timeoutMs = 600_000): Promise<number> {
  const m = await startMonitor(cfg, mc, modelDir, logger);
  try {
    const r = await m.runner.tick({ force: true });
    logger.info({ evaluated: r.evaluated, notifications: r.notifications.length, upTo: r.windowEnd }, 'evaluated the closed windows');
    const kafka = createKafka(cfg.kafka, `${cfg.kafka.clientId}-monitor-admin`);
    const deadline = Date.now() + timeoutMs;
    while (mc.receivers.length && !(await dispatchCaughtUp(kafka, mc))) {
      if (Date.now() > deadline) {
        logger.error('receivers have not acknowledged every notification; they stay in the outbox for the next monitor');
        break;
      }
      await new Promise((res) => setTimeout(res, 500));
    }
    return r.notifications.length;
  } finally {
    await m.stop();
  }
}

export async function monitorStatus(cfg: Config, modelDir: string, days = 7): Promise<string> {
  const model = loadCoverageModel(modelDir);
  const store = await openOwnStore(cfg, (m) => new UserError(m));
  try {
    const ms = new MonitorStore(store);
    const to = new Date();
    const from = new Date(to.getTime() - days * 86_400_000);
    const clusters = model.manifest.clusters.map((c) => ({ cluster: c.id, label: c.label, share: c.share }));
    const mm = await evalMismatch(ms, model.manifest.version, clusters, from.toISOString(), new Date(to.getTime() + 300_000).toISOString());
    const firing = await ms.firingAlerts();
    const lines = [`coverage model ${model.manifest.version}`, formatMismatch(mm, from.toISOString()), ''];
    lines.push(firing.length ? `firing alerts (${firing.length}):` : 'no alert is firing');
    for (const a of firing) {
      lines.push(escapeControl(`  ${a.id}  ${a.severity}  ${a.rule}  agent=${a.agent}${a.cluster === null ? '' : ` cluster=${a.cluster}`}  since ${a.onset}`));
      lines.push(`    ${escapeControl(a.summary)}`);
    }
    return lines.join('\n');
  } finally {
    await store.close();
  }
}

export async function monitorBacktest(cfg: Config, mc: MonitorConfig, modelDir: string, from: string, to: string, json: boolean): Promise<string> {
  const model = loadCoverageModel(modelDir);
  const store = await openOwnStore(cfg, (m) => new UserError(m));
  try {
    const ctx = await withPassRates(store, monitorContext(resolveModelDir(modelDir), model));
    if (ctx.heldOutDeep?.belowFloor) console.error(deepFloorWarning(ctx.heldOutDeep.deepBands));
    const r = await runBacktest(new MonitorStore(store), createEvaluator(mc.rules, ruleSets(mc)), ctx, mc, from, to, store);
    if (json) {
      return JSON.stringify({ ...r, notifications: r.notifications.map((n) => evalgapPayload(n)) }, null, 2);
    }
    const lines = [`backtest ${r.from} → ${r.to}: ${r.evaluated} of ${r.windows} windows held traffic; ${r.notifications.length} notification(s)`];
    for (const n of r.notices) lines.push(`  notice ${n}`);
    for (const n of r.notifications) {
      const a = n.alert;
      lines.push(
        `  ${a.windowEnd}  ${n.kind.padEnd(8)} ${a.rule}  agent=${a.agent}${a.cluster === null ? '' : ` cluster=${a.cluster}`}  onset ${a.onset}  statistic ${a.statistic.toPrecision(4)} (threshold ${a.threshold.toPrecision(4)})\n      ${a.summary}`,
      );
    }
    return lines.join('\n');
  } finally {
    await store.close();
  }
}
