/**
 * An alert as evalgap stores and delivers it. Its identity is (rule, scope, onset window): firing
 * and resolved are two states of one alert, so both carry the same id; a delivery's idempotency key
 * (the Standard Webhooks `webhook-id`) is the alert id plus the state (plus the reminder number).
 */
import crypto from 'node:crypto';
import type { Finding } from '../monitor/types.js';
import { requestsSql } from '../store/monitor.js';

/** notice: a one-off message that neither fires nor resolves (the canary guard's promote) */
export type AlertStatus = 'firing' | 'resolved' | 'notice';
export type NotificationKind = 'firing' | 'reminder' | 'resolved' | 'notice';

/** A finding's figures (the window whose evaluation produced this state), with the alert's identity and state. */
export interface Alert
  extends Pick<Finding, 'rule' | 'severity' | 'windowStart' | 'windowEnd' | 'statistic' | 'threshold' | 'effect' | 'summary' | 'clusters' | 'comparison'> {
  id: string;
  agent: string;
  cluster: number | null;
  status: AlertStatus;
  /** start of the window in which the episode began (ISO) */
  onset: string;
  /** SQL that lists the rows behind the alert (for a person to paste; evalgap never runs it) */
  sql: string;
  modelVersion: string;
}

/** One state change to notify: what flows through the notification pipeline and the outbox. */
export interface Notification {
  /** the Standard Webhooks webhook-id: receivers dedupe by it */
  webhookId: string;
  kind: NotificationKind;
  alert: Alert;
  /** alerts grouped with this one: the same agent's other firing alerts (ids) */
  group: { key: string; firing: string[] };
  /** wall-clock time the notification was written to the outbox (ISO); the dispatcher's max age counts from it */
  createdAt: string;
}

export function scopeKey(rule: string, agent: string, cluster: number | null): string {
  return `${rule}|${agent}|${cluster === null ? '*' : cluster}`;
}

/** Deterministic: the same rule, scope and onset window always give the same id. */
export function alertId(rule: string, agent: string, cluster: number | null, onset: string): string {
  const h = crypto.createHash('sha256').update(`${scopeKey(rule, agent, cluster)}|${new Date(onset).toISOString()}`).digest('hex');
  return `al_${h.slice(0, 24)}`;
}

export function webhookId(alert: Pick<Alert, 'id' | 'status'>, reminder = 0): string {
  return reminder > 0 ? `${alert.id}.${alert.status}.r${reminder}` : `${alert.id}.${alert.status}`;
}

/** The SQL a person pastes to see the rows behind a finding (display text; src/store/ owns the table). */
export function rowsSql(database: string, f: Pick<Finding, 'rule' | 'scope' | 'windowStart' | 'windowEnd'>, modelVersion: string, from?: string): string {
  return requestsSql(database, {
    from: toSqlTime(from ?? f.windowStart),
    to: toSqlTime(f.windowEnd),
    modelVersion,
    agent: f.scope.agent === '*' ? null : f.scope.agent,
    cluster: f.scope.cluster,
    uncoveredOnly: f.rule.startsWith('uncovered'),
    escalatedOnly: f.rule === 'escalation',
  });
}

export function toSqlTime(iso: string): string {
  return new Date(iso).toISOString().replace('T', ' ').replace('Z', '');
}

/** The alert a firing finding stands for (examples and SQL are filled in by the runner). */
export function alertFromFinding(f: Finding, modelVersion: string, status: AlertStatus, onset: string, sql = ''): Alert {
  return {
    id: alertId(f.rule, f.scope.agent, f.scope.cluster, onset),
    rule: f.rule,
    agent: f.scope.agent,
    cluster: f.scope.cluster,
    severity: f.severity,
    status,
    onset,
    windowStart: f.windowStart,
    windowEnd: f.windowEnd,
    statistic: f.statistic,
    threshold: f.threshold,
    effect: f.effect,
    summary: f.summary,
    clusters: f.clusters,
    ...(f.comparison ? { comparison: f.comparison } : {}),
    sql,
    modelVersion,
  };
}
