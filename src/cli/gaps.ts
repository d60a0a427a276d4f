/** `evalgap gaps`, `evalgap export-gaps`, `evalgap sql`: open the store (or a running instance's read-only endpoint), print. */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import type { Config } from '../config/index.js';
import { discoverGaps, exportGapCases, type GapReport } from '../gaps/run.js';
import type { StoreReader } from '../store/gaps.js';
import { findRunningInstance, readQueryToken, RemoteQueryError, RemoteReader } from '../store/http-query.js';
import { ReadOnlyQueries } from '../store/read-only.js';
import { Store } from '../store/store.js';
import { escapeControl, pct, table } from './format.js';
import { UserError } from './errors.js';

export interface OpenedReader {
  reader: StoreReader;
  /** said on stderr when the running instance answers instead of the store itself */
  note: string | null;
  close: () => Promise<void>;
}

const LOCKED = /Cannot lock file|already running|Failed to create connection/i;

/**
 * The store itself (migrated), or, when the embedded engine's data folder is held by a running
 * `evalgap run`, that instance's read-only POST /query.
 */
export async function openReader(cfg: Config, opts: { readOnly?: boolean } = {}): Promise<OpenedReader> {
  // a running evalgap run that advertises its endpoint holds the folder: go to it directly (opening
  // the folder would fail, and the engine prints its raw lock error on stderr before any fallback)
  const advertised = cfg.clickhouse.url ? null : findRunningInstance(cfg.clickhouse.path);
  try {
    if (advertised) throw new Error('Cannot lock file: held by a running evalgap run');
    const store = await Store.open(cfg.clickhouse);
    if (!opts.readOnly) return { reader: store, note: null, close: () => store.close() };
    // queries from the command line get the same checks and limits as POST /query
    const ro = await ReadOnlyQueries.open(cfg.clickhouse, cfg.query).catch(async (e) => {
      await store.close();
      throw e;
    });
    const reader: StoreReader = { location: store.location, t: (x) => store.t(x), query: (sql, params) => ro.query(sql, params) };
    return {
      reader,
      note: null,
      close: async () => {
        await ro.close();
        await store.close();
      },
    };
  } catch (e) {
    if (cfg.clickhouse.url || !LOCKED.test(String((e as Error).message) + String((e as { cause?: Error }).cause?.message ?? ''))) throw e;
    const run = advertised ?? findRunningInstance(cfg.clickhouse.path);
    if (!run) {
      throw new UserError(
        `the data folder ${cfg.clickhouse.path} is locked by another process, and no running evalgap run advertises a query port there ` +
          `(${path.join(cfg.clickhouse.path, 'evalgap-run.json')}); stop that process or start evalgap run with a metrics port`,
      );
    }
    let token: string;
    try {
      token = readQueryToken(cfg.clickhouse.path);
    } catch (err) {
      throw new UserError((err as RemoteQueryError).message);
    }
    const reader = new RemoteReader(run.port, run.database, token, run.pid);
    return {
      reader,
      note:
        `evalgap: the data folder ${cfg.clickhouse.path} is held by a running evalgap run (pid ${run.pid}); ` +
        `querying it read-only through ${reader.url}`,
      close: async () => undefined,
    };
  }
}

export { parsePeriod, parseTimeArg } from './period.js';

const day = (iso: string | number) => new Date(iso).toISOString().slice(0, 16).replace('T', ' ');

/** `top`: list only the first `top` open gaps (the counts still cover all). */
export function formatGapReport(r: GapReport, examples = 3, top = Infinity): string {
  const open = r.gaps.filter((g) => g.status !== 'closed');
  const listed = open.slice(0, top);
  const closed = r.gaps.filter((g) => g.status === 'closed');
  const out: string[] = [];
  out.push(
    `coverage gaps ${r.scope ? `of agent ${r.scope}` : 'of all agents'}, ${day(r.since)} → ${day(r.until)} UTC` +
      (r.modelVersion ? `, coverage model ${r.modelVersion}` : ', all coverage models'),
  );
  // no requests is not full coverage: a typo in --agent or --model-version must not read as "100% covered"
  out.push(
    r.totals.requests === 0
      ? `traffic: no stored requests match this period${r.scope ? `, agent ${r.scope}` : ''}${r.modelVersion ? ` and coverage model ${r.modelVersion}` : ''}: ` +
          `coverage unknown (check --since, --agent and --model-version against what is stored)`
      : `traffic: ${r.totals.requests} requests, ${r.totals.uncovered} uncovered; coverage ${pct(r.totals.coverage)} of traffic, ` +
          (r.totals.bad ? `${pct(r.totals.riskCoverage)} of escalated/refused/failed requests` : 'no escalated, refused or failed requests'),
  );
  const topics = open.filter((g) => g.kind === 'topic');
  const thin = open.filter((g) => g.kind === 'thin');
  out.push(
    `grouped ${r.grouped} uncovered requests: ${open.length} gap(s) — ${topics.length} new topic(s), ${thin.length} group(s) of near misses (thin coverage) — ${r.noise} left as noise` +
      (r.missingEmbeddings ? `; ${r.missingEmbeddings} without a stored embedding skipped` : '') +
      (r.stored ? '' : '  (not stored)'),
  );
  if (r.sessions) {
    out.push(
      r.sessions.used
        ? `sessions: ${r.sessions.phrasings} phrasing(s) (${r.sessions.requests} requests) whose sessions read as a tested intent's near misses went back to noise`
        : 'sessions: no session evidence (no session ids or no depth bands in this traffic, or the test is off): groups as without it',
    );
  }
  const depth = (g: GapReport['gaps'][number]) => (g.depth === null ? '–' : g.depth.toFixed(2));
  const section = (title: string, gs: GapReport['gaps'], near: string) => {
    out.push('', title);
    out.push(
      table(
        ['#', 'gap', 'status', 'label', 'reqs', 'phr.', 'share', 'escal.', 'depth', 'trend', near, 'cases', 'priority'],
        gs.map((g) => [
          g.rank,
          g.gapId,
          g.status,
          g.label,
          g.members,
          g.phrasings,
          pct(g.share),
          pct(g.escalationRate),
          depth(g),
          g.trend,
          `${g.nearestCluster} ${g.nearestClusterLabel}`,
          g.casesNeeded,
          g.priority.toFixed(0),
        ]),
        34,
      ),
    );
    for (const g of gs) {
      out.push('');
      // labels and examples are stored production text: control characters are shown, not sent
      out.push(escapeControl(`${g.rank}. ${g.gapId}  ${g.label}  (first seen ${day(g.firstSeen)}, last ${day(g.lastSeen)})`));
      for (const e of g.examples.slice(0, examples)) out.push(`     - ${escapeControl(e.length > 100 ? e.slice(0, 99) + '…' : e)}`);
    }
  };
  if (open.length) {
    const lt = listed.filter((g) => g.kind === 'topic');
    const ln = listed.filter((g) => g.kind === 'thin');
    if (lt.length) section('new topics (as far outside the eval set as untested topics sit), by priority:', lt, 'nearest eval cluster');
    if (ln.length) section('thin coverage of tested clusters (near misses of the threshold: add phrasings to that cluster), by priority:', ln, 'thin coverage of cluster');
    if (open.length > listed.length) out.push('', `… and ${open.length - listed.length} more gap(s)`);
  } else out.push('', 'no coverage gaps found in this period');
  if (closed.length) {
    out.push('');
    out.push(escapeControl(`closed since the last run: ${closed.map((g) => `${g.gapId} (${g.label})`).join(', ')}`));
  }
  const flagged = r.underTested.filter((u) => u.reasons.length);
  if (flagged.length) {
    out.push('');
    out.push('under-tested eval clusters (95% Wilson intervals):');
    out.push(
      table(
        ['cluster', 'label', 'reqs', 'prod share', 'eval share', 'escalation', 'why'],
        flagged.map((u) => [
          u.cluster,
          u.label,
          u.requests,
          `${pct(u.prodShare)} [${pct(u.prodShareLow)}, ${pct(u.prodShareHigh)}]`,
          pct(u.eval_share),
          `${pct(u.escalationRate)} [${pct(u.escalationLow)}, ${pct(u.escalationHigh)}]`,
          u.reasons.join(', '),
        ]),
        34,
      ),
    );
  }
  if (r.byAgent.length > 1) {
    out.push('');
    out.push('coverage per agent:');
    out.push(
      table(
        ['agent', 'requests', 'coverage', 'risk coverage'],
        r.byAgent.map((a) => [a.agent || '(none)', a.requests, pct(a.coverage), pct(a.riskCoverage)]),
      ),
    );
  }
  return out.join('\n') + '\n';
}

/** JSON-safe report (centroids dropped). */
export function reportJson(r: GapReport): unknown {
  return {
    ...r,
    gaps: r.gaps.map(({ centroid: _c, ...g }) => ({
      ...g,
      firstSeen: g.firstSeen ? new Date(g.firstSeen).toISOString() : null,
      lastSeen: g.lastSeen ? new Date(g.lastSeen).toISOString() : null,
    })),
  };
}

export async function gapsCommand(
  cfg: Config,
  opts: { since: Date; until: Date; agent?: string; format: 'table' | 'json'; modelVersion: string; store: boolean; examples: number },
): Promise<void> {
  const o = await openReader(cfg);
  try {
    if (o.note) console.error(o.note + '; the result is printed, not stored');
    const r = await discoverGaps(o.reader, {
      since: opts.since,
      now: opts.until,
      agent: opts.agent,
      modelVersion: opts.modelVersion,
      write: opts.store && !o.note,
      modelsDir: cfg.embed.modelsDir,
    });
    if (opts.format === 'json') console.log(JSON.stringify(reportJson(r), null, 2));
    else process.stdout.write(formatGapReport(r, opts.examples));
  } finally {
    await o.close();
  }
}

export async function exportGapsCommand(
  cfg: Config,
  opts: { out: string; perGap: number; budget?: number; agent?: string; since: Date; until: Date; modelVersion: string; kind?: 'topic' | 'thin' | 'all' },
): Promise<void> {
  const o = await openReader(cfg);
  try {
    if (o.note) console.error(o.note);
    // a fresh discovery first, stored when the store is writable, so the export reflects the period
    const r = await discoverGaps(o.reader, {
      since: opts.since,
      now: opts.until,
      agent: opts.agent,
      modelVersion: opts.modelVersion,
      write: !o.note,
      modelsDir: cfg.embed.modelsDir,
    });
    const res = await exportGapCases(o.reader, {
      scope: opts.agent ?? '',
      perGap: opts.perGap,
      budget: opts.budget,
      gaps: o.note ? r.gaps : undefined,
      kinds: !opts.kind || opts.kind === 'all' ? ['topic', 'thin'] : [opts.kind],
    });
    fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
    fs.writeFileSync(opts.out, res.cases.map((c) => JSON.stringify(c)).join('\n') + (res.cases.length ? '\n' : ''));
    console.log(
      `wrote ${res.cases.length} candidate eval case(s) from ${res.gaps} gap(s) to ${opts.out}` +
        (res.redactedSkipped ? `; ${res.redactedSkipped} redacted request(s) skipped (their text is not stored)` : ''),
    );
    for (const a of res.allocation) console.log(`  ${a.gap_id}  ${a.kind === 'thin' ? 'thin coverage' : 'new topic    '}  priority ${a.priority.toFixed(0)}  ${a.cases} case(s)`);
    if (res.cases.length) console.log(`review them, then: evalgap fit --add ${opts.out} --model <your model folder> --out <a new model folder>, and evalgap deploy it (docs/coverage-model.md)`);
  } finally {
    await o.close();
  }
}

export async function sqlCommand(cfg: Config, query: string, opts: { format: 'table' | 'json' | 'jsonl'; param: string[] }): Promise<void> {
  const params: Record<string, string> = {};
  for (const p of opts.param) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`--param expects name=value, got ${p}`);
    params[p.slice(0, i)] = p.slice(i + 1);
  }
  const o = await openReader(cfg, { readOnly: true });
  try {
    if (o.note) console.error(o.note);
    let rows: Record<string, unknown>[];
    try {
      rows = await o.reader.query<Record<string, unknown>>(query, params);
    } catch (e) {
      throw new UserError(`query failed (${o.reader.location}): ${(e as Error).message}`);
    }
    if (opts.format === 'json') console.log(JSON.stringify(rows, null, 2));
    else if (opts.format === 'jsonl') for (const r of rows) console.log(JSON.stringify(r));
    else {
      const headers = rows.length ? Object.keys(rows[0]) : [];
      const cell = (v: unknown) => (v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : String(v));
      if (headers.length) console.log(table(headers, rows.map((r) => headers.map((h) => cell(r[h]))), 80));
      console.error(`${rows.length} row(s)`);
    }
  } finally {
    await o.close();
  }
}
