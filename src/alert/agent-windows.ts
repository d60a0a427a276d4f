/**
 * The agent rules' window data (src/monitor/agent-rules.ts): each window's requests per
 * conversation depth band and tool chain, and the agent cells of whole closed sessions, read from
 * `requests` through src/store/agent.ts and attached to the window counts of their agent and model
 * version (an agent with such rows but no counts gets an empty window to carry them).
 */
import { agentCellsByWindow, closedAgentSessions, type AgentCellRow, type AgentSessionRow } from '../store/agent.js';
import type { StoreReader } from '../store/gaps.js';
import type { WindowCounts } from '../monitor/types.js';

export function attachAgentRows(windows: WindowCounts[], cells: readonly AgentCellRow[], sessions: readonly AgentSessionRow[], start: string, end: string): WindowCounts[] {
  const out = windows.slice();
  const win = (agent: string, model: string) => {
    let w = out.find((x) => x.agent === agent && x.modelVersion === model);
    if (!w) out.push((w = { start, end, agent, modelVersion: model, clusters: [] }));
    return w;
  };
  for (const r of cells) (win(r.agent, r.model_version).agentCells ??= []).push({ depthBand: r.depth_band, cluster: r.cluster, tools: r.tools, requests: r.requests, failed: r.failed });
  for (const r of sessions)
    (win(r.agent, r.model_version).agentSessions ??= []).push({ session: r.session, depthBand: r.depth_band, cluster: r.cluster, tools: r.tools, requests: r.requests, failed: r.failed });
  return out;
}

/**
 * For the runner: the agent rows of each evaluated window, read for up to a day of closed windows
 * at once when catching up (as the core's closed sessions are). A window gets its own requests and
 * the sessions that closed since the last evaluated window (sessions closing in skipped empty
 * windows come with the next evaluated one).
 */
export class AgentRowReader {
  private cache: { from: number; to: number; cells: Map<number, AgentCellRow[]>; sessions: Map<number, AgentSessionRow[]> } | null = null;

  constructor(
    private readonly store: StoreReader,
    private readonly windowSeconds: number,
    private readonly idleSeconds: number,
  ) {}

  /** `closed`: the end of the last closed window (ms); reads never go past it */
  async attach(windows: WindowCounts[], start: string, end: string, closed: number): Promise<WindowCounts[]> {
    const s = Date.parse(start);
    const W = this.windowSeconds * 1000;
    if (!this.cache || s < this.cache.from || s >= this.cache.to) {
      const to = Math.max(s + W, Math.min(closed, s + 86_400_000));
      const cells = new Map<number, AgentCellRow[]>();
      for (const r of await agentCellsByWindow(this.store, start, new Date(to).toISOString(), this.windowSeconds)) {
        const k = Date.parse(r.window);
        cells.set(k, [...(cells.get(k) ?? []), r]);
      }
      const sessions = new Map<number, AgentSessionRow[]>();
      for (const r of await closedAgentSessions(this.store, start, new Date(to).toISOString(), this.idleSeconds)) {
        const k = Math.floor(Date.parse(r.closedAt) / W) * W;
        sessions.set(k, [...(sessions.get(k) ?? []), r]);
      }
      // sessions that closed in windows skipped before this read are still due
      if (this.cache) for (const [k, rows] of this.cache.sessions) if (k < s) sessions.set(k, [...rows, ...(sessions.get(k) ?? [])]);
      this.cache = { from: s, to, cells, sessions };
    }
    const due: AgentSessionRow[] = [];
    for (const [k, rows] of this.cache.sessions)
      if (k <= s) {
        due.push(...rows);
        this.cache.sessions.delete(k);
      }
    return attachAgentRows(windows, this.cache.cells.get(s) ?? [], due, start, end);
  }
}
