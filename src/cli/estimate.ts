/** `evalgap results`, `evalgap estimate`, `evalgap plan`: eval results in, the score reweighted to production traffic, where the next cases go. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/index.js';
import { loadCoverageModel } from '../coverage/model.js';
import { normalizeRows } from '../coverage/vec.js';
import { DEFAULT_DISCOVERY, diverseExamples } from '../gaps/discover.js';
import { discoverGaps } from '../gaps/run.js';
import { matchResults, parseResults } from '../estimate/results.js';
import { computeEstimate, computePlan, EstimateError, storeWeightedScores, type EstimateQuery, type EstimateReport, type PlanReport } from '../estimate/run.js';
import type { Estimate } from '../estimate/poststratify.js';
import { storeEvalLoad } from '../store/estimate.js';
import { canWrite, readUncovered, type StoreReader } from '../store/gaps.js';
import { Store } from '../store/store.js';
import { UserError } from './errors.js';
import { escapeControl, pct, table } from './format.js';
import { readTextInput, utf8Warning } from './input.js';
import { openReader } from './gaps.js';

export async function resultsCommand(
  cfg: Config,
  file: string,
  opts: { model: string; runId?: string; allowBadLines?: boolean },
): Promise<void> {
  const { text: content, bytes, invalid } = readTextInput(file, 'results file');
  const warning = utf8Warning(file === '-' ? 'stdin' : file, invalid);
  if (warning) console.error(warning);
  const model = loadCoverageModel(opts.model);
  const { results, errors } = parseResults(content);
  const { matched, unmatched } = matchResults(results, model.cases, model.labels);
  for (const e of errors.slice(0, 20)) console.error(escapeControl(`${file}:${e.line}: ${e.reason}`));
  if (errors.length > 20) console.error(`… and ${errors.length - 20} more bad line(s)`);
  if (unmatched.length) {
    console.error(
      escapeControl(
        `${unmatched.length} result(s) name no case of coverage model ${model.manifest.version}: ` +
          unmatched.slice(0, 5).map((u) => `"${u.id}" (line ${u.line})`).join(', ') + (unmatched.length > 5 ? ', …' : ''),
      ),
    );
  }
  if ((errors.length || unmatched.length) && !opts.allowBadLines) {
    throw new UserError(`nothing stored: fix the lines above, or pass --allow-bad-lines to store the ${matched.length} good result(s)`);
  }
  if (!matched.length) throw new UserError(`no result in ${file} matches a case of coverage model ${model.manifest.version} (cases are matched by "id")`);
  // the file's bytes identify it: the default run id, and the load id that makes the same file again a no-op
  const digest = createHash('sha256').update(bytes).digest('hex');
  const runId = opts.runId ?? `run-${digest.slice(0, 12)}`;
  const rows = matched.map((m) => ({
    case_id: m.id,
    cluster: m.cluster,
    tags: m.tags,
    passed: m.passed === null ? null : m.passed ? (1 as const) : (0 as const),
    score: m.score,
    scores: m.scores,
    value: m.value,
  }));
  const store = await Store.open(cfg.clickhouse).catch((e: Error) => {
    throw new UserError(
      cfg.clickhouse.url
        ? `cannot open the store to write results (${e.message})`
        : `cannot open the store to write results (${e.message}); stop the evalgap run holding it, or use a ClickHouse server`,
    );
  });
  let stored: Awaited<ReturnType<typeof storeEvalLoad>>;
  try {
    const m = model.manifest;
    await store.registerClusters(m.clusters.map((c) => ({ model_version: m.version, cluster: c.id, label: c.label, size: c.size, share: c.share, examples: c.examples })));
    stored = await storeEvalLoad(store, { modelVersion: m.version, runId, loadId: digest.slice(0, 16), source: file === '-' ? 'stdin' : path.basename(file), rows });
  } finally {
    await store.close();
  }
  const withValue = matched.filter((m) => m.value !== null);
  const metrics = [...new Set(matched.flatMap((m) => Object.keys(m.scores)))].sort();
  const mean = withValue.length ? withValue.reduce((s, m) => s + m.value!, 0) / withValue.length : null;
  const casesWith = new Set(matched.map((m) => m.id)).size;
  console.log(
    (stored.unchanged
      ? `eval run ${runId} of coverage model ${model.manifest.version} already holds these ${matched.length} result(s) (the same file): nothing changed`
      : `stored ${matched.length} result(s) as eval run ${runId} of coverage model ${model.manifest.version}`) +
      (mean !== null ? `: eval score ${pct(mean)} over ${withValue.length} case(s)` : '') +
      (metrics.length ? `; metrics: ${metrics.join(', ')}` : '') +
      `; ${model.cases.length - casesWith} of the model's ${model.cases.length} cases have no result` +
      (stored.replaced !== null ? `; they replace the run's previous ${stored.replaced} result(s), which are no longer read` : ''),
  );
}

const day = (ms: number) => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
const iv = (x: readonly [number, number] | null) => (x ? `[${pct(x[0])}, ${pct(x[1])}]` : '-');

export function estimateJson(rep: EstimateReport): unknown {
  return { ...rep, since: new Date(rep.since).toISOString(), until: new Date(rep.until).toISOString() };
}

/** The one-line answer: "your eval says X%; on this traffic it would be Y% [interval], and Z% of traffic is untested". */
export function headline(e: Estimate): string {
  if (e.estimate === null) return `your eval says ${pct(e.raw)}; no covered production traffic in this period to reweight it to`;
  return (
    `your eval says ${pct(e.raw)}; on this traffic it would be ${pct(e.estimate)} ${iv(e.interval)} ` +
    `(${Math.round(e.level * 100)}% interval), and ${pct(e.untested)} of traffic is untested`
  );
}

export function formatEstimate(rep: EstimateReport, opts: { clusters?: number } = {}): string {
  const e = rep.estimate;
  const out: string[] = [];
  out.push(
    `production-weighted eval score ${rep.agent ? `of agent ${rep.agent}` : 'of all agents'}, ${day(rep.since)} → ${day(rep.until)} UTC; ` +
      `coverage model ${rep.modelVersion}, eval run ${rep.runId}${rep.metric ? `, metric ${rep.metric}` : ''}`,
  );
  out.push(headline(e));
  out.push('');
  out.push(`eval run:       ${e.evalCases} case(s) with a result, score ${pct(e.raw)}`);
  out.push(`traffic:        ${e.requests} request(s), ${e.covered} covered (${pct(e.coveredShare)}), ${e.requests - e.covered} untested (${pct(e.untested)})`);
  if (e.estimate !== null) {
    out.push(`reweighted:     ${pct(e.estimate)} ${iv(e.interval)} on covered traffic; gap to the eval score ${(100 * e.gap!).toFixed(1)} points`);
    if (e.bounds && e.untested > 0) {
      const b = e.bounds;
      out.push(
        `all traffic:    if the untested traffic all failed ${pct(b.allFail.estimate)} ${iv(b.allFail.interval)}; ` +
          `passed like its nearest cluster ${pct(b.nearest.estimate)} ${iv(b.nearest.interval)}; all passed ${pct(b.allPass.estimate)} ${iv(b.allPass.interval)}`,
      );
    }
    out.push(
      `method:         post-stratified by eval cluster; ${Math.round(e.level * 100)}% posterior interval (eval results per cluster shrunk toward their tag ` +
        `or the whole set, with ${e.priorCases} pseudo-case; production shares Dirichlet` +
        (e.designEffect > 1 ? `, design effect ${e.designEffect.toFixed(2)} for sessions` : '') +
        `). Assumes the eval's pass rate within a cluster is production's there, ` +
        (e.withinCluster
          ? `up to production's lean toward the failing tags inside clusters, taken as its lean toward failing clusters ` +
            `(slope ${e.withinCluster.slope.toFixed(2)} ± ${e.withinCluster.slopeSe.toFixed(2)} over ${e.withinCluster.clusters} clusters: ` +
            `${(100 * e.withinCluster.correction).toFixed(1)} points; plain post-stratification ${iv(e.samplingInterval)})` +
            (e.withinCluster.unrepresented
              ? `; covered traffic the eval does not represent, sized at ${pct(e.withinCluster.unrepresented.share)} from the lean in the shallower depth bands, ` +
                `adds an error of ${(100 * e.withinCluster.unrepresented.sd).toFixed(1)} points (sd) to the interval`
              : '')
          : `with no correction (no cluster holds eval cases of two tags that score differently, or too few clusters)`) +
        '.',
    );
  }
  const top = opts.clusters ?? 12;
  const cs = [...e.clusters].filter((c) => c.covered > 0 || c.evalCases > 0).sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution));
  if (cs.length && e.estimate !== null) {
    out.push('');
    out.push(`clusters by their part in the gap (top ${Math.min(top, cs.length)} of ${cs.length}; the rest of the gap, ${(100 * (e.shrinkage ?? 0)).toFixed(1)} points, is shrinkage` +
        (e.withinCluster ? ` and ${(100 * e.withinCluster.correction).toFixed(1)} the within-cluster term` : '') +
        '):',
    );
    out.push(
      table(
        ['cluster', 'label', 'prod share', 'eval cases', 'eval pass', 'pass (shrunk)', 'gap part'],
        cs.slice(0, top).map((c) => [
          c.cluster,
          c.label,
          pct(c.prodShare),
          c.evalCases,
          c.evalPassRate === null ? '-' : pct(c.evalPassRate),
          `${pct(c.passRate)} ${iv(c.passRateInterval)}`,
          `${c.contribution >= 0 ? '+' : ''}${(100 * c.contribution).toFixed(2)}`,
        ]),
        34,
      ),
    );
  }
  if (rep.agents.length) {
    out.push('');
    out.push('per agent:');
    out.push(
      table(
        ['agent', 'requests', 'untested', 'reweighted', 'interval'],
        rep.agents.map((a) => [a.agent || '(none)', a.estimate.requests, pct(a.estimate.untested), a.estimate.estimate === null ? '-' : pct(a.estimate.estimate), iv(a.estimate.interval)]),
      ),
    );
  }
  if (rep.days.length > 1) {
    out.push('');
    out.push('per day:');
    out.push(
      table(
        ['day (UTC)', 'requests', 'untested', 'reweighted', 'interval'],
        rep.days.map((d) => [d.day, d.estimate.requests, pct(d.estimate.untested), d.estimate.estimate === null ? '-' : pct(d.estimate.estimate), iv(d.estimate.interval)]),
      ),
    );
  }
  return out.join('\n') + '\n';
}

export interface WindowOpts {
  since: Date;
  until: Date;
  agent?: string;
  modelVersion: string;
  runId?: string;
  metric?: string;
  level: number;
  /** the within-cluster term (default tilt) */
  withinCluster?: 'tilt' | 'off';
}

function query(o: WindowOpts): EstimateQuery {
  if (o.until.getTime() <= o.since.getTime()) throw new UserError('--until must be after --since');
  return { since: o.since.getTime(), until: o.until.getTime(), agent: o.agent, modelVersion: o.modelVersion, runId: o.runId, metric: o.metric, level: o.level, withinCluster: o.withinCluster };
}

async function withReader<T>(cfg: Config, fn: (r: Awaited<ReturnType<typeof openReader>>) => Promise<T>): Promise<T> {
  const o = await openReader(cfg);
  try {
    if (o.note) console.error(o.note);
    return await fn(o);
  } catch (e) {
    if (e instanceof EstimateError) throw new UserError(e.message);
    throw e;
  } finally {
    await o.close();
  }
}

export async function estimateCommand(cfg: Config, opts: WindowOpts & { format: 'table' | 'json'; store: boolean }): Promise<void> {
  await withReader(cfg, async (o) => {
    const rep = await computeEstimate(o.reader, query(opts));
    const stored = opts.store && canWrite(o.reader) ? await storeWeightedScores(o.reader, rep) : false;
    if (opts.format === 'json') console.log(JSON.stringify(estimateJson(rep), null, 2));
    else {
      process.stdout.write(formatEstimate(rep));
      if (opts.store) console.log(stored ? `\nstored ${rep.days.length} day(s) in production_weighted_score` : '\nnot stored (the store is read-only here)');
    }
  });
}

const se = (x: number) => (Number.isFinite(x) ? pct(x, 2) : 'unbounded (untested traffic has no case)');

/** A plan as the CLI shows it: with the untested stratum's examples, and why a planned stratum has none. */
export interface PlanView extends PlanReport {
  /** per planned stratum (`kind:id`) that got no example query: why (empty when no example was asked for) */
  noExamples: Map<string, string>;
  /** uncovered requests left out of the untested stratum's examples because their text is redacted */
  untestedRedacted: number;
}

const where = (x: { kind: string; id: string }) => (x.kind === 'cluster' ? `cluster ${x.id}` : x.kind === 'gap' ? `gap ${x.id}` : 'untested');

/**
 * Example queries of the untested stratum (uncovered traffic no stored gap groups): the period's
 * uncovered requests of the plan's coverage model, picked as gap discovery picks a gap's examples
 * (medoid, then farthest-first; near-duplicates and repeated texts skipped); redacted ones skipped
 * and counted.
 */
async function untestedExamples(r: StoreReader, rep: PlanReport['report'], n: number): Promise<{ examples: string[]; redacted: number; reason: string }> {
  const d = await readUncovered(r, { since: rep.since, until: rep.until, agent: rep.agent || undefined, modelVersion: rep.modelVersion });
  const plain = d.rows.flatMap((x, i) => (x.query_redacted ? [] : [i]));
  const redacted = d.rows.length - plain.length;
  if (!plain.length) {
    const why = [
      redacted ? `its ${redacted} request(s) are stored with redacted text` : '',
      d.missingEmbeddings ? `${d.missingEmbeddings} request(s) have no stored embedding (ingested before migration 5)` : '',
    ].filter(Boolean);
    return { examples: [], redacted, reason: why.join('; ') || 'the period has no uncovered request of this coverage model' };
  }
  const centroid = new Float32Array(d.dim);
  for (const i of plain) for (let k = 0; k < d.dim; k++) centroid[k] += d.vectors[i * d.dim + k];
  normalizeRows(centroid, d.dim);
  const idx = diverseExamples(d.vectors, d.dim, plain, centroid, d.rows, { examples: n, nearDuplicate: DEFAULT_DISCOVERY.nearDuplicate, seed: DEFAULT_DISCOVERY.seed });
  return { examples: idx.map((i) => d.rows[i].query), redacted, reason: '' };
}

/**
 * The plan's examples completed (the untested stratum's, read here) and each planned stratum
 * without one explained. A cluster's examples are its covered requests whose text is not redacted
 * and a gap's its stored representatives less the redacted ones, so when either has none, its text
 * is redacted.
 */
async function planView(r: StoreReader, p: PlanReport, n: number): Promise<PlanView> {
  const view: PlanView = { ...p, noExamples: new Map(), untestedRedacted: 0 };
  if (n === 0) return view;
  for (const x of p.plan.items) {
    if (x.cases === 0) continue;
    const key = `${x.kind}:${x.id}`;
    if (x.kind === 'uncovered') {
      const u = await untestedExamples(r, p.report, Math.min(n, x.cases));
      view.examples.set(key, u.examples);
      view.untestedRedacted = u.redacted;
      if (!u.examples.length) view.noExamples.set(key, u.reason);
    } else if (!(p.examples.get(key) ?? []).length) {
      view.noExamples.set(key, x.kind === 'cluster' ? "its requests' text is stored redacted" : 'its stored examples are redacted');
    }
  }
  return view;
}

/** No stratum with traffic: nothing to plan, said in one line (exit 2) instead of a plan for nothing. */
function refuseEmptyPlan(p: PlanReport): void {
  if (p.plan.items.some((x) => x.weight > 0)) return;
  const e = p.report.estimate;
  const period = `${day(p.report.since)} → ${day(p.report.until)} UTC${p.report.agent ? `, agent ${p.report.agent}` : ''}, coverage model ${p.report.modelVersion}`;
  if (e.requests === 0) throw new UserError(`your eval says ${pct(e.raw)}; no production traffic in this period to plan eval cases for (${period})`);
  throw new UserError(`your eval says ${pct(e.raw)}; no covered production traffic in this period to plan over with --covered-only (${period}; its ${e.requests} request(s) are all untested: drop --covered-only to plan cases for them)`);
}

export function formatPlan(p: PlanView): string {
  const out: string[] = [];
  const { plan } = p;
  out.push(headline(p.report.estimate));
  out.push(
    `plan for ${plan.budget} new eval case(s), Neyman allocation (n ∝ traffic share × σ) over ` +
      (plan.scope === 'covered' ? 'the covered clusters' : `the covered clusters and the untested gaps${p.gapsFrom ? ` (gap discovery of ${p.gapsFrom})` : ''}`) +
      `; standard error of the ${plan.scope === 'covered' ? 'reweighted' : 'all-traffic'} score ${se(plan.seBefore)} → ${se(plan.seAfter)} (if the new cases behave like the estimate)`,
  );
  const items = plan.items.filter((x) => x.cases > 0).sort((a, b) => b.cases - a.cases || b.weight - a.weight);
  out.push('');
  out.push(
    table(
      ['where', 'label', 'share', 'σ', 'has', 'add', 'pass rate / escalation'],
      items.map((x) => [
        where(x),
        x.label,
        pct(x.weight),
        x.sigma.toFixed(2),
        x.existing,
        x.cases,
        x.passRate !== null ? `pass ${pct(x.passRate)}` : x.escalationRate !== null ? `escalated ${pct(x.escalationRate)}` : '-',
      ]),
      40,
    ),
  );
  const withEx = items.filter((x) => (p.examples.get(`${x.kind}:${x.id}`) ?? []).length);
  if (withEx.length) {
    out.push('');
    out.push('production queries to start from:');
    for (const x of withEx) {
      out.push(`  ${where(x)} (${x.label}):`);
      for (const e of p.examples.get(`${x.kind}:${x.id}`)!) out.push(`    - ${e.length > 100 ? e.slice(0, 99) + '…' : e}`);
      if (x.kind === 'uncovered' && p.untestedRedacted) out.push(`    (${p.untestedRedacted} uncovered request(s) with redacted text skipped)`);
    }
  }
  const without = items.filter((x) => p.noExamples.has(`${x.kind}:${x.id}`));
  if (without.length) {
    out.push('');
    out.push('no example queries for:');
    for (const x of without) out.push(`  ${where(x)} (${x.label}): ${p.noExamples.get(`${x.kind}:${x.id}`)}`);
  }
  return out.join('\n') + '\n';
}

/** "wrote N …": when fewer than the plan places, why. */
function shortfall(p: PlanView, written: number): string {
  const planned = p.plan.items.reduce((s, x) => s + x.cases, 0);
  if (written >= planned) return '';
  const missing = p.plan.items.filter((x) => x.cases > 0 && p.noExamples.has(`${x.kind}:${x.id}`));
  const explained = missing.reduce((s, x) => s + x.cases, 0);
  const why = missing.map((x) => `${where(x)}: ${p.noExamples.get(`${x.kind}:${x.id}`)}`);
  if (planned - written > explained) why.push('fewer distinct production queries than planned cases: repeats and near-duplicates are dropped');
  return `; no candidate for ${planned - written} of the ${planned} planned case(s) (${why.join('; ')})`;
}

export async function planCommand(
  cfg: Config,
  opts: WindowOpts & { budget: number; coveredOnly: boolean; examples: number; format: 'table' | 'json'; out?: string },
): Promise<void> {
  await withReader(cfg, async (o) => {
    const n = opts.out ? Math.max(opts.examples, opts.budget) : opts.examples;
    const computed = await computePlan(o.reader, { ...query(opts), budget: opts.budget, coveredOnly: opts.coveredOnly, examples: n });
    refuseEmptyPlan(computed);
    const p = await planView(o.reader, computed, n);
    if (opts.out) {
      const written = writePlanCases(p, opts.out).length;
      console.error(`wrote ${written} candidate case(s) to ${opts.out} (production queries of the planned strata; review and label them)${shortfall(p, written)}`);
    }
    if (opts.format === 'json') {
      const finite = (x: number) => (Number.isFinite(x) ? x : null); // JSON has no Infinity
      console.log(
        JSON.stringify(
          {
            ...p.plan,
            seBefore: finite(p.plan.seBefore),
            seAfter: finite(p.plan.seAfter),
            headline: headline(p.report.estimate),
            examples: Object.fromEntries(p.examples),
            noExamples: Object.fromEntries(p.noExamples),
            untestedRedacted: p.untestedRedacted,
            gapsFrom: p.gapsFrom,
          },
          null,
          2,
        ),
      );
    } else process.stdout.write(formatPlan(p));
  });
}

/** Write a plan's candidate cases (planCases) as JSONL that evalgap fit reads; returns them (plan --out, export-gaps --plan). */
export function writePlanCases(p: PlanReport, file: string): ReturnType<typeof planCases> {
  const lines = planCases(p);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + (lines.length ? '\n' : ''));
  return lines;
}

/**
 * export-gaps --plan: the plan's candidate cases, as plan --budget N --out FILE writes them, after a
 * fresh gap discovery of the period (stored when the store is writable, as export-gaps does), so the
 * plan's gaps are the period's.
 */
export async function exportGapsPlanCommand(cfg: Config, opts: WindowOpts & { budget: number; out: string }): Promise<void> {
  await withReader(cfg, async (o) => {
    await discoverGaps(o.reader, {
      since: opts.since,
      now: opts.until,
      agent: opts.agent,
      modelVersion: opts.modelVersion,
      write: !o.note,
      modelsDir: cfg.embed.modelsDir,
    });
    // export-gaps' --model-version all: the plan reweights one model's clusters, the latest one's
    const computed = await computePlan(o.reader, { ...query({ ...opts, modelVersion: opts.modelVersion === 'all' ? 'latest' : opts.modelVersion }), budget: opts.budget, examples: opts.budget });
    refuseEmptyPlan(computed);
    const p = await planView(o.reader, computed, opts.budget);
    const lines = writePlanCases(p, opts.out);
    const n = lines.length;
    console.log(headline(p.report.estimate));
    console.log(
      `wrote ${n} candidate eval case(s) of a plan for ${opts.budget} to ${opts.out} (Neyman allocation over the clusters and the untested gaps` +
        `${p.gapsFrom ? `, gap discovery of ${p.gapsFrom}` : ''})${shortfall(p, n)}`,
    );
    // per stratum: what was written (these add up to the line above), beside what the plan placed there
    const written = new Map<string, number>();
    for (const l of lines) written.set(`${l.plan_kind}:${l.plan_target}`, (written.get(`${l.plan_kind}:${l.plan_target}`) ?? 0) + 1);
    for (const x of p.plan.items.filter((i) => i.cases > 0).sort((a, b) => b.cases - a.cases)) {
      const key = `${x.kind}:${x.id}`;
      const w = written.get(key) ?? 0;
      const why = w < x.cases && p.noExamples.has(key) ? `: ${p.noExamples.get(key)}` : '';
      console.log(`  ${where(x)}  ${x.label}  wrote ${w} case(s), planned ${x.cases}${why}`);
    }
    if (n) console.log(`review them, then: evalgap fit --add ${opts.out} --model <your model folder> --out <a new model folder>, and evalgap deploy it (docs/coverage-model.md)`);
  });
}

/** Candidate cases from a plan: up to each item's allocation, from its example queries, deduplicated. */
export function planCases(p: PlanReport): { id: string; query: string; tags: string[]; plan_kind: string; plan_target: string; plan_label: string }[] {
  const seen = new Set<string>();
  const out: ReturnType<typeof planCases> = [];
  for (const x of p.plan.items) {
    let n = 0;
    for (const q of p.examples.get(`${x.kind}:${x.id}`) ?? []) {
      if (n >= x.cases) break;
      const key = q.toLowerCase().replace(/\s+/g, ' ').trim();
      if (seen.has(key)) continue;
      seen.add(key);
      n++;
      out.push({
        id: x.kind === 'uncovered' ? `plan-untested-${n}` : `plan-${x.kind}-${x.id}-${n}`,
        query: q,
        tags: [x.kind === 'gap' ? x.id : x.kind === 'uncovered' ? 'untested' : x.label],
        plan_kind: x.kind,
        plan_target: x.id,
        plan_label: x.label,
      });
    }
  }
  return out;
}
