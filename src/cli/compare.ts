/**
 * `evalgap compare --baseline V1 --candidate V2`: both versions' outcome rates per eval cluster,
 * for the uncovered traffic and overall, over the same period, with anytime-valid intervals and a
 * verdict per cluster (src/compare), read through src/store/compare.ts.
 */
import type { Config } from '../config/index.js';
import {
  ALL,
  OUTCOMES,
  UNCOVERED,
  compareVersions,
  type CompareInput,
  type CompareResult,
  type Outcome,
} from '../compare/detector.js';
import { CompareStore, type ComparePeriod, type VersionEvidenceRow } from '../store/compare.js';
import { chooseModel, compareInput } from '../compare/input.js';
import { PAIRED_OUTCOMES, comparePaired, emptyPaired, type PairedOutcome, type PairedResult, type PairedSegmentCounts } from '../compare/paired.js';
import type { StoreReader } from '../store/gaps.js';
import { openReader } from './gaps.js';
import { UserError } from './errors.js';
import { pct, table } from './format.js';

export interface CompareCommandOptions {
  baseline: string;
  candidate: string;
  since: Date;
  until: Date;
  /** '' for all agents */
  agent: string;
  alpha: number;
  /** coverage model whose clusters are compared (default: the one holding most of the candidate's units) */
  modelVersion?: string;
  /** `slow` threshold; default: the baseline's p95 latency over the period */
  latencyMs?: number;
  /** outcomes compared (default: all; slow only when latency is recorded); fewer tests, more power each */
  outcomes?: readonly Outcome[];
  format: 'table' | 'json';
}

export interface CompareReport {
  baseline: string;
  candidate: string;
  period: { since: string; until: string };
  agent: string;
  model_version: string;
  /** the latency a request must exceed to count as slow, and where it came from */
  slow: { ms: number | null; source: 'option' | 'baseline p95' | 'no latency' };
  outcomes: Outcome[];
  result: CompareResult;
}

/**
 * The comparison's input from the view's rows: one coverage model's segments (every registered
 * cluster, traffic or not, and the uncovered traffic), all traffic, and each version's units.
 */
export async function evidenceInput(cs: CompareStore, rows: VersionEvidenceRow[], wanted?: string): Promise<{ modelVersion: string; input: CompareInput; clusters: number[] }> {
  const modelVersion = chooseModel(rows, wanted);
  if (!modelVersion) {
    const seen = [...new Set(rows.map((r) => r.model_version))];
    throw new UserError(`no requests of both versions scored by coverage model ${wanted ?? '(any)'} in the period; models seen: ${seen.join(', ') || 'none'}`);
  }
  return { modelVersion, ...compareInput(rows, modelVersion, await cs.clusters(modelVersion)) };
}

/** Read the evidence and compare. Throws UserError when a version has no rows in the period. */
export async function compareFromStore(reader: StoreReader, o: Omit<CompareCommandOptions, 'format'>): Promise<CompareReport> {
  if (o.baseline === o.candidate) throw new UserError('--baseline and --candidate must differ');
  const cs = new CompareStore(reader);
  const period: ComparePeriod = {
    baseline: o.baseline,
    candidate: o.candidate,
    since: o.since.toISOString(),
    until: o.until.toISOString(),
    agent: o.agent,
    slowMs: Infinity,
  };
  let slow: CompareReport['slow'] = { ms: null, source: 'no latency' };
  if (o.latencyMs !== undefined) slow = { ms: o.latencyMs, source: 'option' };
  else {
    const p95 = await cs.baselineLatencyQuantile(period, 0.95);
    if (p95 !== null) slow = { ms: p95, source: 'baseline p95' };
  }
  period.slowMs = slow.ms ?? Infinity;
  const rows = await cs.evidence(period);
  for (const v of ['baseline', 'candidate'] as const) {
    if (!rows.some((r) => r.segment === ALL && r[v].units > 0)) {
      const seen = await cs.versions(period);
      const list = seen.map((s) => `${s.version === '' ? "'' (no version)" : s.version} (${s.requests})`).join(', ') || 'none';
      throw new UserError(`no requests of version ${JSON.stringify(o[v])} between ${period.since} and ${period.until}${o.agent ? ` for agent ${o.agent}` : ''}; versions seen (most requests first): ${list}`);
    }
  }
  const { modelVersion, input } = await evidenceInput(cs, rows, o.modelVersion);
  const outcomes = (o.outcomes ?? OUTCOMES).filter((x) => x !== 'slow' || slow.ms !== null);
  if (outcomes.length === 0) throw new UserError('no latency recorded in the period: choose an outcome other than slow');
  const result = compareVersions(input, { alpha: o.alpha, outcomes });
  return {
    baseline: o.baseline,
    candidate: o.candidate,
    period: { since: period.since, until: period.until },
    agent: o.agent,
    model_version: modelVersion,
    slow,
    outcomes,
    result,
  };
}

const segName = (c: number) => (c === UNCOVERED ? 'uncovered' : c === ALL ? 'all' : String(c));
const ratio = (lo: number, hi: number) => `${lo.toFixed(2)}–${Number.isFinite(hi) ? hi.toFixed(2) : '∞'}`;
const pp = (x: number) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}`;

/** The report as text: one row per segment with traffic and outcome, worse first. */
export function formatCompare(r: CompareReport): string {
  const res = r.result;
  const order = { worse: 0, better: 1, 'no evidence yet': 2 } as const;
  const segs = [...res.segments]
    .filter((s) => s.units.baseline + s.units.candidate > 0)
    .sort((a, b) => order[a.verdict] - order[b.verdict] || b.units.candidate - a.units.candidate);
  const rows: (string | number)[][] = [];
  for (const s of [res.overall, ...segs]) {
    for (const o of s.outcomes) {
      if (o.baseline.units + o.candidate.units === 0) continue;
      rows.push([
        segName(s.cluster),
        s.label ?? '',
        `${s.units.baseline}/${s.units.candidate}`,
        o.outcome,
        o.baseline.rate === null ? '-' : pct(o.baseline.rate),
        o.candidate.rate === null ? '-' : pct(o.candidate.rate),
        `${pp(o.interval.difference.lo)} to ${pp(o.interval.difference.hi)}`,
        ratio(o.interval.ratio.lo, o.interval.ratio.hi),
        o.verdict,
      ]);
    }
  }
  const mixRows = segs
    .filter((s) => s.mix?.differs)
    .map((s) => `  ${segName(s.cluster)} ${s.label ?? ''}: ${pct(s.mix!.baseline ?? 0)} of the baseline's units, ${pct(s.mix!.candidate ?? 0)} of the candidate's`);
  const lines = [
    `compare ${r.candidate} (candidate) with ${r.baseline} (baseline), ${r.period.since} to ${r.period.until}${r.agent ? `, agent ${r.agent}` : ''}, coverage model ${r.model_version}`,
    `units: sessions (requests without a session id count alone); baseline ${res.overall.units.baseline} units / ${res.overall.requests.baseline} requests, candidate ${res.overall.units.candidate} / ${res.overall.requests.candidate}`,
    `slow: ${r.slow.ms === null ? 'no latency recorded, not compared' : !r.outcomes.includes('slow') ? 'not compared (--outcomes)' : `latency above ${r.slow.ms.toFixed(0)} ms (${r.slow.source})`}`,
    `intervals: anytime-valid (valid however often you look); ${res.tests} tests share α = ${res.alpha} (Bonferroni: ${res.alphaPerTest.toExponential(2)} each)`,
    '',
    table(['segment', 'label', 'units b/c', 'outcome', 'baseline', 'candidate', 'diff (pp)', 'ratio', 'verdict'], rows, 40),
    '',
    `worse: ${res.worse.length ? res.worse.map(segName).join(', ') : 'none'}; better: ${res.better.length ? res.better.map(segName).join(', ') : 'none'}`,
    res.mixDiffers ? `traffic mix: the candidate's differs from the baseline's:\n${mixRows.join('\n')}` : "traffic mix: no evidence that the candidate's differs from the baseline's",
  ];
  return lines.join('\n');
}

export interface PairedReport {
  baseline: string;
  candidate: string;
  period: { since: string; until: string };
  agent: string;
  model_version: string;
  outcomes: PairedOutcome[];
  result: PairedResult;
}

/** `--paired`: requests answered by both versions (shadow), compared pair by pair. */
export async function comparePairedFromStore(reader: StoreReader, o: Omit<CompareCommandOptions, 'format'>): Promise<PairedReport> {
  if (o.baseline === o.candidate) throw new UserError('--baseline and --candidate must differ');
  const cs = new CompareStore(reader);
  const period: ComparePeriod = { baseline: o.baseline, candidate: o.candidate, since: o.since.toISOString(), until: o.until.toISOString(), agent: o.agent, slowMs: Infinity };
  const rows = await cs.pairedEvidence(period);
  const overallRows = rows.filter((r) => r.segment === ALL).sort((a, b) => b.pairs - a.pairs);
  const modelVersion = o.modelVersion ?? overallRows[0]?.model_version;
  if (!modelVersion || !overallRows.some((r) => r.model_version === modelVersion)) {
    throw new UserError(
      `no request_id is stored under both ${JSON.stringify(o.baseline)} and ${JSON.stringify(o.candidate)} between ${period.since} and ${period.until}` +
        `${o.modelVersion ? ` scored by ${o.modelVersion}` : ''}: --paired needs a shadow version logging its own rows for the same request_ids`,
    );
  }
  const mine = rows.filter((r) => r.model_version === modelVersion);
  const bySeg = new Map(mine.map((r) => [r.segment, r]));
  const registered = await cs.clusters(modelVersion);
  const clusters = registered.length > 0 ? registered : mine.filter((r) => r.segment >= 0).map((r) => ({ cluster: r.segment, label: '' }));
  const seg = (c: number, label?: string): PairedSegmentCounts => {
    const r = bySeg.get(c);
    return r ? { cluster: c, label, pairs: r.pairs, outcomes: r.outcomes } : emptyPaired(c, label);
  };
  const outcomes = (o.outcomes ?? PAIRED_OUTCOMES).filter((x): x is PairedOutcome => (PAIRED_OUTCOMES as readonly string[]).includes(x));
  if (outcomes.length === 0) throw new UserError('--paired compares escalated, refused and failed (not slow)');
  const result = comparePaired(
    { segments: [...clusters.map((c) => seg(c.cluster, c.label)), seg(UNCOVERED, 'uncovered')], overall: seg(ALL, 'all traffic') },
    { alpha: o.alpha, outcomes },
  );
  return { baseline: o.baseline, candidate: o.candidate, period: { since: period.since, until: period.until }, agent: o.agent, model_version: modelVersion, outcomes, result };
}

export function formatPaired(r: PairedReport): string {
  const res = r.result;
  const order = { worse: 0, better: 1, 'no evidence yet': 2 } as const;
  const segs = [...res.segments].filter((s) => s.pairs > 0).sort((a, b) => order[a.verdict] - order[b.verdict] || b.pairs - a.pairs);
  const rows: (string | number)[][] = [];
  for (const s of [res.overall, ...segs]) {
    for (const o of s.outcomes) {
      rows.push([
        segName(s.cluster),
        s.label ?? '',
        s.pairs,
        o.outcome,
        o.baselineRate === null ? '-' : pct(o.baselineRate),
        o.candidateRate === null ? '-' : pct(o.candidateRate),
        `${o.candidateOnly}/${o.baselineOnly}`,
        o.theta === null ? '-' : `${pct(o.theta, 0)} [${pct(o.interval.lo, 0)}–${pct(o.interval.hi, 0)}]`,
        o.verdict,
      ]);
    }
  }
  return [
    `compare ${r.candidate} (candidate) with ${r.baseline} (baseline) on the same requests (paired), ${r.period.since} to ${r.period.until}${r.agent ? `, agent ${r.agent}` : ''}, coverage model ${r.model_version}`,
    `pairs: ${res.overall.pairs} requests stored under both versions; θ: the sessions' share of candidate-only outcomes among discordant pairs (50% when the versions do not differ)`,
    `intervals: anytime-valid; ${res.tests} tests share α = ${res.alpha} (Bonferroni: ${res.alphaPerTest.toExponential(2)} each)`,
    '',
    table(['segment', 'label', 'pairs', 'outcome', 'baseline', 'candidate', 'only c/only b', 'θ', 'verdict'], rows, 40),
    '',
    `worse: ${res.worse.length ? res.worse.map(segName).join(', ') : 'none'}; better: ${res.better.length ? res.better.map(segName).join(', ') : 'none'}`,
  ].join('\n');
}

export async function compareCommand(cfg: Config, o: CompareCommandOptions & { paired?: boolean }): Promise<void> {
  const opened = await openReader(cfg, { readOnly: true });
  if (opened.note) console.error(opened.note);
  try {
    const json = (x: unknown) => JSON.stringify(x, (_, v) => (v === Infinity ? 'Infinity' : v), 2);
    if (o.paired) {
      const report = await comparePairedFromStore(opened.reader, o);
      console.log(o.format === 'json' ? json(report) : formatPaired(report));
      return;
    }
    const report = await compareFromStore(opened.reader, o);
    console.log(o.format === 'json' ? json(report) : formatCompare(report));
  } finally {
    await opened.close();
  }
}
