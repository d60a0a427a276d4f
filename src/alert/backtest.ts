/**
 * `evalgap monitor --backtest --from T1 --to T2`: replay the stored aggregates through the same
 * detectors and the same lifecycle (inhibit, dedup, reminders) and list what would have been
 * notified, with onsets and statistics. Nothing is written and nothing is sent. Rows are counted
 * in their own window (a replay has no late rows).
 */
import type { Notification } from './alert.js';
import { rowsSql } from './alert.js';
import type { MonitorConfig } from './config.js';
import { decide, type NotificationLog } from './lifecycle.js';
import { alignDown, attachClosedSessions, toWindowCounts } from './windows.js';
import type { ClosedSessionRow, MonitorStore } from '../store/monitor.js';
import { withExamples } from './runner.js';
import { attachAgentRows } from './agent-windows.js';
import { agentCellsByWindow, closedAgentSessions, type AgentCellRow, type AgentSessionRow } from '../store/agent.js';
import type { StoreReader } from '../store/gaps.js';
import type { EvaluateWindow, MonitorContext, MonitorState } from '../monitor/types.js';

export interface BacktestResult {
  from: string;
  to: string;
  windows: number;
  evaluated: number;
  notifications: Notification[];
  notices: string[];
}

export async function runBacktest(
  ms: MonitorStore,
  evaluate: EvaluateWindow,
  ctx: MonitorContext,
  config: Pick<MonitorConfig, 'windowSeconds' | 'lifecycle' | 'examples' | 'sessionIdleSeconds'>,
  from: string,
  to: string,
  /** the store behind `ms`, for the agent rules' rows (read only when the context has an agent profile) */
  agentStore?: StoreReader,
): Promise<BacktestResult> {
  const W = config.windowSeconds * 1000;
  const start = alignDown(Date.parse(from), config.windowSeconds);
  const end = Date.parse(to);
  let state: MonitorState | null = null;
  let log: NotificationLog = {};
  const out: BacktestResult = { from: new Date(start).toISOString(), to: new Date(end).toISOString(), windows: 0, evaluated: 0, notifications: [], notices: [] };
  const CHUNK = Math.max(1, Math.round(86_400_000 / W)) * W; // read about a day of windows at a time
  for (let c0 = start; c0 < end; c0 += CHUNK) {
    const c1 = Math.min(c0 + CHUNK, end);
    const rows = await ms.windowRows(new Date(c0).toISOString(), new Date(c1).toISOString());
    const sessions = await ms.sessionsByWindow(new Date(c0).toISOString(), new Date(c1).toISOString(), config.windowSeconds);
    const closed = new Map<number, ClosedSessionRow[]>();
    for (const r of await ms.closedSessions(new Date(c0).toISOString(), new Date(c1).toISOString(), config.sessionIdleSeconds)) {
      const w = alignDown(Date.parse(r.closedAt), config.windowSeconds);
      closed.set(w, [...(closed.get(w) ?? []), r]);
    }
    const agentCells = new Map<number, AgentCellRow[]>();
    const agentSessions = new Map<number, AgentSessionRow[]>();
    if (agentStore && ctx.agent) {
      for (const r of await agentCellsByWindow(agentStore, new Date(c0).toISOString(), new Date(c1).toISOString(), config.windowSeconds)) {
        const w = Date.parse(r.window);
        agentCells.set(w, [...(agentCells.get(w) ?? []), r]);
      }
      for (const r of await closedAgentSessions(agentStore, new Date(c0).toISOString(), new Date(c1).toISOString(), config.sessionIdleSeconds)) {
        const w = alignDown(Date.parse(r.closedAt), config.windowSeconds);
        agentSessions.set(w, [...(agentSessions.get(w) ?? []), r]);
      }
    }
    const byWindow = new Map<number, typeof rows>();
    for (const r of rows) {
      const w = alignDown(Date.parse(r.bucket), config.windowSeconds);
      byWindow.set(w, [...(byWindow.get(w) ?? []), r]);
    }
    for (let w = c0; w + W <= c1; w += W) {
      out.windows += 1;
      const rs = byWindow.get(w);
      if (!rs && !closed.has(w)) continue;
      const ws = new Date(w).toISOString();
      const we = new Date(w + W).toISOString();
      let windows = attachClosedSessions(toWindowCounts(rs ?? [], ws, we), closed.get(w) ?? [], ws, we);
      if (agentCells.has(w) || agentSessions.has(w)) windows = attachAgentRows(windows, agentCells.get(w) ?? [], agentSessions.get(w) ?? [], ws, we);
      for (const x of windows) {
        const s = sessions.find((y) => y.window === ws && y.agent === x.agent && y.model_version === x.modelVersion);
        if (s && s.sessions > 0) x.sessions = s.sessions;
      }
      const ev = evaluate(state, windows, ctx);
      state = ev.state;
      out.notices.push(...ev.notices.map((n) => `${ws}: ${n}`));
      const d = await decide(ev.findings, log, config.lifecycle, {
        windowEnd: we,
        now: new Date(w + W),
        modelVersion: ctx.modelVersion,
        sql: (f, onset) => rowsSql(ms.database, f, ctx.modelVersion, onset),
      });
      log = d.log;
      out.notifications.push(...(await withExamples(ms, d.notifications, config.examples)));
      out.evaluated += 1;
    }
  }
  return out;
}
