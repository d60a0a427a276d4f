/**
 * The `version_regression` rule: a canary guard (src/compare/guard.ts, pure) evaluated by the
 * monitor's runner at every poll, after the closed windows. Unlike the window rules it reads rows
 * by version (cumulative since the canary's start, closed sessions only) through
 * src/store/compare.ts, so it is not a RuleSet; its findings go through the same notification
 * pipeline (dedup against the notification log → examples → outbox → record) and its state (a
 * slice of the runner's checkpoint) survives restarts and leader changes like the rest.
 *
 * Lifecycle, per canary (a guard config; its alert id comes from rule, agent and `since`):
 * - `firing` (severity `rollback`) once a rollback condition holds with confidence, naming every
 *   (segment, outcome) that holds, with both rates, their intervals and example queries. Findings
 *   are latched (an anytime-valid conclusion does not expire), so it keeps firing — reminders per
 *   the lifecycle's repeat interval — until the guard is removed or replaced: then `resolved`.
 * - `notice` (severity `info`): `promote`, once, when the candidate is shown no worse than the
 *   margin in every eligible segment and no rollback condition holds.
 */
import crypto from 'node:crypto';
import { alertFromFinding, alertId } from './alert.js';
import { CanaryGuard, type CanaryGuardState, type GuardConfig, type GuardVerdict, type RollbackFinding } from '../compare/guard.js';
import { ALL, UNCOVERED } from '../compare/detector.js';
import { chooseModel, compareInput } from '../compare/input.js';
import { CompareStore, chTime, comparisonSql, type ComparePeriod } from '../store/compare.js';
import type { StoreReader } from '../store/gaps.js';
import type { ClusterShare, Finding, MonitorContext, VersionComparison, VersionSegment } from '../monitor/types.js';
import type { Notification } from './alert.js';
import { candidates, type NotificationLog } from './lifecycle.js';

export const VERSION_RULE = 'version_regression' as const;

/** The guard's slice of the runner's checkpoint. */
export interface GuardSlice {
  /** digest of the guard config: a changed config is a new canary */
  config: string;
  /** the alert's scope and onset (to resolve it when the guard is removed or replaced) */
  agent: string;
  since: string;
  /** coverage model and clusters tested, fixed at the first evaluation with evidence (the test count must not follow the data) */
  modelVersion: string | null;
  clusters: number[] | null;
  guard: CanaryGuardState;
  /** the promote notice was written to the outbox */
  promoted: boolean;
}

export interface GuardEvaluation {
  slice: GuardSlice | null;
  /** version_regression findings: the guard's (firing or not), and the previous guard's as not firing when it was replaced */
  findings: Finding[];
  /** promote, once (a notice: neither fires nor resolves) */
  promote: Finding | null;
  /** the coverage model of the evidence ('' before any) */
  modelVersion: string;
  verdict: GuardVerdict | null;
  /** why nothing was evaluated */
  waiting?: string;
}

export const guardDigest = (cfg: GuardConfig) => crypto.createHash('sha256').update(JSON.stringify(cfg)).digest('hex').slice(0, 24);

/** The alert's agent: the guard's, or '*' (all agents) when it watches all traffic. */
export const scopeAgent = (cfg: Pick<GuardConfig, 'agent'>) => (cfg.agent === '' ? '*' : cfg.agent);

function freshSlice(cfg: GuardConfig): GuardSlice {
  return { config: guardDigest(cfg), agent: scopeAgent(cfg), since: new Date(cfg.since).toISOString(), modelVersion: null, clusters: null, guard: { fired: [], promoted: false }, promoted: false };
}

const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
const segName = (s: VersionSegment) => (s.segment === 'cluster' ? `cluster ${s.cluster}${s.label ? ` (${s.label})` : ''}` : s.segment === 'uncovered' ? 'uncovered traffic' : 'all traffic');

export function toSegment(f: RollbackFinding): VersionSegment {
  const i = f.interval;
  return {
    cluster: f.cluster,
    segment: f.cluster === UNCOVERED ? 'uncovered' : f.cluster === ALL ? 'all' : 'cluster',
    label: f.label || null,
    share: f.share,
    outcome: f.outcome,
    conditionRatio: f.ratio,
    baseline: { ...f.baseline, lo: i.baseline.lo, hi: i.baseline.hi },
    candidate: { ...f.candidate, lo: i.candidate.lo, hi: i.candidate.hi },
    difference: { ...i.difference },
    ratio: { lo: i.ratio.lo, hi: Number.isFinite(i.ratio.hi) ? i.ratio.hi : null },
    examples: [],
  };
}

/**
 * The findings of one evaluation (pure): the guard's version_regression finding, firing when a
 * rollback condition holds, and the promote notice when it is due and not yet sent.
 */
export function guardFindings(
  cfg: GuardConfig,
  verdict: GuardVerdict,
  at: { now: Date; promoted: boolean; candidateShares?: Record<number, number>; evalShares?: Record<number, number> },
): { finding: Finding; promote: Finding | null } {
  const since = new Date(cfg.since).toISOString();
  const segments = verdict.rollback.map(toSegment).sort((a, b) => b.ratio.lo / b.conditionRatio - a.ratio.lo / a.conditionRatio);
  const top = segments[0];
  const comparison = (v: VersionComparison['verdict'], segs: VersionSegment[]): VersionComparison => ({
    verdict: v,
    baseline: cfg.baseline,
    candidate: cfg.candidate,
    since,
    alpha: cfg.alpha,
    tests: verdict.tests,
    segments: segs,
  });
  const clusters: ClusterShare[] = [];
  for (const s of segments)
    if (s.segment === 'cluster' && !clusters.some((c) => c.cluster === s.cluster))
      clusters.push({ cluster: s.cluster, label: s.label ?? undefined, shareNow: at.candidateShares?.[s.cluster] ?? 0, shareReference: s.share, shareEval: at.evalShares?.[s.cluster] ?? 0 });
  const base = {
    rule: VERSION_RULE,
    scope: { agent: scopeAgent(cfg), cluster: null },
    onset: since,
    windowStart: since,
    windowEnd: at.now.toISOString(),
  };
  const finding: Finding = top
    ? {
        ...base,
        firing: true,
        severity: 'rollback',
        statistic: top.ratio.lo,
        threshold: top.conditionRatio,
        // the statistic is the ratio's lower bound against the condition's ratio; the effect, the difference of the rates (always finite)
        effect: { name: `${top.outcome}_rate_difference`, value: (top.candidate.rate ?? 0) - (top.baseline.rate ?? 0), lo: top.difference.lo, hi: top.difference.hi },
        summary:
          `roll back ${cfg.candidate}: ` +
          segments
            .map((s) => `${segName(s)}: ${s.outcome} ${pct(s.candidate.rate)} vs ${pct(s.baseline.rate)} on ${cfg.baseline}, ratio ≥ ${s.ratio.lo.toFixed(2)} with confidence (condition: > ${s.conditionRatio}×)`)
            .join('; '),
        clusters,
        comparison: comparison('rollback', segments),
      }
    : {
        ...base,
        firing: false,
        severity: 'rollback',
        statistic: 0,
        threshold: 0,
        effect: { name: 'rate_ratio', value: 0, lo: 0, hi: 0 },
        summary: `canary ${cfg.candidate} vs ${cfg.baseline}: no rollback condition holds`,
        clusters: [],
      };
  const p = cfg.promote;
  const promote: Finding | null =
    p && verdict.promote && !at.promoted
      ? {
          ...base,
          firing: false,
          severity: 'info',
          statistic: 0,
          threshold: verdict.promotePending,
          effect: { name: 'pending_tests', value: verdict.promotePending, lo: 0, hi: 0 },
          summary: `promote ${cfg.candidate}: no worse than ${cfg.baseline} in every segment with ≥ ${pct(p.min_share)} of the traffic and overall (${p.outcomes.join(', ')}; margin ${p.ratio ?? '-'}× or +${p.difference ?? '-'}), with confidence`,
          clusters: [],
          comparison: comparison('promote', []),
        }
      : null;
  return { finding, promote };
}

/** The finding that resolves a previous canary's alert (its guard removed or replaced). */
export function endedFinding(prev: GuardSlice, now: Date, why: string): Finding {
  return {
    rule: VERSION_RULE,
    scope: { agent: prev.agent, cluster: null },
    firing: false,
    severity: 'rollback',
    onset: prev.since,
    windowStart: prev.since,
    windowEnd: now.toISOString(),
    statistic: 0,
    threshold: 0,
    effect: { name: 'rate_ratio', value: 0, lo: 0, hi: 0 },
    summary: `canary guard since ${prev.since} ${why}`,
    clusters: [],
  };
}

/** The promote notice as a notification (a notice is not kept in the notification log). */
export function promoteNotification(f: Finding, modelVersion: string, now: Date, sql: string): Notification {
  const id = alertId(f.rule, f.scope.agent, f.scope.cluster, f.onset ?? f.windowStart);
  return {
    webhookId: `${id}.notice`,
    kind: 'notice',
    alert: { ...alertFromFinding(f, modelVersion, 'notice', f.onset ?? f.windowStart, sql), cluster: null },
    group: { key: `agent=${f.scope.agent}`, firing: [] },
    createdAt: now.toISOString(),
  };
}

/**
 * The candidate notifications of one guard evaluation (pure): firing / resolved from the findings
 * against the log (dedup decides what is news), and the promote notice. After the pipeline, a
 * `notice` among what was written means the promote was sent: mark the slice (`markSent`).
 */
export function guardCandidates(
  findings: Finding[],
  promote: Finding | null,
  log: NotificationLog,
  at: { now: Date; modelVersion: string; sql?: (f: Finding) => string },
): Notification[] {
  const out = candidates(findings, log, { modelVersion: at.modelVersion, now: at.now, sql: at.sql });
  if (promote) out.push(promoteNotification(promote, at.modelVersion, at.now, at.sql?.(promote) ?? ''));
  return out;
}

/** The slice after the pipeline wrote `sent`: a promote notice is never sent again. */
export function markSent(slice: GuardSlice | null, sent: readonly Notification[]): GuardSlice | null {
  return slice && sent.some((n) => n.kind === 'notice' && n.alert.rule === VERSION_RULE) ? { ...slice, promoted: true } : slice;
}

/** The guard's I/O: reads the evidence since the canary's start and evaluates it. */
export class VersionGuard {
  readonly digest: string;
  private readonly cs: CompareStore;

  constructor(
    reader: StoreReader,
    readonly config: GuardConfig,
    readonly database: string,
  ) {
    this.cs = new CompareStore(reader);
    this.digest = guardDigest(config);
  }

  period(now: Date): ComparePeriod {
    const c = this.config;
    return {
      baseline: c.baseline,
      candidate: c.candidate,
      since: c.since,
      until: now.toISOString(),
      agent: c.agent,
      slowMs: c.latency_ms ?? Infinity,
      closedBefore: new Date(now.getTime() - c.session_idle_seconds * 1000).toISOString(),
    };
  }

  /** The SQL a person pastes to see the evidence (the parameterized view; evalgap never runs this text). */
  sql(until: string): string {
    return comparisonSql(this.database, this.period(new Date(until)));
  }

  /**
   * One evaluation from the previous slice (null: none yet). A slice of another guard (removed or
   * replaced config) ends that canary: its alert resolves, and this guard starts afresh.
   */
  async evaluate(prev: GuardSlice | null, now: Date, ctx?: Pick<MonitorContext, 'evalShares'>): Promise<GuardEvaluation> {
    const cfg = this.config;
    const findings: Finding[] = [];
    let slice = prev;
    if (prev && prev.config !== this.digest) {
      if (prev.agent !== scopeAgent(cfg) || prev.since !== new Date(cfg.since).toISOString()) findings.push(endedFinding(prev, now, 'was replaced: the canary is over'));
      slice = null;
    }
    slice = slice ? { ...slice, guard: { ...slice.guard, fired: [...slice.guard.fired] } } : freshSlice(cfg);
    const rows = await this.cs.evidence(this.period(now));
    const modelVersion = chooseModel(rows, slice.modelVersion ?? undefined);
    const all = modelVersion ? rows.find((r) => r.model_version === modelVersion && r.segment === ALL) : undefined;
    if (!modelVersion || !all || all.baseline.units === 0 || all.candidate.units === 0) {
      return { slice, findings, promote: null, modelVersion: modelVersion ?? '', verdict: null, waiting: 'no closed sessions of both versions yet' };
    }
    const registered = await this.cs.clusters(modelVersion);
    const { input, clusters } = compareInput(rows, modelVersion, registered);
    slice.modelVersion ??= modelVersion;
    slice.clusters ??= clusters;
    const guard = CanaryGuard.fromJSON(slice.guard, cfg, slice.clusters);
    const verdict = guard.update(input);
    slice.guard = guard.toJSON();
    const candidateShares: Record<number, number> = {};
    for (const s of input.segments) candidateShares[s.cluster] = input.units.candidate > 0 ? s.candidate.mix / input.units.candidate : 0;
    const { finding, promote } = guardFindings(cfg, verdict, { now, promoted: slice.promoted, candidateShares, evalShares: ctx?.evalShares });
    findings.push(finding);
    return { slice, findings, promote, modelVersion, verdict };
  }

  /** Fill a notification's segments and clusters with the candidate's example queries (k each). */
  async examples(n: Notification, k: number): Promise<Notification> {
    const c = n.alert.comparison;
    if (k === 0 || !c || c.segments.length === 0 || n.alert.status !== 'firing') return n;
    const p = this.period(new Date(n.alert.windowEnd));
    const segments = await Promise.all(
      c.segments.map(async (s) => ({ ...s, examples: s.examples.length ? s.examples : (await this.cs.examples(p, n.alert.modelVersion, s.cluster, s.outcome, k)).map((e) => e.query) })),
    );
    const clusters = n.alert.clusters.map((cl) => ({ ...cl, examples: cl.examples ?? [...new Set(segments.filter((s) => s.cluster === cl.cluster).flatMap((s) => s.examples))].slice(0, k) }));
    return { ...n, alert: { ...n.alert, clusters, comparison: { ...c, segments } } };
  }
}
