/**
 * `evalgap compare --watch --guard FILE`: the canary guard's runner. Every interval it reads the
 * evidence since the canary's start (closed sessions only), updates the pure guard
 * (src/compare/guard.ts), and sends a signed webhook (Standard Webhooks, src/alert/webhook.ts) to
 * the monitor config's receivers: `rollback` naming the clusters, rates, intervals and example
 * queries; `promote` once the candidate is shown no worse everywhere eligible.
 *
 * State (what fired, what was delivered, the clusters tested) is a JSON file written atomically
 * after each delivery, so a restart neither forgets a rollback nor sends it twice under a new id
 * (a crash between the POST and the write repeats it under the same webhook-id; receivers dedupe).
 * The evidence itself is re-read from the store, cumulative since the start, so it needs no state.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Config } from '../config/index.js';
import { CanaryGuard, GuardConfigSchema, type GuardConfig, type GuardVerdict, type RollbackFinding } from '../compare/guard.js';
import { ALL, UNCOVERED } from '../compare/detector.js';
import { loadMonitorConfig, type ResolvedReceiver } from '../alert/config.js';
import { DeliveryError, signRequest } from '../alert/webhook.js';
import { CompareStore, chTime, type ComparePeriod } from '../store/compare.js';
import type { StoreReader } from '../store/gaps.js';
import { evidenceInput } from './compare.js';
import { openReader } from './gaps.js';
import { UserError } from './errors.js';

export const CANARY_PAYLOAD_TYPE = 'evalgap.canary';

const StateSchema = z.object({
  /** a digest of the guard config: a changed config starts a new state */
  config: z.string(),
  clusters: z.array(z.number().int()).nullable(),
  guard: z.object({ fired: z.array(z.string()), promoted: z.boolean() }),
  delivered: z.array(z.string()),
});
type GuardState = z.infer<typeof StateSchema>;

export function loadGuardConfig(file: string): GuardConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`cannot read the guard config ${file}: ${(e as Error).message}`);
  }
  const r = GuardConfigSchema.safeParse(raw);
  if (!r.success) throw new UserError(`invalid guard config ${file}:\n` + r.error.issues.map((i) => `  - ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'));
  return r.data;
}

const digest = (x: unknown) => crypto.createHash('sha256').update(JSON.stringify(x)).digest('hex').slice(0, 24);

function readState(file: string, cfg: GuardConfig): GuardState {
  const fresh: GuardState = { config: digest(cfg), clusters: null, guard: { fired: [], promoted: false }, delivered: [] };
  if (!fs.existsSync(file)) return fresh;
  const r = StateSchema.safeParse(JSON.parse(fs.readFileSync(file, 'utf8')));
  if (!r.success) throw new UserError(`the guard state ${file} is not valid (${r.error.issues[0]?.message}); move it away to start afresh`);
  if (r.data.config !== fresh.config) throw new UserError(`the guard state ${file} belongs to another guard config; a changed config is a new canary: give another --state`);
  return r.data;
}

function writeState(file: string, s: GuardState): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

export interface CanaryFinding {
  condition: GuardConfig['rollback'][number];
  cluster: number;
  segment: 'cluster' | 'uncovered' | 'all';
  label: string | null;
  share: number;
  outcome: string;
  baseline: { units: number; rate: number | null; lo: number; hi: number };
  candidate: { units: number; rate: number | null; lo: number; hi: number };
  difference: { lo: number; hi: number };
  ratio: { lo: number; hi: number | null };
  examples: string[];
}

export interface CanaryPayload {
  type: typeof CANARY_PAYLOAD_TYPE;
  version: 1;
  /** equals the webhook-id header: dedupe on it */
  id: string;
  kind: 'rollback' | 'promote';
  severity: 'rollback' | 'info';
  baseline: string;
  candidate: string;
  agent: string;
  since: string;
  evaluated_at: string;
  model_version: string;
  alpha: number;
  tests: number;
  summary: string;
  findings: CanaryFinding[];
  /** the evidence, for a person to paste (evalgap never runs it) */
  sql: string;
}

const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);

function toFinding(f: RollbackFinding, cfg: GuardConfig, examples: string[]): CanaryFinding {
  const i = f.interval;
  return {
    condition: cfg.rollback[f.condition],
    cluster: f.cluster,
    segment: f.cluster === UNCOVERED ? 'uncovered' : f.cluster === ALL ? 'all' : 'cluster',
    label: f.label ?? null,
    share: f.share,
    outcome: f.outcome,
    baseline: { ...f.baseline, lo: i.baseline.lo, hi: i.baseline.hi },
    candidate: { ...f.candidate, lo: i.candidate.lo, hi: i.candidate.hi },
    difference: i.difference,
    ratio: { lo: i.ratio.lo, hi: Number.isFinite(i.ratio.hi) ? i.ratio.hi : null },
    examples,
  };
}

function comparisonSql(db: string, p: ComparePeriod): string {
  const lit = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return (
    `SELECT * FROM ${db}.version_comparison(baseline = ${lit(p.baseline)}, candidate = ${lit(p.candidate)}, ` +
    `since = ${lit(chTime(p.since))}, until = ${lit(chTime(p.until))}, agent = ${lit(p.agent)}, ` +
    `slow_ms = ${Number.isFinite(p.slowMs) ? p.slowMs : 'inf'}, closed_before = ${lit(chTime(p.closedBefore ?? p.until))})`
  );
}

export interface GuardTick {
  verdict: GuardVerdict | null;
  sent: CanaryPayload[];
  /** why there was nothing to evaluate yet */
  waiting?: string;
}

export interface GuardRunnerOptions {
  reader: StoreReader;
  database: string;
  config: GuardConfig;
  receivers: ResolvedReceiver[];
  stateFile: string;
  /** for tests: replaces fetch */
  post?: (r: ResolvedReceiver, id: string, body: string) => Promise<void>;
  now?: () => Date;
  log?: (line: Record<string, unknown>) => void;
}

/** POST a signed body, retrying what a retry can change (3 attempts, backoff from the receiver's settings). */
async function postSigned(r: ResolvedReceiver, id: string, body: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const req = signRequest(r.secret, id, body);
    let status = 0;
    try {
      const res = await fetch(r.url, {
        method: 'POST',
        headers: { ...r.headers, ...req.headers, 'user-agent': 'evalgap-webhooks/1' },
        body: req.body,
        signal: AbortSignal.timeout(r.timeoutMs),
        redirect: 'manual',
      });
      await res.arrayBuffer().catch(() => undefined);
      status = res.status;
      if (status >= 200 && status < 300) return;
    } catch {
      status = 0;
    }
    const retryable = status === 0 || status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
    if (!retryable || attempt >= 3) throw new DeliveryError(`receiver ${r.name} ${status ? `answered ${status}` : 'did not answer'}`, status, retryable);
    await new Promise((res) => setTimeout(res, Math.min(r.maxBackoffMs, r.minBackoffMs * 2 ** (attempt - 1))));
  }
}

/** One evaluation: read, update the guard, send what is new, persist. */
export async function guardTick(o: GuardRunnerOptions): Promise<GuardTick> {
  const cfg = o.config;
  const now = (o.now ?? (() => new Date()))();
  const state = readState(o.stateFile, cfg);
  const cs = new CompareStore(o.reader);
  const period: ComparePeriod = {
    baseline: cfg.baseline,
    candidate: cfg.candidate,
    since: cfg.since,
    until: now.toISOString(),
    agent: cfg.agent,
    slowMs: cfg.latency_ms ?? Infinity,
    closedBefore: new Date(now.getTime() - cfg.session_idle_seconds * 1000).toISOString(),
  };
  const rows = await cs.evidence(period);
  const all = rows.filter((r) => r.segment === ALL);
  if (!all.some((r) => r.candidate.units > 0) || !all.some((r) => r.baseline.units > 0)) {
    return { verdict: null, sent: [], waiting: 'no closed sessions of both versions yet' };
  }
  const { modelVersion, input, clusters } = await evidenceInput(cs, rows);
  // the clusters tested are fixed at the first evaluation (the test count must not follow the data)
  state.clusters ??= clusters;
  const guard = CanaryGuard.fromJSON(state.guard, cfg, state.clusters);
  const verdict = guard.update(input);
  state.guard = guard.toJSON();
  const sent: CanaryPayload[] = [];
  const send = async (p: CanaryPayload) => {
    for (const r of o.receivers) {
      const body = r.format === 'slack' ? JSON.stringify({ text: `[${p.severity.toUpperCase()}] evalgap canary ${p.candidate} vs ${p.baseline}: ${p.summary}` }) : JSON.stringify(p);
      await (o.post ?? postSigned)(r, p.id, body);
    }
    state.delivered.push(p.id);
    writeState(o.stateFile, state);
    sent.push(p);
  };
  const base = {
    type: CANARY_PAYLOAD_TYPE as typeof CANARY_PAYLOAD_TYPE,
    version: 1 as const,
    baseline: cfg.baseline,
    candidate: cfg.candidate,
    agent: cfg.agent,
    since: cfg.since,
    evaluated_at: now.toISOString(),
    model_version: modelVersion,
    alpha: cfg.alpha,
    tests: verdict.tests,
    sql: comparisonSql(o.database, period),
  };
  const keys = verdict.rollback.map((f) => `${f.condition}:${f.cluster}:${f.outcome}`).sort();
  const rollbackId = `cg_${digest([cfg.baseline, cfg.candidate, cfg.since, cfg.agent, 'rollback', keys])}`;
  if (verdict.rollback.length > 0 && !state.delivered.includes(rollbackId)) {
    const findings: CanaryFinding[] = [];
    for (const f of verdict.rollback) {
      const ex = await cs.examples(period, modelVersion, f.cluster, f.outcome, 3);
      findings.push(toFinding(f, cfg, ex.map((e) => e.query)));
    }
    const summary = findings
      .map((f) => `${f.segment === 'cluster' ? `cluster ${f.cluster} (${f.label ?? ''})` : f.segment}: ${f.outcome} ${pct(f.candidate.rate)} vs ${pct(f.baseline.rate)}, ratio ≥ ${f.ratio.lo.toFixed(2)} with confidence (condition: > ${f.condition.ratio}×)`)
      .join('; ');
    await send({ ...base, id: rollbackId, kind: 'rollback', severity: 'rollback', summary: `roll back ${cfg.candidate}: ${summary}`, findings });
  }
  const promoteId = `cg_${digest([cfg.baseline, cfg.candidate, cfg.since, cfg.agent, 'promote'])}`;
  if (verdict.promote && !state.delivered.includes(promoteId)) {
    await send({
      ...base,
      id: promoteId,
      kind: 'promote',
      severity: 'info',
      summary: `${cfg.candidate} is no worse than ${cfg.baseline} in every segment with ≥ ${pct(cfg.promote!.min_share)} of the traffic and overall (${cfg.promote!.outcomes.join(', ')}; margin ${cfg.promote!.ratio ?? '-'}× or +${cfg.promote!.difference ?? '-'})`,
      findings: [],
    });
  }
  writeState(o.stateFile, state);
  return { verdict, sent };
}

export interface WatchOptions {
  guardFile: string;
  /** the monitor's config file, for its webhook receivers */
  monitorConfig?: string;
  stateFile?: string;
  intervalSeconds: number;
  once: boolean;
}

export async function watchCommand(cfg: Config, o: WatchOptions): Promise<void> {
  const config = loadGuardConfig(o.guardFile);
  const receivers = loadMonitorConfig(o.monitorConfig).receivers;
  if (receivers.length === 0) console.error('evalgap: no webhook receivers in the monitor config: rollback and promote are printed only');
  const stateFile = o.stateFile ?? path.join(path.dirname(path.resolve(o.guardFile)), `${path.basename(o.guardFile, '.json')}.state.json`);
  let stop = false;
  const onSignal = () => {
    stop = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  for (;;) {
    const opened = await openReader(cfg, { readOnly: true });
    let t: GuardTick | null = null;
    try {
      t = await guardTick({ reader: opened.reader, database: cfg.clickhouse.database, config, receivers, stateFile });
    } catch (e) {
      // a receiver down or the store unreachable: nothing was recorded as delivered, so the next
      // evaluation sends again under the same webhook-id
      if (o.once || e instanceof UserError) throw e;
      console.error(JSON.stringify({ at: new Date().toISOString(), error: (e as Error).message }));
    } finally {
      await opened.close();
    }
    if (t) {
      const v = t.verdict;
      console.log(
        JSON.stringify({
          at: new Date().toISOString(),
          ...(t.waiting ? { waiting: t.waiting } : {}),
          rollback: v?.rollback.map((f) => ({ cluster: f.cluster, outcome: f.outcome, ratio_lo: f.interval.ratio.lo })) ?? [],
          promote: v?.promote ?? false,
          promote_pending: v?.promotePending ?? null,
          sent: t.sent.map((p) => ({ id: p.id, kind: p.kind })),
        }),
      );
    }
    if (o.once || stop) break;
    await new Promise((r) => setTimeout(r, o.intervalSeconds * 1000));
    if (stop) break;
  }
}
