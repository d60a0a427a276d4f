/**
 * What an eval set tests about conversations and tool use, beside what it tests about single
 * queries: the conversation depth of its cases and the tool chains they expect.
 *
 * An eval case may give its depth as `turn` (1 = the first user message) or `turns` (the earlier
 * user messages, so depth = turns.length + 1), and the tool calls it expects as `tools` (ordered
 * names). `fit` writes the profile beside the coverage model (agent.json); `run` registers it in
 * ClickHouse, where the views coverage_by_depth, tool_chain_coverage and session_coverage compare
 * production with it.
 *
 * A production tool chain is covered when exactly its sequence is expected by an eval case of its
 * nearest cluster; relaxed, when each of its consecutive pairs (bigrams, with `^` before the first
 * tool and `$` after the last) appears in some eval case of that cluster. A chain with a bigram no
 * eval case of any cluster has is untested wherever it comes from.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/** Depth bands of conversation turns: 1, 2–3, 4–7, 8+. */
export const DEPTH_BANDS = ['1', '2-3', '4-7', '8+'] as const;

export function depthBand(turn: number): number {
  if (turn <= 1) return 0;
  if (turn <= 3) return 1;
  if (turn <= 7) return 2;
  return 3;
}

/** Consecutive pairs of a chain, with ^ before the first tool and $ after the last. */
export function chainBigrams(tools: readonly string[]): string[] {
  if (tools.length === 0) return [];
  const seq = ['^', ...tools, '$'];
  const out: string[] = [];
  for (let i = 1; i < seq.length; i++) out.push(`${seq[i - 1]}→${seq[i]}`);
  return out;
}

export const chainKey = (tools: readonly string[]): string => tools.join(' → ');

export interface AgentCase {
  /** cluster of the case in the coverage model */
  cluster: number;
  /** conversation depth (1 = first turn); undefined when the case does not say */
  turn?: number;
  /** expected tool chain; undefined when the case does not say */
  tools?: string[];
}

const name = z.string().min(1).max(256);

/** agent.json beside the coverage model: the depth and tools of each of its cases that gives them. */
export const AgentFileSchema = z.object({
  format: z.literal('evalgap-agent-profile'),
  formatVersion: z.literal(1),
  modelVersion: z.string().min(1).max(256),
  cases: z
    .array(z.object({ id: z.string().min(1).max(1024), turn: z.number().int().min(1).max(100_000).optional(), tools: z.array(name).max(1000).optional() }))
    .max(1_000_000),
});

export type AgentFile = z.infer<typeof AgentFileSchema>;

/** What the eval set tests of depth and tool chains (derived from agent.json and the model's clusters). */
export interface AgentProfile {
  modelVersion: string;
  depth: {
    /** eval cases that give a depth */
    cases: number;
    /** their share per depth band (DEPTH_BANDS); zeros when no case gives a depth */
    shares: number[];
    maxTurn: number;
  };
  tools: {
    /** eval cases that list tools */
    cases: number;
    /** distinct expected chains per cluster, with how many cases expect each */
    chains: { cluster: number; tools: string[]; cases: number }[];
  };
}

/** The profile of an eval set's cases (null when no case gives a depth or tools). */
export function agentProfile(modelVersion: string, cases: readonly AgentCase[]): AgentProfile | null {
  const withDepth = cases.filter((c) => c.turn !== undefined);
  const withTools = cases.filter((c) => c.tools !== undefined);
  if (!withDepth.length && !withTools.length) return null;
  const counts = new Array<number>(DEPTH_BANDS.length).fill(0);
  for (const c of withDepth) counts[depthBand(c.turn!)]++;
  const chains = new Map<string, { cluster: number; tools: string[]; cases: number }>();
  for (const c of withTools) {
    const key = `${c.cluster}\u0000${c.tools!.join('\u0000')}`;
    const e = chains.get(key);
    if (e) e.cases++;
    else chains.set(key, { cluster: c.cluster, tools: [...c.tools!], cases: 1 });
  }
  return {
    modelVersion,
    depth: {
      cases: withDepth.length,
      shares: counts.map((n) => (withDepth.length ? n / withDepth.length : 0)),
      maxTurn: withDepth.reduce((m, c) => Math.max(m, c.turn!), 0),
    },
    tools: {
      cases: withTools.length,
      chains: [...chains.values()].sort((a, b) => a.cluster - b.cluster || chainKey(a.tools).localeCompare(chainKey(b.tools))),
    },
  };
}

export type ChainVerdict = 'exact' | 'relaxed' | 'untested' | 'none';

/**
 * The reference check of one production chain against the profile (the SQL view does the same):
 * 'none' when the request called no tool, else exact / relaxed (bigrams of its cluster) / untested,
 * with the first bigram no eval case of its cluster has.
 */
export function chainVerdict(profile: AgentProfile, cluster: number, tools: readonly string[]): { verdict: ChainVerdict; missing?: string } {
  if (tools.length === 0) return { verdict: 'none' };
  const mine = profile.tools.chains.filter((c) => c.cluster === cluster);
  const key = chainKey(tools);
  if (mine.some((c) => chainKey(c.tools) === key)) return { verdict: 'exact' };
  const have = new Set(mine.flatMap((c) => chainBigrams(c.tools)));
  const missing = chainBigrams(tools).find((b) => !have.has(b));
  return missing === undefined ? { verdict: 'relaxed' } : { verdict: 'untested', missing };
}

export const AGENT_PROFILE_FILE = 'agent.json';

/** Write agent.json for the cases that give a depth or tools (nothing when none does). */
export function saveAgentFile(dir: string, modelVersion: string, cases: readonly { id: string; turn?: number; tools?: string[] }[]): boolean {
  const kept = cases.filter((c) => c.turn !== undefined || c.tools !== undefined).map((c) => ({ id: c.id, ...(c.turn !== undefined ? { turn: c.turn } : {}), ...(c.tools !== undefined ? { tools: c.tools } : {}) }));
  const p = path.join(dir, AGENT_PROFILE_FILE);
  if (!kept.length) {
    fs.rmSync(p, { force: true });
    return false;
  }
  const file: AgentFile = { format: 'evalgap-agent-profile', formatVersion: 1, modelVersion, cases: kept };
  fs.writeFileSync(p, JSON.stringify(file) + '\n');
  return true;
}

export class AgentProfileError extends Error {}

/** The per-case depth and tools of a model folder, read back from agent.json; [] when there is none. */
export function readAgentFile(dir: string, modelVersion: string): AgentFile['cases'] {
  const p = path.join(dir, AGENT_PROFILE_FILE);
  if (!fs.existsSync(p)) return [];
  const st = fs.statSync(p);
  if (!st.isFile() || st.size > 256 * 1024 * 1024) throw new AgentProfileError(`${p} is not a file of at most 256 MiB`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(p, 'utf8'));
  } catch (e) {
    throw new AgentProfileError(`${p} is not JSON: ${(e as Error).message}`);
  }
  const r = AgentFileSchema.safeParse(raw);
  if (!r.success) throw new AgentProfileError(`${p} is not a valid agent profile:\n` + r.error.issues.slice(0, 5).map((i) => `  - ${i.path.join('.')}: ${i.message}`).join('\n'));
  if (r.data.modelVersion !== modelVersion) throw new AgentProfileError(`${p} belongs to model ${r.data.modelVersion}, not ${modelVersion}`);
  return r.data.cases;
}

/**
 * The agent profile of a loaded coverage model (null when its eval set gave no depth or tools).
 * Every case in agent.json must be a case of the model: its cluster is the model's label for it.
 */
export function loadAgentProfile(dir: string, model: { manifest: { version: string }; cases: readonly { id: string }[]; labels: Int32Array }): AgentProfile | null {
  const entries = readAgentFile(dir, model.manifest.version);
  if (!entries.length) return null;
  const index = new Map(model.cases.map((c, i) => [c.id, i]));
  const cases: AgentCase[] = entries.map((e) => {
    const i = index.get(e.id);
    if (i === undefined) throw new AgentProfileError(`${path.join(dir, AGENT_PROFILE_FILE)} names case ${JSON.stringify(e.id.slice(0, 80))}, which is not in the model`);
    return { cluster: model.labels[i]!, turn: e.turn, tools: e.tools };
  });
  return agentProfile(model.manifest.version, cases);
}
