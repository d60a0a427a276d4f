/**
 * The alert lifecycle, as Prometheus Alertmanager does it, over a notification log kept in the
 * monitor's checkpoint: an alert fires once, optionally reminds every repeat interval while it
 * keeps firing, and sends a resolved message when its finding clears (the detectors apply the
 * hysteresis: a finding stays `firing` until its condition has cleared). A global cluster-mix alert
 * inhibits the per-cluster alerts of the same agent whose clusters it names.
 *
 * It is a pipeline of small stages sharing one signature, `(ctx, notifications) → notifications`:
 *   inhibit → dedup   (pure, here)   → examples → outbox → record   (I/O, in the runner)
 * and on the dispatcher's side, per receiver: expire → retry → record (src/alert/dispatcher.ts).
 * Time is the evaluated window's end (event time), so a replay or a backtest gives the same result.
 */
import { alertFromFinding, scopeKey, webhookId, type Alert, type Notification } from './alert.js';
import type { Finding } from '../monitor/types.js';

export interface LogEntry {
  id: string;
  onset: string;
  status: 'firing' | 'resolved';
  /** event time (window end) of the last notification */
  lastNotified: string;
  reminders: number;
}

/** Keyed by scopeKey(rule, agent, cluster). Only firing alerts are kept (resolved ones drop out). */
export type NotificationLog = Record<string, LogEntry>;

export interface LifecycleOptions {
  repeatIntervalMinutes: number;
  inhibit: boolean;
}

export interface NotifyContext {
  /** the end of the evaluated window (event time) */
  windowEnd: string;
  /** the wall clock, for createdAt */
  now: Date;
  log: NotificationLog;
  opts: LifecycleOptions;
  /** alerts muted by inhibition in this evaluation (for logs and metrics) */
  inhibited: Alert[];
}

/** A pipeline stage: the monitor's stages take a NotifyContext, the dispatcher's a DispatchContext. */
export type Stage<C = NotifyContext> = (ctx: C, items: Notification[]) => Promise<Notification[]>;

/** Compose stages; an empty list short-circuits the rest. */
export function pipeline<C>(...stages: Stage<C>[]): Stage<C> {
  return async (ctx, items) => {
    let cur = items;
    for (const s of stages) {
      if (cur.length === 0) break;
      cur = await s(ctx, cur);
    }
    return cur;
  };
}

/**
 * Turn the findings of one evaluation into candidate notifications: every firing finding as a
 * firing alert (kind decided by dedup), and every finding that stopped firing while the log holds
 * it as firing as a resolved alert with the same id.
 */
export function candidates(findings: Finding[], log: NotificationLog, ctx: { modelVersion: string; now: Date; sql?: (f: Finding, onset: string) => string }): Notification[] {
  const out: Notification[] = [];
  for (const f of findings) {
    const key = scopeKey(f.rule, f.scope.agent, f.scope.cluster);
    const entry = log[key];
    if (f.firing) {
      const onset = f.onset ?? f.windowStart;
      const a = alertFromFinding(f, ctx.modelVersion, 'firing', onset, ctx.sql?.(f, onset) ?? '');
      out.push({ webhookId: webhookId(a), kind: 'firing', alert: a, group: { key: groupKey(a.agent), firing: [] }, createdAt: ctx.now.toISOString() });
    } else if (entry && entry.status === 'firing') {
      const a = { ...alertFromFinding(f, ctx.modelVersion, 'resolved', f.windowStart, ctx.sql?.(f, f.windowStart) ?? ''), id: entry.id };
      a.onset = entry.onset;
      out.push({ webhookId: webhookId(a), kind: 'resolved', alert: a, group: { key: groupKey(a.agent), firing: [] }, createdAt: ctx.now.toISOString() });
    }
  }
  return out;
}

export function groupKey(agent: string): string {
  return `agent=${agent}`;
}

/** A firing global cluster_mix alert mutes same-agent per-cluster alerts about the clusters it names. */
export const inhibit: Stage = async (ctx, items) => {
  if (!ctx.opts.inhibit) return items;
  const mix = items.filter((n) => n.alert.status === 'firing' && n.alert.rule === 'cluster_mix' && n.alert.cluster === null);
  if (mix.length === 0) return items;
  return items.filter((n) => {
    const a = n.alert;
    if (a.status !== 'firing' || a.cluster === null) return true;
    const by = mix.find((m) => m.alert.agent === a.agent && m.alert.clusters.some((c) => c.cluster === a.cluster));
    if (!by) return true;
    // never mute what was already sent: its resolved message must still follow
    if (ctx.log[scopeKey(a.rule, a.agent, a.cluster)]?.id === a.id) return true;
    ctx.inhibited.push(a);
    return false;
  });
};

/**
 * Send only what is news against the notification log: a new firing alert, a resolved one that
 * was notified as firing, or a reminder once the repeat interval has elapsed. Updates ctx.log.
 */
export const dedup: Stage = async (ctx, items) => {
  const out: Notification[] = [];
  const log: NotificationLog = { ...ctx.log };
  const now = Date.parse(ctx.windowEnd);
  const repeatMs = ctx.opts.repeatIntervalMinutes * 60_000;
  for (const n of items) {
    const a = n.alert;
    const key = scopeKey(a.rule, a.agent, a.cluster);
    const e = log[key];
    if (a.status === 'firing') {
      if (!e || e.id !== a.id) {
        // a new episode (a previous one of the same scope that never resolved is superseded)
        log[key] = { id: a.id, onset: a.onset, status: 'firing', lastNotified: ctx.windowEnd, reminders: 0 };
        out.push({ ...n, kind: 'firing', webhookId: webhookId(a) });
      } else if (repeatMs > 0 && now - Date.parse(e.lastNotified) >= repeatMs) {
        const r = e.reminders + 1;
        log[key] = { ...e, lastNotified: ctx.windowEnd, reminders: r };
        out.push({ ...n, kind: 'reminder', webhookId: webhookId(a, r) });
      }
    } else if (e && e.id === a.id && e.status === 'firing') {
      delete log[key];
      out.push({ ...n, kind: 'resolved', webhookId: webhookId(a) });
    } else if (a.status === 'notice') {
      // a one-off notice (version_regression's promote): its rule sends it once, it is not logged
      out.push({ ...n, kind: 'notice' });
    }
  }
  // grouping: each notification names the agent's alerts still firing after this evaluation
  const firingByGroup = new Map<string, string[]>();
  for (const [key, e] of Object.entries(log)) {
    const agent = key.split('|')[1];
    const g = groupKey(agent);
    firingByGroup.set(g, [...(firingByGroup.get(g) ?? []), e.id]);
  }
  ctx.log = log;
  return out.map((n) => ({ ...n, group: { key: n.group.key, firing: (firingByGroup.get(n.group.key) ?? []).sort() } }));
};

/** The pure part of the lifecycle: candidates → inhibit → dedup. Returns what to send and the new log. */
export async function decide(
  findings: Finding[],
  log: NotificationLog,
  opts: LifecycleOptions,
  at: { windowEnd: string; now: Date; modelVersion: string; sql?: (f: Finding, onset: string) => string },
): Promise<{ notifications: Notification[]; log: NotificationLog; inhibited: Alert[] }> {
  const ctx: NotifyContext = { windowEnd: at.windowEnd, now: at.now, log, opts, inhibited: [] };
  const notifications = await pipeline(inhibit, dedup)(ctx, candidates(findings, log, at));
  return { notifications, log: ctx.log, inhibited: ctx.inhibited };
}
