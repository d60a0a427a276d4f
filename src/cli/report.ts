/**
 * `evalgap report`: reads the store (src/store/report.ts), the coverage model folder and, for the
 * map, embeds a sample of stored queries; renders one self-contained HTML file (src/report).
 */
import fs from 'node:fs';
import { depthCoverage, sessionSummary, toolChains } from '../store/agent.js';
import { createRequire } from 'node:module';
import path from 'node:path';
import { loadCoverageModel, type CoverageModel } from '../coverage/model.js';
import type { Embedder } from '../embed/embedder.js';
import { renderReport } from '../report/html.js';
import { pcaMap } from '../report/pca.js';
import type { AgentSection, ReportData, ReportGap, ReportProductionScore, ReportVersionComparison } from '../report/types.js';
import { CompareStore } from '../store/compare.js';
import { compareFromStore } from './compare.js';
import { UserError } from './errors.js';
import { computeEstimate, EstimateError } from '../estimate/run.js';
import { readWeightedScores } from '../store/estimate.js';
import { headline } from './estimate.js';
import {
  clusterTraffic,
  coverageSeries,
  dataSpan,
  evalClusters,
  recentAlerts,
  sampleQueries,
} from '../store/report.js';
import { readLatestGaps, requestContext } from '../store/gaps.js';
import { discoverGaps } from '../gaps/run.js';
import type { Store } from '../store/store.js';

export interface ReportOptions {
  since: Date;
  /** how `since` was given, e.g. "7d" */
  sinceText: string;
  /** coverage model folder (or symlink): eval embeddings for the map */
  modelPath?: string;
  /** embeds sampled production queries for the map; without it the map shows eval cases only */
  embedder?: Embedder | null;
  /** production queries sampled for the map */
  mapSample?: number;
  /** eval cases drawn on the map at most */
  evalSample?: number;
  title?: string;
  now?: Date;
}

const STEPS = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

export { parseSince } from './period.js';

/** The inlined charting library: Chart.js's UMD build from node_modules. */
export function chartJsSource(): string {
  const require = createRequire(import.meta.url);
  const main = require.resolve('chart.js'); // …/chart.js/dist/chart.cjs
  return fs.readFileSync(path.join(path.dirname(main), 'chart.umd.min.js'), 'utf8');
}

const fmt = (d: Date) => d.toISOString().slice(0, 19).replace('T', ' ');

/** At most this many examples per gap in the report (the stored gaps keep up to 25). */
const REPORT_EXAMPLES = 4;

/**
 * The ranked gaps: the latest stored gap discovery (`evalgap gaps`, `export-gaps`, or the periodic
 * one of `evalgap run`), open gaps by rank, then the ones it marked closed; when none is stored
 * yet, a discovery over the report's period run now and not stored (the report only reads).
 */
export async function gapsForReport(store: Store, since: Date, now: Date): Promise<{ gaps: ReportGap[]; note: string }> {
  const priority =
    'new topics first, then near misses of tested clusters (thin coverage); each ranked by priority = members × (1 + 4 × the share of them escalated, refused or failed) × novelty (how far outside the eval set their depth bands sit)';
  const stored = await readLatestGaps(store, '');
  let gaps: Omit<ReportGap, 'examples'>[];
  let examples: { text: string; id: string }[][];
  let note: string;
  if (stored.length) {
    const g0 = stored[0];
    gaps = stored.map((g) => ({
      rank: g.rank,
      id: g.gap_id,
      status: g.status,
      kind: g.kind,
      label: g.label,
      requests: g.members,
      share: g.share,
      escalationRate: g.escalation_rate,
      firstSeen: g.status === 'closed' ? '' : g.first_seen.slice(0, 19),
      lastSeen: g.status === 'closed' ? '' : g.last_seen.slice(0, 19),
      nearest: g.nearest_cluster_label,
      priority: g.priority,
    }));
    examples = stored.map((g) => g.examples.slice(0, REPORT_EXAMPLES).map((text, i) => ({ text, id: g.example_ids[i] })));
    note =
      `The latest stored gap discovery (run ${g0.run_id}, uncovered traffic of ${g0.period_start.slice(0, 16)} → ${g0.period_end.slice(0, 16)} UTC` +
      `${g0.model_version ? ` scored by coverage model ${g0.model_version}` : ''}): emerging topics of uncovered requests (HDBSCAN over their stored embeddings), ` +
      `labelled by distinctive terms, with ids kept across runs; ${priority}.`;
  } else {
    const r = await discoverGaps(store, { since, now, write: false });
    gaps = r.gaps.map((g) => ({
      rank: g.rank,
      id: g.gapId,
      status: g.status,
      kind: g.kind,
      label: g.label,
      requests: g.members,
      share: g.share,
      escalationRate: g.escalationRate,
      firstSeen: g.firstSeen ? fmt(new Date(g.firstSeen)) : '',
      lastSeen: g.lastSeen ? fmt(new Date(g.lastSeen)) : '',
      nearest: g.nearestClusterLabel,
      priority: g.priority,
    }));
    examples = r.gaps.map((g) => g.examples.slice(0, REPORT_EXAMPLES).map((text, i) => ({ text, id: g.exampleIds[i] })));
    note =
      `No gap discovery stored yet: discovered for this report over the period's uncovered traffic` +
      `${r.modelVersion ? ` scored by coverage model ${r.modelVersion}` : ''} (not stored; evalgap gaps stores it): ` +
      `emerging topics (HDBSCAN over the stored embeddings), labelled by distinctive terms; ${priority}; ` +
      `${r.noise} of ${r.grouped} uncovered requests left as noise.`;
  }
  // which examples are redacted (their stored text is the sha256)
  const ctx = await requestContext(store, [...new Set(examples.flat().map((e) => e.id))]);
  return {
    gaps: gaps.map((g, i) => ({
      ...g,
      examples: examples[i].map((e) => ({ text: e.text, redacted: Number(ctx.get(e.id)?.query_redacted ?? 0) === 1 })),
    })),
    note,
  };
}

function sampleRows(n: number, max: number): number[] {
  if (n <= max) return [...Array(n).keys()];
  const step = n / max;
  return Array.from({ length: max }, (_, i) => Math.floor(i * step));
}

export async function buildReportData(store: Store, o: ReportOptions): Promise<ReportData> {
  const now = o.now ?? new Date();
  const span = await dataSpan(store, o.since);
  let model: CoverageModel | null = null;
  if (o.modelPath && fs.existsSync(o.modelPath)) model = loadCoverageModel(o.modelPath);
  const alerts = await recentAlerts(store);
  const base = {
    title: o.title ?? 'evalgap: production traffic against eval coverage',
    generatedAt: fmt(now),
    alerts,
    agent: await agentSection(store, o.since.getTime(), now.getTime() + 1),
  };
  if (!span) {
    return {
      ...base,
      period: { since: o.sinceText, first: fmt(o.since), last: fmt(now), split: fmt(now) },
      totals: { requests: 0, uncovered: 0, escalated: 0, redacted: 0 },
      model: null,
      series: { stepSeconds: 300, labels: [], requests: [], escalationRate: [], uncoveredShare: [] },
      clusters: [],
      map: { eval: [], covered: [], uncovered: [], note: 'No stored traffic in this period.' },
      gaps: [],
      gapsNote: 'No stored traffic in this period.',
    };
  }
  const spanSec = Math.max(1, (span.last.getTime() - span.first.getTime()) / 1000);
  // at most ~60 buckets, ~20 requests or more in each where the period still gets ~12 buckets
  const want = Math.max(spanSec / 60, Math.min((20 * spanSec) / span.requests, spanSec / 12));
  const stepSeconds = STEPS.find((s) => s >= want) ?? 86400;
  const series = await coverageSeries(store, o.since, stepSeconds);
  const labels = [...new Set(series.map((p) => p.t))].sort();
  const at = new Map(labels.map((l, i) => [l, i]));
  const versions = [...new Set(series.map((p) => p.model_version))];
  const requests = labels.map(() => 0);
  const escalated = labels.map(() => 0);
  const perVersion = versions.map((version) => ({ version, n: labels.map(() => 0), u: labels.map(() => 0) }));
  for (const p of series) {
    const i = at.get(p.t)!;
    requests[i] += p.requests;
    escalated[i] += p.escalated;
    const v = perVersion[versions.indexOf(p.model_version)];
    v.n[i] += p.requests;
    v.u[i] += p.uncovered;
  }
  const short = (t: string) => (stepSeconds < 60 ? t.slice(5, 19) : t.slice(5, 16));

  const split = new Date(span.first.getTime() + 0.75 * (span.last.getTime() - span.first.getTime()));
  const traffic = await clusterTraffic(store, span.latestModel, o.since, split);
  const refTotal = traffic.reduce((a, c) => a + c.reference, 0);
  const recTotal = traffic.reduce((a, c) => a + c.recent, 0);
  const registered = await evalClusters(store, span.latestModel);
  const byCluster = new Map(traffic.map((c) => [c.cluster, c]));
  const clusters = [
    ...traffic.map((c) => ({
      label: c.label,
      evalShare: c.eval_share,
      referenceShare: refTotal ? c.reference / refTotal : 0,
      recentShare: recTotal ? c.recent / recTotal : 0,
      escalationRate: c.requests ? c.escalated / c.requests : null,
      requests: c.requests,
    })),
    // eval clusters production never reached
    ...registered.filter((c) => !byCluster.has(c.cluster)).map((c) => ({
      label: c.label, evalShare: c.share, referenceShare: 0, recentShare: 0, escalationRate: null, requests: 0,
    })),
  ]
    .sort((a, b) => (b.label === 'uncovered' ? 1 : 0) - (a.label === 'uncovered' ? 1 : 0) || Math.max(b.evalShare, b.recentShare) - Math.max(a.evalShare, a.recentShare))
    .slice(0, 16);

  // the map: eval embeddings from the model folder, production ones by embedding a sample of stored text.
  // TODO(lead): production vectors could come from request_embeddings instead (src/store/gaps.ts), but it
  // keeps every uncovered row and only 1 in 20 covered ones, so the map's mix would need weighting, and
  // the CLI's --map-sample help and embedder loading (src/cli/main.ts) would change with it.
  let map: ReportData['map'] = { eval: [], covered: [], uncovered: [], note: '' };
  if (model) {
    const dim = model.manifest.embedding.dim;
    const evalRows = sampleRows(model.cases.length, o.evalSample ?? 1500);
    const ev = new Float32Array(evalRows.length * dim);
    evalRows.forEach((r, i) => ev.set(model!.embeddings.subarray(r * dim, r * dim + dim), i * dim));
    const sample = o.embedder && model.manifest.version === span.latestModel ? await sampleQueries(store, span.latestModel, o.since, o.mapSample ?? 400) : [];
    const pv = sample.length ? (await o.embedder!.embed(sample.map((s) => s.query))).vectors : new Float32Array(0);
    const proj = pcaMap({ dim, eval: ev, production: pv });
    map = {
      eval: proj.eval,
      covered: proj.production.filter((_, i) => sample[i].covered === 1),
      uncovered: proj.production.filter((_, i) => sample[i].covered === 0),
      note:
        `PCA (first two components) of ${evalRows.length} eval cases of ${model.manifest.version} and ${sample.length} production ` +
        `queries sampled from the period and embedded again for this map` +
        (span.redacted ? ' (rows stored with redacted text cannot be placed)' : '') +
        (model.manifest.version !== span.latestModel ? `; the model folder holds ${model.manifest.version}, not ${span.latestModel} which scored the latest rows, so production is not drawn` : '') +
        '. Red points far from grey ones are traffic the eval set does not reach.',
    };
  } else {
    map.note = 'No coverage model folder given (--model): the map needs its eval embeddings.';
  }
  const { gaps, note } = await gapsForReport(store, o.since, now);
  const productionScore = await productionScoreForReport(store, o.since, now);
  const agentVersions = await versionsForReport(store, o.since, now);
  const m = model?.manifest;
  return {
    ...base,
    period: { since: o.sinceText, first: fmt(span.first), last: fmt(span.last), split: fmt(split) },
    totals: { requests: span.requests, uncovered: span.uncovered, escalated: span.escalated, redacted: span.redacted },
    model: m
      ? { version: m.version, k: m.params.k, cases: m.evalSet.uniqueCases, threshold: m.calibration.threshold, targetRate: m.calibration.targetFalseUncoveredRate }
      : null,
    series: {
      stepSeconds,
      labels: labels.map(short),
      requests,
      escalationRate: requests.map((n, i) => (n ? escalated[i] / n : null)),
      uncoveredShare: perVersion.map((v) => ({ version: v.version, values: v.n.map((n, i) => (n ? v.u[i] / n : null)) })),
    },
    clusters,
    map,
    gaps,
    gapsNote: note,
    productionScore,
    versions: agentVersions,
  };
}

/** Candidates compared per report at most (the versions with the most requests after the baseline). */
const REPORT_CANDIDATES = 3;

/**
 * With two or more agent versions in the period: each of the next ones (by requests, at most 3)
 * against the version with the most requests, as `evalgap compare` does (α = 0.05 per comparison).
 */
export async function versionsForReport(store: Store, since: Date, now: Date): Promise<ReportVersionComparison[]> {
  const seen = (await new CompareStore(store).versions({ since: since.toISOString(), until: now.toISOString(), agent: '' })).filter((v) => v.version !== '');
  if (seen.length < 2) return [];
  const baseline = seen[0].version;
  const out: ReportVersionComparison[] = [];
  for (const c of seen.slice(1, 1 + REPORT_CANDIDATES)) {
    let rep;
    try {
      rep = await compareFromStore(store, { baseline, candidate: c.version, since, until: now, agent: '', alpha: 0.05 });
    } catch (e) {
      if (e instanceof UserError) continue; // e.g. no closed session of one version yet
      throw e;
    }
    const r = rep.result;
    const name = (cl: number) => (cl === -2 ? 'all traffic' : cl === -1 ? 'uncovered' : `cluster ${cl}`);
    const rows: ReportVersionComparison['rows'] = [];
    for (const s of [r.overall, ...r.segments.filter((x) => x.verdict !== 'no evidence yet')])
      for (const o of s.outcomes) {
        if (s !== r.overall && o.verdict === 'no evidence yet') continue;
        if (o.baseline.units + o.candidate.units === 0) continue;
        rows.push({ segment: name(s.cluster), label: s.cluster >= 0 ? (s.label ?? '') : '', outcome: o.outcome, baseline: o.baseline.rate, candidate: o.candidate.rate, lo: o.interval.difference.lo, hi: o.interval.difference.hi, verdict: o.verdict });
      }
    out.push({
      baseline,
      candidate: c.version,
      modelVersion: rep.model_version,
      alpha: r.alpha,
      tests: r.tests,
      units: { ...r.overall.units },
      mixDiffers: r.mixDiffers,
      rows,
      worse: r.worse.map(name),
      better: r.better.map(name),
    });
  }
  return out;
}

/** The eval score reweighted to the period's traffic, and the stored daily rows; null without stored eval results. */
async function productionScoreForReport(store: Store, since: Date, now: Date): Promise<ReportProductionScore | null> {
  let rep;
  try {
    rep = await computeEstimate(store, { since: since.getTime(), until: now.getTime() });
  } catch (e) {
    if (e instanceof EstimateError) return null;
    throw e;
  }
  const e = rep.estimate;
  const days = await readWeightedScores(store, '', since.toISOString().slice(0, 10));
  return {
    headline: headline(e),
    modelVersion: rep.modelVersion,
    runId: rep.runId,
    raw: e.raw,
    estimate: e.estimate,
    interval: e.interval,
    level: e.level,
    untested: e.untested,
    bounds: e.bounds ? { allFail: e.bounds.allFail.estimate, nearest: e.bounds.nearest.estimate, allPass: e.bounds.allPass.estimate } : null,
    days: days.map((x) => ({ day: x.day, raw: x.raw_score, estimate: x.estimate, low: x.low, high: x.high, untested: x.untested_share })),
  };
}

/** Depth, tool chains and sessions of the period (null when no request carries a turn, tools or a session). */
async function agentSection(store: Store, since: number, until: number): Promise<AgentSection | null> {
  const w = { since, until };
  const [depth, chains, sessions] = await Promise.all([depthCoverage(store, w), toolChains(store, w, 10), sessionSummary(store, w)]);
  const withTools = Object.entries(chains.verdicts).filter(([k]) => k !== 'none').reduce((a, [, n]) => a + n, 0);
  if (!depth.withTurn && !withTools && !sessions.sessions) return null;
  return {
    depth: depth.rows.map((r) => ({ band: r.band, requests: r.requests, share: r.share, uncoveredShare: r.uncoveredShare, evalShare: r.evalShare })),
    evalCases: depth.evalCases,
    withTurn: depth.withTurn,
    total: depth.total,
    chainVerdicts: chains.verdicts,
    untestedChains: chains.untested.map((c) => ({ chain: c.chain, requests: c.requests, failureRate: c.failureRate, missingBigram: c.missingBigram, example: c.examples[0] ?? '' })),
    sessions,
  };
}

export async function writeReport(store: Store, out: string, o: ReportOptions): Promise<ReportData> {
  const data = await buildReportData(store, o);
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, renderReport(data, chartJsSource()));
  fs.renameSync(tmp, out);
  return data;
}
