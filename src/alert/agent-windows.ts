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
 * For the runner: the agent rows of the window [start, end), with the sessions that closed since
 * `sessionsFrom` (the end of the last evaluated window: sessions closing in skipped empty windows
 * come with the next evaluated one).
 */
export async function withAgentRows(store: StoreReader, windows: WindowCounts[], sessionsFrom: string, start: string, end: string, windowSeconds: number, idleSeconds: number): Promise<WindowCounts[]> {
  const cells = await agentCellsByWindow(store, start, end, windowSeconds);
  const sessions = await closedAgentSessions(store, sessionsFrom < start ? sessionsFrom : start, end, idleSeconds);
  return attachAgentRows(windows, cells, sessions, start, end);
}
