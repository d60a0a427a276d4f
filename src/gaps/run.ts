/**
 * Gap discovery and export through the store: read the period's uncovered requests and their
 * embeddings, run the pure core (./discover.ts), store the result (coverage_gaps, gap_members)
 * when the store is writable, and turn stored gaps into candidate eval cases.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { runJob } from '../config/workers.js';
import { ManifestSchema } from '../coverage/model.js';
import {
  canWrite,
  clusterLabels,
  clusterTraffic,
  coverageByAgent,
  latestModelVersion,
  previousGaps,
  readLatestGaps,
  readTotals,
  readUncovered,
  readSessionEvidence,
  earlierTurns,
  requestContext,
  type GapRow,
  type StoreReader,
  type Totals,
} from '../store/gaps.js';
import { DEFAULT_DISCOVERY, discover, type DiscoveryInput, type DiscoveryOptions, type DiscoveryResult, type Gap } from './discover.js';
import type { DiscoverJob } from './discover-worker.js';
import { underTested, type UnderTestedCluster } from './undertested.js';

export const DAY_MS = 86_400_000;

export interface DiscoverGapsOptions {
  /** start of the period (epoch ms or Date); default now − 7 days */
  since?: number | Date;
  /** end of the period; default the current time */
  now?: number | Date;
  /** one agent's traffic; default all agents */
  agent?: string;
  /** 'latest' (default): rows scored by the coverage model of the period's latest request; 'all'; or a version */
  modelVersion?: string;
  /** store the result (default: when the store is writable) */
  write?: boolean;
  /** the covered threshold; default the highest coverage score among the uncovered rows read */
  threshold?: number;
  /** eval cases the coverage score averages (default 5, the fit's default) */
  neighbours?: number;
  discovery?: Partial<DiscoveryOptions>;
  /**
   * run the pure core in a worker thread (evalgap run's periodic discovery: its event loop keeps
   * heartbeating and consuming meanwhile); the worker is pushed here so that the caller can
   * terminate it. Default: in this thread (the CLI commands, which have nothing else to do).
   */
  thread?: { started: Worker[] };
  /**
   * where the coverage model that scored the rows is looked up for its novel-topic band profile
   * (`<modelsDir>/coverage/<version>/` or `<modelsDir>/coverage/current/`); without it (or without
   * the model there) the gap kinds come from the deep-share test (src/gaps/discover.ts)
   */
  modelsDir?: string;
  /** the novel-topic band profile to use (overrides the lookup under modelsDir) */
  novelProfile?: readonly number[] | null;
  /** the upper end of the model's expected uncovered rate (overrides the lookup under modelsDir) */
  promisedRate?: number | null;
}

/**
 * What gap discovery uses of coverage model `version`: its novel-topic band profile (null when
 * fitted before bands) and the upper end of its expected uncovered rate, read from its manifest
 * under `<modelsDir>/coverage/` (by version, or `current` when that is the version); null when
 * not found.
 */
export function modelFactsOf(modelsDir: string, version: string): { novelProfile: number[] | null; promisedRate: number } | null {
  if (!version || !/^[\w.-]+$/.test(version)) return null;
  for (const dir of [path.join(modelsDir, 'coverage', version), path.join(modelsDir, 'coverage', 'current')]) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8');
    } catch {
      continue;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      continue;
    }
    const m = ManifestSchema.safeParse(json);
    if (m.success && m.data.version === version) {
      return { novelProfile: m.data.calibration.bands?.novel ?? null, promisedRate: m.data.calibration.expectedRateInterval[1] };
    }
  }
  return null;
}

/** The novel-topic band profile of coverage model `version` (see modelFactsOf). */
export function novelProfileOf(modelsDir: string, version: string): number[] | null {
  return modelFactsOf(modelsDir, version)?.novelProfile ?? null;
}

/** The pure core, here or in a worker thread (./discover-worker.ts). */
async function runCore(input: DiscoveryInput, opts: DiscoveryOptions, thread?: { started: Worker[] }): Promise<DiscoveryResult> {
  if (!thread) return discover(input, opts);
  const job: DiscoverJob = { input, opts };
  // the vectors are moved, not copied (150 MB at 100k rows); the caller does not read them again
  const r = await runJob<{ result: DiscoveryResult }>(import.meta.url, 'gaps/discover-worker.js', job, thread.started, 'gap discovery', [
    input.vectors.buffer as ArrayBuffer,
  ]);
  return r.result;
}

export interface GapReport {
  scope: string;
  runId: string;
  since: string;
  until: string;
  modelVersion: string;
  totals: Totals;
  /** uncovered rows grouped (those with a stored embedding) */
  grouped: number;
  missingEmbeddings: number;
  noise: number;
  /** the session test: whether it ran (not without session ids) and what it sent back to noise */
  sessions: DiscoveryResult['sessions'];
  gaps: Gap[];
  underTested: UnderTestedCluster[];
  byAgent: (Totals & { agent: string })[];
  params: Record<string, number>;
  stored: boolean;
  ms: { read: number; discover: number; write: number };
}

const toMs = (x: number | Date) => (x instanceof Date ? x.getTime() : x);
const iso = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

export async function discoverGaps(store: StoreReader, opts: DiscoverGapsOptions = {}): Promise<GapReport> {
  const until = toMs(opts.now ?? Date.now());
  const since = toMs(opts.since ?? until - 7 * DAY_MS);
  const scope = opts.agent ?? '';
  const t0 = performance.now();
  const base = { since, until, agent: scope || undefined };
  let mv = opts.modelVersion ?? 'latest';
  if (mv === 'latest') mv = (await latestModelVersion(store, base)) ?? '';
  if (mv === 'all') mv = '';
  const w = { ...base, modelVersion: mv || undefined };
  const [totals, data, labels, prev, traffic, byAgent, sessions] = await Promise.all([
    readTotals(store, w),
    readUncovered(store, w),
    clusterLabels(store, mv || undefined),
    previousGaps(store, scope, new Date(until - 30 * DAY_MS).toISOString().slice(0, 10)),
    mv ? clusterTraffic(store, { ...w, modelVersion: mv }) : Promise.resolve([]),
    coverageByAgent(store, w),
    readSessionEvidence(store, w),
  ]);
  const t1 = performance.now();
  let threshold = opts.threshold;
  if (threshold === undefined) {
    threshold = -Infinity;
    for (const r of data.rows) threshold = Math.max(threshold, r.coverage);
    if (!Number.isFinite(threshold)) threshold = 0.5;
  }
  const facts = opts.modelsDir && mv ? modelFactsOf(opts.modelsDir, mv) : null;
  const res = await runCore(
    {
      scope,
      rows: data.rows,
      vectors: data.vectors,
      dim: data.dim,
      totalRequests: totals.requests,
      since,
      until,
      previous: prev,
      clusterLabels: labels,
      threshold,
      neighbours: opts.neighbours ?? 5,
      clusterTraffic: traffic,
      sessionEvidence: sessions,
      novelProfile: opts.novelProfile !== undefined ? opts.novelProfile : (facts?.novelProfile ?? null),
      promisedRate: opts.promisedRate !== undefined ? opts.promisedRate : (facts?.promisedRate ?? null),
    },
    { ...DEFAULT_DISCOVERY, ...opts.discovery },
    opts.thread,
  );
  const t2 = performance.now();
  const runId = createHash('sha256').update(`${scope}\u0000${mv}\u0000${since}\u0000${until}\u0000${Date.now()}`).digest('hex').slice(0, 12);
  const write = opts.write ?? canWrite(store);
  if (write) {
    if (!canWrite(store)) throw new Error(`the store at ${store.location} is read-only here; gaps cannot be stored`);
    const version = iso(Date.now());
    const runDay = new Date(until).toISOString().slice(0, 10);
    await store.insertJson(
      'coverage_gaps',
      res.gaps.map((g) => ({
        scope,
        run_day: runDay,
        gap_id: g.gapId,
        version,
        run_id: runId,
        period_start: iso(since),
        period_end: iso(until),
        model_version: mv,
        status: g.status,
        rank: g.rank,
        label: g.label,
        terms: g.terms,
        members: g.members,
        share: g.share,
        uncovered_share: g.uncoveredShare,
        escalation_rate: g.escalationRate,
        refusal_rate: g.refusalRate,
        failure_rate: g.failureRate,
        bad_rate: g.badRate,
        first_seen: iso(g.firstSeen),
        last_seen: iso(g.lastSeen),
        trend: g.trend,
        growth: g.growth,
        nearest_cluster: g.nearestCluster,
        nearest_cluster_label: g.nearestClusterLabel,
        examples: g.examples,
        example_ids: g.exampleIds,
        redacted_share: g.redactedShare,
        cases_needed: g.casesNeeded,
        priority: g.priority,
        kind: g.kind,
        depth: g.depth,
        deep_share: g.deepShare,
        phrasings: g.phrasings,
        centroid: Array.from(g.centroid),
      })),
    );
    const members = data.rows.map((r, i) => ({
      scope,
      run_day: runDay,
      request_id: r.request_id,
      version,
      gap_id: res.membership[i] >= 0 ? res.gaps[res.membership[i]].gapId : '',
      ts: iso(r.ts),
      agent: r.agent,
      similarity: res.similarity[i],
    }));
    for (let i = 0; i < members.length; i += 50_000) await store.insertJson('gap_members', members.slice(i, i + 50_000));
  }
  const t3 = performance.now();
  return {
    scope,
    runId,
    since: new Date(since).toISOString(),
    until: new Date(until).toISOString(),
    modelVersion: mv,
    totals,
    grouped: data.rows.length,
    missingEmbeddings: data.missingEmbeddings,
    noise: res.params.noise,
    sessions: res.sessions,
    gaps: res.gaps,
    underTested: underTested(traffic),
    byAgent,
    params: { ...res.params, threshold },
    stored: write,
    ms: { read: Math.round(t1 - t0), discover: Math.round(t2 - t1), write: Math.round(t3 - t2) },
  };
}

export interface ExportOptions {
  /** '' = all agents (default) */
  scope?: string;
  /** cases per gap at most (default 10; at most the examples stored per gap) */
  perGap?: number;
  /** cases in all at most (default: no limit) */
  budget?: number;
  /** gaps of a discovery that was not stored (e.g. read-only); default: the latest stored run */
  gaps?: Gap[];
  /** which kinds of gap to export (default both; topics first either way) */
  kinds?: readonly ('topic' | 'thin')[];
}

type ExportGap = Pick<
  GapRow,
  'gap_id' | 'label' | 'rank' | 'priority' | 'first_seen' | 'example_ids' | 'members' | 'status' | 'kind' | 'nearest_cluster' | 'nearest_cluster_label'
>;

function exportGapOf(g: Gap): ExportGap {
  return {
    gap_id: g.gapId,
    label: g.label,
    rank: g.rank,
    priority: g.priority,
    first_seen: g.firstSeen ? iso(g.firstSeen) : '',
    example_ids: g.exampleIds,
    members: g.members,
    status: g.status,
    kind: g.kind,
    nearest_cluster: g.nearestCluster,
    nearest_cluster_label: g.nearestClusterLabel,
  };
}

/** A candidate eval case: the format `evalgap fit` reads, plus the production context for the reviewer. */
export interface GapCase {
  id: string;
  query: string;
  tags: string[];
  gap_id: string;
  /** topic: a topic the eval set does not test; thin: phrasings of eval cluster `nearest_cluster` that just miss */
  gap_kind: 'topic' | 'thin';
  gap_label: string;
  gap_rank: number;
  gap_priority: number;
  request_id: string;
  agent: string;
  outcome: string;
  escalated: boolean;
  seen_at: string;
  gap_first_seen: string;
  /** the eval cluster nearest the gap (for a thin gap: the cluster whose coverage is thin) */
  nearest_cluster: number;
  nearest_cluster_label: string;
  /** a deep turn of a conversation: its depth, and the session's earlier user messages (fit reads both) */
  turn?: number;
  turns?: string[];
}

export interface ExportResult {
  cases: GapCase[];
  gaps: number;
  /** redacted requests skipped: their text is not stored */
  redactedSkipped: number;
  allocation: { gap_id: string; kind: 'topic' | 'thin'; priority: number; cases: number }[];
}

/**
 * Allocate `budget` cases across gaps in proportion to priority (largest remainders), each gap at
 * least one while the budget lasts and at most its `cap`.
 */
export function allocate(priorities: readonly number[], caps: readonly number[], budget: number): number[] {
  const n = priorities.length;
  const out = new Array<number>(n).fill(0);
  let left = Math.min(budget, caps.reduce((s, c) => s + c, 0));
  // one each, best priority first
  const order = priorities.map((_, i) => i).sort((a, b) => priorities[b] - priorities[a] || a - b);
  for (const i of order) {
    if (left <= 0) break;
    if (caps[i] > 0) {
      out[i] = 1;
      left--;
    }
  }
  while (left > 0) {
    const open = order.filter((i) => out[i] < caps[i]);
    if (open.length === 0) break;
    const total = open.reduce((s, i) => s + Math.max(priorities[i], 1e-9), 0);
    const share = open.map((i) => ({ i, want: (left * Math.max(priorities[i], 1e-9)) / total }));
    let given = 0;
    for (const { i, want } of share) {
      const add = Math.min(caps[i] - out[i], Math.floor(want));
      out[i] += add;
      given += add;
    }
    left -= given;
    if (given === 0) {
      // largest remainders
      share.sort((a, b) => (b.want % 1) - (a.want % 1) || priorities[b.i] - priorities[a.i]);
      for (const { i } of share) {
        if (left <= 0) break;
        if (out[i] < caps[i]) {
          out[i]++;
          left--;
        }
      }
    }
  }
  return out;
}

/**
 * Candidate eval cases from the latest stored gaps of a scope: per gap a prefix of its diverse
 * examples (medoid, then farthest-first; near-duplicates were never kept), stratified across gaps
 * by priority, deduplicated by normalised text across gaps, redacted ones skipped.
 */
export async function exportGapCases(store: StoreReader, opts: ExportOptions = {}): Promise<ExportResult> {
  const all: ExportGap[] = opts.gaps ? opts.gaps.map(exportGapOf) : await readLatestGaps(store, opts.scope ?? '');
  const kinds = new Set(opts.kinds ?? ['topic', 'thin']);
  const kindOrder = (k: string) => (k === 'thin' ? 1 : 0);
  const gaps = all
    .filter((g) => g.status !== 'closed' && g.members > 0 && kinds.has(g.kind))
    .sort((a, b) => kindOrder(a.kind) - kindOrder(b.kind) || a.rank - b.rank);
  const ctx = await requestContext(store, [...new Set(gaps.flatMap((g) => g.example_ids))]);
  const perGap = opts.perGap ?? 10;
  const usable = gaps.map((g) =>
    g.example_ids.map((id) => ctx.get(id)).filter((c): c is NonNullable<typeof c> => !!c),
  );
  const redactedSkipped = usable.reduce((s, u) => s + u.filter((c) => Number(c.query_redacted) === 1).length, 0);
  const plain = usable.map((u) => u.filter((c) => Number(c.query_redacted) !== 1));
  const caps = plain.map((u) => Math.min(perGap, u.length));
  const alloc = allocate(
    gaps.map((g) => g.priority),
    caps,
    opts.budget ?? Number.MAX_SAFE_INTEGER,
  );
  const seen = new Set<string>();
  const cases: GapCase[] = [];
  gaps.forEach((g, gi) => {
    let taken = 0;
    for (const c of plain[gi]) {
      if (taken >= alloc[gi]) break;
      const key = c.query.toLowerCase().replace(/\s+/g, ' ').trim();
      if (seen.has(key)) continue;
      seen.add(key);
      taken++;
      cases.push({
        id: `${g.gap_id}-${c.request_id}`,
        query: c.query,
        tags: [g.gap_id],
        gap_id: g.gap_id,
        gap_kind: g.kind,
        gap_label: g.label,
        gap_rank: g.rank,
        gap_priority: g.priority,
        request_id: c.request_id,
        agent: c.agent,
        outcome: c.outcome,
        escalated: Number(c.escalated) === 1,
        seen_at: c.ts,
        gap_first_seen: g.first_seen,
        nearest_cluster: g.nearest_cluster,
        nearest_cluster_label: g.nearest_cluster_label,
      });
    }
  });
  // a case deep in a conversation is exported with its earlier turns, so the eval set gains the conversation
  const deep = await earlierTurns(store, cases.map((c) => c.request_id));
  for (const c of cases) {
    const d = deep.get(c.request_id);
    if (d) {
      c.turn = d.turn;
      c.turns = d.turns;
    }
  }
  return {
    cases,
    gaps: gaps.length,
    redactedSkipped,
    allocation: gaps.map((g) => ({ gap_id: g.gap_id, kind: g.kind, priority: g.priority, cases: cases.filter((c) => c.gap_id === g.gap_id).length })),
  };
}

/**
 * Under-tested eval clusters of a period (default: last 7 days, all agents, the latest model),
 * with 95% Wilson intervals; flagged ones first. For the report.
 */
export async function readUnderTested(
  store: StoreReader,
  opts: { since?: number | Date; now?: number | Date; agent?: string; modelVersion?: string } = {},
): Promise<UnderTestedCluster[]> {
  const until = toMs(opts.now ?? Date.now());
  const since = toMs(opts.since ?? until - 7 * DAY_MS);
  const w = { since, until, agent: opts.agent || undefined };
  let mv = opts.modelVersion ?? 'latest';
  if (mv === 'latest' || mv === 'all') mv = (await latestModelVersion(store, w)) ?? '';
  return mv ? underTested(await clusterTraffic(store, { ...w, modelVersion: mv })) : [];
}

export { readLatestGaps, readGapHistory, coverageOverTime, coverageByAgent, readTotals } from '../store/gaps.js';
