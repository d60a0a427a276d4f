/**
 * `evalgap monitor`: the I/O around the pure detectors. While this instance is the elected leader
 * (src/ingest/election.ts), each closed window is evaluated once, in order:
 *
 *   1. read the window's counts from coverage_5m, plus late rows of earlier windows (windows.ts)
 *   2. evaluate (the injected EvaluateWindow: detectors, pure)
 *   3. lifecycle (inhibit → dedup against the notification log; pure), examples and SQL filled in
 *   4. outbox: notifications written to Kafka, acks=all
 *   5. record: alert rows and trend rows into ClickHouse (idempotent inserts)
 *   6. checkpoint: detector state + notification log + evaluated totals, durably in ClickHouse
 *
 * Then, when a canary guard is configured, the `version_regression` rule (version-guard.ts): the
 * evidence of both versions since the canary's start, read by version through src/store/compare.ts,
 * through the same lifecycle → examples → outbox → record, and its state in the same checkpoint.
 *
 * A crash anywhere before 6 evaluates the window again on restart, with the same state, so it
 * produces the same notifications with the same ids (receivers dedupe on webhook-id). A new leader
 * starts from the last checkpoint: no evidence forgotten, nothing re-alerted. The webhook
 * dispatcher (dispatcher.ts) runs in every instance; each receiver's consumer group delivers once.
 */
import type { Kafka } from 'kafkajs';
import type { Logger } from 'pino';
import { rowsSql, type Notification } from './alert.js';
import type { MonitorConfig } from './config.js';
import { Dispatcher } from './dispatcher.js';
import { Election } from '../ingest/election.js';
import { candidates, dedup, inhibit, pipeline, type NotificationLog, type NotifyContext, type Stage } from './lifecycle.js';
import { createMonitorMetrics, type MonitorMetrics } from './metrics.js';
import { Outbox } from './outbox.js';
import { alignDown, attachClosedSessions, closedUntil, dayString, horizonStart, newSince, toWindowCounts, totalsOf, type Totals } from './windows.js';
import { MonitorStore, type AlertRow, type ClosedSessionRow } from '../store/monitor.js';
import { AgentRowReader } from './agent-windows.js';
import { VERSION_RULE, endedFinding, guardCandidates, markSent, type GuardSlice, type VersionGuard } from './version-guard.js';
import type { Store } from '../store/store.js';
import { belowDeepFloor } from '../coverage/bands.js';
import type { EvaluateWindow, Finding, MonitorContext, MonitorState, SessionReferenceContext } from '../monitor/types.js';

export interface RunnerState {
  /** the detectors' state (null until the first evaluation) */
  monitor: MonitorState | null;
  log: NotificationLog;
  /** per-day totals already evaluated (late rows are the difference) */
  evaluated: Totals;
  /** when the first monitor of this group started: windows closed before it are a backfill */
  firstStartedAt: string;
  /** the canary guard's state (version_regression), absent without a guard */
  guard?: GuardSlice;
}

export interface RunnerDeps {
  store: Store;
  kafka: Kafka;
  logger: Logger;
  evaluate: EvaluateWindow;
  /** the coverage model in force; a function is asked at every window (a redeployed model restarts the references) */
  ctx: MonitorContext | (() => MonitorContext);
  config: MonitorConfig;
  metrics?: MonitorMetrics;
  /** the wall clock (tests move it) */
  clock?: () => Date;
  /** for tests: replace the HTTP POST of the dispatcher */
  post?: ConstructorParameters<typeof Dispatcher>[2]['post'];
  /** session timeout (ms) of the election's and the dispatchers' consumer groups; default 10 s and 30 s (the CLI passes EVALGAP_SESSION_TIMEOUT_MS) */
  sessionTimeoutMs?: number;
  /** a new leader waits this long (ms) before evaluating, so that a rebalance still under way (e.g. monitors starting together) settles first; default 3 s */
  settleMs?: number;
  /** the canary guard (version_regression), evaluated at every tick after the closed windows */
  guard?: VersionGuard;
}

/** What the monitor's notification stages share for one evaluated window. */
export interface RunContext extends NotifyContext {
  /** a window closed before the first start: record, do not send */
  backfill: boolean;
  /** insert deduplication token of the window's alert rows */
  token: string;
  stillLeading: () => boolean;
}

class LostLeadership extends Error {
  constructor() {
    super('lost the election during an evaluation');
  }
}

export interface TickResult {
  evaluated: number;
  notifications: Notification[];
  windowEnd: string | null;
  /** the canary guard's evaluation in this tick (null: no guard, or not evaluated) */
  guard: { rollback: number; promote: boolean; waiting?: string } | null;
}

export class MonitorRunner {
  readonly metrics: MonitorMetrics;
  readonly ms: MonitorStore;
  readonly election: Election;
  readonly outbox: Outbox;
  readonly dispatcher: Dispatcher;
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<TickResult> | null = null;
  private stopped = false;
  private lastEnd: number | null = null;
  private leaderSince = 0;
  private readonly clock: () => Date;
  /** every notification this instance wrote to the outbox (for tests and the CLI's --once) */
  readonly sent: Notification[] = [];

  constructor(private readonly deps: RunnerDeps) {
    this.metrics = deps.metrics ?? createMonitorMetrics();
    this.ms = new MonitorStore(deps.store);
    this.clock = deps.clock ?? (() => new Date());
    const c = deps.config;
    this.election = new Election(deps.kafka, { topic: c.controlTopic, group: c.electionGroup, sessionTimeoutMs: deps.sessionTimeoutMs }, deps.logger);
    this.outbox = new Outbox(deps.kafka, c.alertsTopic);
    this.dispatcher = new Dispatcher(deps.kafka, c.receivers, { topic: c.alertsTopic, groupPrefix: c.dispatchGroupPrefix, post: deps.post, sessionTimeoutMs: deps.sessionTimeoutMs }, deps.logger, this.metrics);
    const settle = deps.settleMs ?? 3_000;
    this.election.onChange((leader) => {
      this.metrics.leader.set(leader ? 1 : 0);
      this.leaderSince = Date.now();
      if (leader) setTimeout(() => this.kick(), settle + 10).unref();
    });
  }

  /** Join the election, start the outbox and the dispatcher, and poll for closed windows. */
  async start(opts: { dispatch?: boolean; elect?: boolean } = {}): Promise<void> {
    await this.restoreFiring();
    await this.outbox.start();
    if (opts.dispatch !== false) await this.dispatcher.start();
    if (opts.elect !== false) await this.election.start();
    this.timer = setInterval(() => this.kick(), this.deps.config.pollSeconds * 1000);
    this.timer.unref();
  }

  isLeader(): boolean {
    return this.election.isLeader();
  }

  private kick(): void {
    if (this.lastEnd !== null) this.metrics.lag.set((this.clock().getTime() - this.lastEnd) / 1000);
    if (this.stopped || this.ticking || !this.election.isLeader()) return;
    if (Date.now() - this.leaderSince < (this.deps.settleMs ?? 3_000)) return;
    void this.tick().catch((e) => this.deps.logger.error({ err: e }, 'monitor evaluation failed; retrying at the next poll'));
  }

  /** Evaluate every closed window not yet evaluated (leader only, unless `force`). */
  tick(opts: { force?: boolean; maxWindows?: number } = {}): Promise<TickResult> {
    if (this.ticking) return this.ticking;
    this.ticking = this.evaluatePending(opts).finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  /** the bytes the last checkpoint wrote (its row, and the reference histories it stored: src/store/checkpoint-parts.ts) */
  private countCheckpoint(name: string): void {
    const w = this.ms.lastCheckpointWrite(name);
    if (!w) return;
    this.metrics.checkpointBytes.inc({ part: 'row' }, w.bytes);
    if (w.partBytes) this.metrics.checkpointBytes.inc({ part: 'parts' }, w.partBytes);
  }

  private leading(force?: boolean): boolean {
    return !this.stopped && (force === true || this.election.isLeader());
  }

  private async evaluatePending(opts: { force?: boolean; maxWindows?: number }): Promise<TickResult> {
    const { config: c, logger } = this.deps;
    const name = c.electionGroup;
    const result: TickResult = { evaluated: 0, notifications: [], windowEnd: null, guard: null };
    const W = c.windowSeconds * 1000;
    const now = this.clock().getTime();
    const closed = closedUntil(now, c.windowSeconds, c.latenessSeconds);

    // always start from the durable checkpoint: another leader may have moved on
    const cp = await this.ms.loadCheckpoint(name);
    let seq = cp?.seq ?? 0;
    let state: RunnerState;
    let cursor: number;
    if (cp) {
      state = JSON.parse(cp.state) as RunnerState;
      cursor = Date.parse(cp.windowEnd);
    } else {
      const first = c.start === 'earliest' ? await this.ms.nextBucket('1970-01-01T00:00:00Z') : c.start === 'now' ? new Date(closed).toISOString() : c.start;
      if (!first) return result; // nothing stored yet
      cursor = alignDown(Date.parse(first), c.windowSeconds);
      // everything before the start counts as evaluated
      const h = horizonStart(cursor, c.lateHorizonDays);
      const before = totalsOf(await this.ms.dayTotals(new Date(h).toISOString(), new Date(cursor).toISOString()));
      state = { monitor: null, log: {}, evaluated: before, firstStartedAt: new Date(now).toISOString() };
    }
    this.lastEnd = cursor;
    let savedEnd = cp ? cursor : -1;
    const max = opts.maxWindows ?? 10_000;
    let closedCache: { from: number; to: number; byWindow: Map<number, ClosedSessionRow[]> } | null = null;
    const agentRows = new AgentRowReader(this.deps.store, c.windowSeconds, c.sessionIdleSeconds);
    while (cursor + W <= closed && result.evaluated < max && this.leading(opts.force)) {
      const ws = new Date(cursor).toISOString();
      const we = new Date(cursor + W).toISOString();
      const h = horizonStart(cursor + W, c.lateHorizonDays);
      const stored = totalsOf(await this.ms.dayTotals(new Date(h).toISOString(), we));
      const { fresh, keep } = newSince(stored, state.evaluated, dayString(h));
      if (fresh.length === 0) {
        // An empty window: skip ahead to the window of the next stored bucket. With nothing stored
        // after it, wait here: rows still on their way (a consumer behind) are then evaluated in
        // their own windows rather than as late rows of a later one.
        const next = await this.ms.nextBucket(we);
        if (!next) break;
        cursor = Math.max(cursor + W, Math.min(alignDown(Date.parse(next), c.windowSeconds), closed));
        continue;
      }
      const counted = toWindowCounts(fresh, ws, we);
      const sessions = await this.ms.sessions(ws, we);
      for (const w of counted) {
        const s = sessions.find((x) => x.agent === w.agent && x.model_version === w.modelVersion);
        if (s && s.sessions > 0) w.sessions = s.sessions;
      }
      // whole sessions that closed in this window: the monitor measures their design effect (read
      // for up to a day of closed windows at once when catching up)
      if (!closedCache || cursor < closedCache.from || cursor >= closedCache.to) {
        const to = Math.max(cursor + W, Math.min(closed, cursor + 86_400_000));
        const byWindow = new Map<number, ClosedSessionRow[]>();
        for (const r of await this.ms.closedSessions(ws, new Date(to).toISOString(), c.sessionIdleSeconds)) {
          const k = alignDown(Date.parse(r.closedAt), c.windowSeconds);
          byWindow.set(k, [...(byWindow.get(k) ?? []), r]);
        }
        closedCache = { from: cursor, to, byWindow };
      }
      // sessions that closed in skipped (empty) windows come with the next evaluated one
      const due: ClosedSessionRow[] = [];
      for (const [k, rows] of closedCache.byWindow)
        if (k <= cursor) {
          due.push(...rows);
          closedCache.byWindow.delete(k);
        }
      const mctx = typeof this.deps.ctx === 'function' ? this.deps.ctx() : this.deps.ctx;
      let windows = attachClosedSessions(counted, due, ws, we);
      if (mctx.agent) windows = await agentRows.attach(windows, ws, we, closed);
      const ev = this.deps.evaluate(state.monitor, windows, mctx);
      for (const n of ev.notices) logger.info({ window: ws }, `notice: ${n}`);
      // the notification pipeline: inhibit → dedup → examples → outbox → record
      const backfill = !c.notifyBackfill && cursor + W + c.latenessSeconds * 1000 <= Date.parse(state.firstStartedAt);
      const rc: RunContext = {
        windowEnd: we,
        now: this.clock(),
        log: state.log,
        opts: c.lifecycle,
        inhibited: [],
        backfill,
        token: `alerts:${name}:${we}`,
        stillLeading: () => this.leading(opts.force),
      };
      const candidate = candidates(ev.findings, state.log, {
        modelVersion: mctx.modelVersion,
        now: rc.now,
        sql: (f, onset) => rowsSql(this.ms.database, f, mctx.modelVersion, onset),
      });
      let notifications: Notification[];
      try {
        notifications = await this.notify(rc, candidate);
      } catch (e) {
        if (e instanceof LostLeadership) break; // the new leader redoes this window from the checkpoint
        throw e;
      }
      if (rc.inhibited.length) this.metrics.inhibited.inc(rc.inhibited.length);
      if (!backfill) {
        this.sent.push(...notifications);
        result.notifications.push(...notifications);
      }
      const decided = { log: rc.log };
      await this.ms.insertTrends(
        ev.trends.map((t) => ({
          window_start: t.windowStart,
          window_end: t.windowEnd,
          rule: t.rule,
          agent: t.agent,
          cluster: t.cluster,
          model_version: t.modelVersion,
          share_now: fin(t.shareNow),
          share_reference: fin(t.shareReference),
          share_eval: fin(t.shareEval),
          escalation_rate: fin(t.escalationRate),
          statistic: fin(t.statistic),
          threshold: fin(t.threshold),
        })),
        `trends:${name}:${we}`,
      );
      this.observe(ev.findings, decided.log);
      state = { ...state, monitor: ev.state, log: decided.log, evaluated: keep };
      seq += 1;
      await this.ms.saveCheckpoint(name, { seq, windowEnd: we, state: JSON.stringify(state) });
      this.countCheckpoint(name);
      cursor += W;
      savedEnd = cursor;
      result.evaluated += 1;
      this.metrics.windows.inc();
      this.lastEnd = cursor;
    }
    let guardChanged = false;
    if (this.leading(opts.force) && (this.deps.guard || state.guard)) {
      try {
        const g = await this.evaluateGuard(state, name, opts.force);
        if (g) {
          guardChanged = JSON.stringify(g.state.guard ?? null) !== JSON.stringify(state.guard ?? null) || JSON.stringify(g.state.log) !== JSON.stringify(state.log);
          state = g.state;
          result.notifications.push(...g.notifications);
          this.sent.push(...g.notifications);
          result.guard = g.summary;
        }
      } catch (e) {
        if (!(e instanceof LostLeadership)) logger.error({ err: e }, 'the canary guard could not be evaluated; retrying at the next poll');
      }
    }
    if ((savedEnd !== cursor || guardChanged) && this.leading(opts.force)) {
      // persist the start, and skipped empty windows (state unchanged), unless another leader moved on
      if ((await this.ms.checkpointSeq(name)) === seq) {
        await this.ms.saveCheckpoint(name, { seq: seq + 1, windowEnd: new Date(cursor).toISOString(), state: JSON.stringify(state) });
        this.countCheckpoint(name);
      }
    }
    this.lastEnd = cursor;
    this.metrics.lag.set((this.clock().getTime() - cursor) / 1000);
    result.windowEnd = new Date(cursor).toISOString();
    return result;
  }

  /**
   * The version_regression rule: evaluate the guard (or end the previous one), then the same
   * pipeline as a window's findings. The caller checkpoints the returned state.
   */
  private async evaluateGuard(
    state: RunnerState,
    name: string,
    force?: boolean,
  ): Promise<{ state: RunnerState; notifications: Notification[]; summary: TickResult['guard'] } | null> {
    const guard = this.deps.guard;
    const now = this.clock();
    let findings: Finding[];
    let promote: Finding | null = null;
    let slice: GuardSlice | null;
    let modelVersion: string;
    let summary: TickResult['guard'] = null;
    if (!guard) {
      // the guard was removed from the config: its canary is over
      findings = [endedFinding(state.guard!, now, 'was removed: the canary is over')];
      modelVersion = state.guard!.modelVersion ?? '';
      slice = null;
    } else {
      const mctx = typeof this.deps.ctx === 'function' ? this.deps.ctx() : this.deps.ctx;
      const ev = await guard.evaluate(state.guard ?? null, now, mctx);
      findings = ev.findings;
      slice = ev.slice;
      modelVersion = ev.modelVersion || mctx.modelVersion;
      summary = { rollback: ev.verdict?.rollback.length ?? 0, promote: ev.verdict?.promote ?? false, ...(ev.waiting ? { waiting: ev.waiting } : {}) };
      promote = ev.promote;
    }
    const rc: RunContext = {
      windowEnd: now.toISOString(),
      now,
      log: state.log,
      opts: this.deps.config.lifecycle,
      inhibited: [],
      backfill: false,
      token: `alerts:${name}:${VERSION_RULE}:${now.toISOString()}`,
      stillLeading: () => this.leading(force),
    };
    const sql = (f: Finding) => (guard && f.onset === new Date(guard.config.since).toISOString() ? guard.sql(now.toISOString()) : '');
    const notifications = await this.notify(rc, guardCandidates(findings, promote, state.log, { modelVersion, now, sql }));
    slice = markSent(slice, notifications);
    this.setFiring(rc.log);
    return { state: { ...state, log: rc.log, guard: slice ?? undefined }, notifications, summary };
  }

  private observe(findings: Finding[], log: NotificationLog): void {
    for (const f of findings) {
      const l = { rule: f.rule, agent: f.scope.agent, cluster: f.scope.cluster === null ? '*' : String(f.scope.cluster) };
      this.metrics.statistic.set(l, fin(f.statistic));
      this.metrics.threshold.set(l, fin(f.threshold));
    }
    this.setFiring(log);
  }

  /** evalgap_alerts_firing from a notification log (it holds the firing alerts only). */
  private setFiring(log: NotificationLog): void {
    this.metrics.firing.reset();
    for (const key of Object.keys(log)) this.metrics.firing.inc({ rule: key.split('|')[0] });
  }

  /**
   * At start, the firing gauge from the durable checkpoint: the alerts still firing when the last
   * window was evaluated (before, a restarted monitor showed none until its next evaluation).
   */
  private async restoreFiring(): Promise<void> {
    const cp = await this.ms.loadCheckpoint(this.deps.config.electionGroup);
    if (!cp) return;
    try {
      this.setFiring((JSON.parse(cp.state) as RunnerState).log ?? {});
    } catch (e) {
      this.deps.logger.warn({ err: e }, 'the monitor checkpoint could not be read; evalgap_alerts_firing starts empty');
    }
  }

  /** Fill in example queries per cluster. */
  private readonly examplesStage: Stage<RunContext> = async (_ctx, items) => {
    const k = this.deps.config.examples;
    const g = this.deps.guard;
    const version = await Promise.all(items.filter((n) => n.alert.rule === VERSION_RULE).map((n) => (g ? g.examples(n, k) : n)));
    return [...(await withExamples(this.ms, items.filter((n) => n.alert.rule !== VERSION_RULE), k)), ...version];
  };

  /** Write to the durable outbox (acks=all); a backfill is not sent. */
  private readonly outboxStage: Stage<RunContext> = async (ctx, items) => {
    if (ctx.backfill) return items;
    if (!ctx.stillLeading()) throw new LostLeadership();
    await this.outbox.send(items);
    for (const n of items) this.metrics.notifications.inc({ kind: n.kind });
    return items;
  };

  /** Record the state changes in the alerts table (idempotent: one token per window). */
  private readonly recordStage: Stage<RunContext> = async (ctx, items) => {
    await this.ms.insertAlerts(
      items.map((n) => alertRow(n, !ctx.backfill)),
      ctx.token,
    );
    return items;
  };

  private readonly notify = pipeline<RunContext>(inhibit, dedup, this.examplesStage, this.outboxStage, this.recordStage);

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticking?.catch(() => undefined);
    await this.election.stop();
    await this.dispatcher.stop();
    await this.outbox.stop();
  }
}

const fin = (x: number) => (Number.isFinite(x) ? x : 0);

/** Fill each notification's clusters with example queries from the rows behind it (k per cluster). */
export async function withExamples(ms: MonitorStore, items: Notification[], k: number): Promise<Notification[]> {
  if (k === 0) return items;
  return Promise.all(
    items.map(async (n) => {
      const a = n.alert;
      const clusters = await Promise.all(
        a.clusters.map(async (cs) => ({
          ...cs,
          examples:
            cs.examples ??
            (await ms.examples({
              from: a.status === 'firing' ? a.onset : a.windowStart,
              to: a.windowEnd,
              cluster: cs.cluster,
              agent: a.agent,
              modelVersion: a.modelVersion,
              uncoveredOnly: a.rule.startsWith('uncovered'),
              limit: k,
            })),
        })),
      );
      return { ...n, alert: { ...a, clusters } };
    }),
  );
}

export function alertRow(n: Notification, notified: boolean): AlertRow {
  const a = n.alert;
  return {
    id: a.id,
    webhook_id: n.webhookId,
    kind: n.kind,
    status: a.status,
    rule: a.rule,
    agent: a.agent,
    cluster: a.cluster,
    severity: a.severity,
    onset: a.onset,
    window_start: a.windowStart,
    window_end: a.windowEnd,
    statistic: fin(a.statistic),
    threshold: fin(a.threshold),
    effect_name: a.effect.name,
    effect: fin(a.effect.value),
    effect_lo: fin(a.effect.lo),
    effect_hi: fin(a.effect.hi),
    summary: a.summary,
    clusters: JSON.stringify(
      a.clusters.map((c) => ({ cluster: c.cluster, label: c.label ?? null, share_now: c.shareNow, share_reference: c.shareReference, share_eval: c.shareEval, examples: c.examples ?? [] })),
    ),
    sql: a.sql,
    group_key: n.group.key,
    notified: notified ? 1 : 0,
    model_version: a.modelVersion,
    created_at: n.createdAt.replace('T', ' ').replace('Z', ''),
  };
}

/** The monitor's view of the coverage model in force. */
export function contextFromManifest(m: {
  version: string;
  calibration: {
    targetFalseUncoveredRate: number;
    expectedRate: number;
    expectedRateInterval: [number, number];
    bands?: {
      novel: number[];
      heldOut?: { deepBands: number; deepShare: number; deepShareInterval: [number, number]; novelDeepShare: number };
      sessions?: SessionReferenceContext;
    };
  };
  clusters: { id: number; label: string; share: number }[];
}): MonitorContext {
  return {
    modelVersion: m.version,
    calibratedRate: m.calibration.expectedRate || m.calibration.targetFalseUncoveredRate,
    calibratedRateInterval: m.calibration.expectedRateInterval,
    evalShares: Object.fromEntries(m.clusters.map((c) => [c.id, c.share])),
    labels: Object.fromEntries(m.clusters.map((c) => [c.id, c.label])),
    ...(m.calibration.bands ? { novelProfile: m.calibration.bands.novel } : {}),
    ...(m.calibration.bands?.heldOut ? { heldOutDeep: heldOutDeepOf(m.calibration.bands.heldOut) } : {}),
    ...(m.calibration.bands?.sessions ? { sessionReference: sessionReferenceOf(m.calibration.bands.sessions) } : {}),
  };
}

/** novel_sessions' fit-time reference from a model's calibration.bands.sessions. */
export function sessionReferenceOf(s: SessionReferenceContext): SessionReferenceContext {
  return { caps: s.caps, deepBands: s.deepBands, groupShares: s.groupShares, novelShares: s.novelShares, cap: s.cap, shape: s.shape, bound: s.bound };
}

/**
 * The fixed reference of novel_vs_calibrated from a model's calibration.bands.heldOut (marked
 * `belowFloor` when the statement predates the deep bands' 1% floor: src/coverage/bands.ts).
 */
export function heldOutDeepOf(h: { deepBands: number; deepShare: number; deepShareInterval: [number, number]; novelDeepShare: number }): NonNullable<MonitorContext['heldOutDeep']> {
  return {
    deepBands: h.deepBands,
    share: h.deepShare,
    interval: h.deepShareInterval,
    novelShare: h.novelDeepShare,
    ...(belowDeepFloor(h.deepBands) ? { belowFloor: true } : {}),
  };
}
