/**
 * Reads for `evalgap compare` and the canary guard: per coverage model and segment (eval cluster,
 * -1 uncovered, -2 all traffic), each version's units (sessions, or requests without one) and the
 * sum of their outcome shares, through the parameterized view `version_comparison` (migration 14).
 */
import type { StoreReader } from './gaps.js';

export interface ComparePeriod {
  baseline: string;
  candidate: string;
  /** ISO-8601 instants; rows with since ≤ ts < until */
  since: string;
  until: string;
  /** one agent's rows; '' for all */
  agent: string;
  /** a request is `slow` when its latency_ms exceeds this (Infinity: none is) */
  slowMs: number;
  /** sessions whose last request is at or after this are still open and left out (default: until) */
  closedBefore?: string;
}

export interface VersionArmRow {
  units: number;
  requests: number;
  escalated: number;
  refused: number;
  failed: number;
  latencyUnits: number;
  slow: number;
  mix: number;
}

export interface VersionEvidenceRow {
  model_version: string;
  segment: number;
  baseline: VersionArmRow;
  candidate: VersionArmRow;
}

/** ISO-8601 → the 'YYYY-MM-DD hh:mm:ss.sss' a DateTime64(3) parameter takes. */
export function chTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) throw new Error(`not a time: ${iso}`);
  return d.toISOString().replace('T', ' ').replace('Z', '');
}

/** The SQL a person pastes to see a comparison's evidence (display text: evalgap never runs it). */
export function comparisonSql(database: string, p: ComparePeriod): string {
  const lit = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return (
    `SELECT * FROM ${database}.version_comparison(baseline = ${lit(p.baseline)}, candidate = ${lit(p.candidate)}, ` +
    `since = ${lit(chTime(p.since))}, until = ${lit(chTime(p.until))}, agent = ${lit(p.agent)}, ` +
    `slow_ms = ${Number.isFinite(p.slowMs) ? p.slowMs : 'inf'}, closed_before = ${lit(chTime(p.closedBefore ?? p.until))})`
  );
}

// "no threshold": ClickHouse reads 'inf' as a Float64 (passed as text: a binder may refuse unsafe integers)
const NO_THRESHOLD = 'inf';

type Raw = Record<string, string | number | null>;
const num = (v: unknown) => Number(v ?? 0);

function arm(r: Raw, p: 'baseline' | 'candidate'): VersionArmRow {
  return {
    units: num(r[`${p}_units`]),
    requests: num(r[`${p}_requests`]),
    escalated: num(r[`${p}_escalated`]),
    refused: num(r[`${p}_refused`]),
    failed: num(r[`${p}_failed`]),
    latencyUnits: num(r[`${p}_latency_units`]),
    slow: num(r[`${p}_slow`]),
    mix: num(r[`${p}_mix`]),
  };
}

export class CompareStore {
  constructor(private readonly store: StoreReader) {}

  private params(p: ComparePeriod) {
    return {
      baseline: p.baseline,
      candidate: p.candidate,
      since: chTime(p.since),
      until: chTime(p.until),
      agent: p.agent,
      slow_ms: Number.isFinite(p.slowMs) ? String(p.slowMs) : NO_THRESHOLD,
      closed_before: chTime(p.closedBefore ?? p.until),
    };
  }

  /** Both versions' evidence per coverage model and segment (segment -2: all traffic). */
  async evidence(p: ComparePeriod): Promise<VersionEvidenceRow[]> {
    const rows = await this.store.query<Raw>(
      `SELECT * FROM ${this.store.t('version_comparison')}(baseline = {baseline:String}, candidate = {candidate:String},
         since = {since:String}, until = {until:String}, agent = {agent:String}, slow_ms = {slow_ms:Float64},
         closed_before = {closed_before:String})`,
      this.params(p),
    );
    return rows.map((r) => ({
      model_version: String(r.model_version),
      segment: num(r.segment),
      baseline: arm(r, 'baseline'),
      candidate: arm(r, 'candidate'),
    }));
  }

  /** The versions seen in a period, with their requests (most first): for choosing and for error messages. */
  async versions(p: Pick<ComparePeriod, 'since' | 'until' | 'agent'>): Promise<{ version: string; requests: number }[]> {
    const rows = await this.store.query<Raw>(
      `SELECT version, count() AS requests FROM ${this.store.t('requests')}
       WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} AND ({agent:String} = '' OR agent = {agent:String})
       GROUP BY version ORDER BY requests DESC, version LIMIT 100`,
      { since: chTime(p.since), until: chTime(p.until), agent: p.agent },
    );
    return rows.map((r) => ({ version: String(r.version), requests: num(r.requests) }));
  }

  /** A quantile of the baseline's latency in the period (null when it has none). */
  async baselineLatencyQuantile(p: ComparePeriod, q: number): Promise<number | null> {
    const [r] = await this.store.query<Raw>(
      `SELECT quantileExactIf({q:Float64})(latency_ms, latency_ms IS NOT NULL) AS v, countIf(latency_ms IS NOT NULL) AS n
       FROM ${this.store.t('requests')}
       WHERE version = {baseline:String} AND ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}
         AND ({agent:String} = '' OR agent = {agent:String})`,
      { q, baseline: p.baseline, since: chTime(p.since), until: chTime(p.until), agent: p.agent },
    );
    return r && num(r.n) > 0 ? num(r.v) : null;
  }

  /** The registered clusters of a coverage model: every segment to test, with its label. */
  async clusters(modelVersion: string): Promise<{ cluster: number; label: string }[]> {
    const rows = await this.store.query<Raw>(
      `SELECT cluster, argMax(label, registered_at) AS label FROM ${this.store.t('coverage_clusters')}
       WHERE model_version = {mv:String} GROUP BY cluster ORDER BY cluster`,
      { mv: modelVersion },
    );
    return rows.map((r) => ({ cluster: num(r.cluster), label: String(r.label) }));
  }

  /**
   * Example candidate queries of a segment with an outcome (most recent first; hashes when the
   * text was redacted). `outcome` is one of escalated, refused, failed, slow.
   */
  async examples(p: ComparePeriod, modelVersion: string, segment: number, outcome: string, limit = 3): Promise<{ request_id: string; query: string }[]> {
    const cond: Record<string, string> = {
      escalated: 'escalated = 1',
      refused: "outcome = 'refused'",
      failed: "outcome = 'failed'",
      slow: 'latency_ms > {slow_ms:Float64}',
    };
    if (!cond[outcome]) throw new Error(`unknown outcome ${outcome}`);
    const seg = segment === -2 ? '1' : segment === -1 ? 'covered = 0' : 'covered = 1 AND cluster = {segment:Int32}';
    const rows = await this.store.query<Raw>(
      `SELECT request_id, query FROM ${this.store.t('requests')}
       WHERE version = {candidate:String} AND model_version = {mv:String} AND ${seg} AND ${cond[outcome]}
         AND ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} AND ({agent:String} = '' OR agent = {agent:String})
       ORDER BY ts DESC LIMIT {limit:UInt32}`,
      { ...this.params(p), mv: modelVersion, segment, limit },
    );
    return rows.map((r) => ({ request_id: String(r.request_id), query: String(r.query) }));
  }

  /**
   * Shadow pairs: requests stored under both versions (same request_id), per coverage model and
   * segment of the baseline's row (-2: all traffic). Per outcome: pairs where only the candidate /
   * only the baseline had it, each version's count, and per session (a request without one counts
   * alone) with a discordant pair: units and Σ the session's share of candidate-only pairs.
   */
  async pairedEvidence(p: ComparePeriod): Promise<PairedEvidenceRow[]> {
    const side = (v: string) => `
      SELECT request_id, any(model_version) AS mv, any(if(covered = 0, -1, cluster)) AS segment,
             any(if(session_id != '', session_id, concat('request:', request_id))) AS unit,
             max(escalated = 1) AS e, max(outcome = 'refused') AS rf, max(outcome = 'failed') AS fl
      FROM ${this.store.t('requests')}
      WHERE version = {${v}:String} AND ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}
        AND ({agent:String} = '' OR agent = {agent:String})
      GROUP BY request_id`;
    const o = ['e', 'rf', 'fl'];
    const perUnit = (seg: string) => `
      SELECT b.mv AS mv, ${seg} AS segment, b.unit AS unit, count() AS pairs,
             ${o.map((x) => `countIf(b.${x} = 0 AND c.${x} = 1) AS ${x}01, countIf(b.${x} = 1 AND c.${x} = 0) AS ${x}10, countIf(b.${x} = 1) AS ${x}b, countIf(c.${x} = 1) AS ${x}c`).join(',\n             ')}
      FROM b INNER JOIN c ON c.request_id = b.request_id
      GROUP BY mv, segment, unit`;
    const rows = await this.store.query<Raw>(
      `WITH b AS (${side('baseline')}), c AS (${side('candidate')}),
            u AS (${perUnit('b.segment')} UNION ALL ${perUnit('-2')})
       SELECT mv AS model_version, segment, sum(pairs) AS pairs,
              ${o.map((x) => `sum(${x}01) AS ${x}_c_only, sum(${x}10) AS ${x}_b_only, sum(${x}b) AS ${x}_b, sum(${x}c) AS ${x}_c, countIf(${x}01 + ${x}10 > 0) AS ${x}_units, sumIf(${x}01 / (${x}01 + ${x}10), ${x}01 + ${x}10 > 0) AS ${x}_s`).join(',\n              ')}
       FROM u GROUP BY model_version, segment ORDER BY model_version, segment`,
      { baseline: p.baseline, candidate: p.candidate, since: chTime(p.since), until: chTime(p.until), agent: p.agent },
    );
    const names: Record<string, 'escalated' | 'refused' | 'failed'> = { e: 'escalated', rf: 'refused', fl: 'failed' };
    return rows.map((r) => ({
      model_version: String(r.model_version),
      segment: num(r.segment),
      pairs: num(r.pairs),
      outcomes: Object.fromEntries(
        o.map((x) => [
          names[x],
          { candidateOnly: num(r[`${x}_c_only`]), baselineOnly: num(r[`${x}_b_only`]), baseline: num(r[`${x}_b`]), candidate: num(r[`${x}_c`]), units: num(r[`${x}_units`]), s: num(r[`${x}_s`]) },
        ]),
      ) as PairedEvidenceRow['outcomes'],
    }));
  }
}

export interface PairedOutcomeRow {
  candidateOnly: number;
  baselineOnly: number;
  baseline: number;
  candidate: number;
  units: number;
  s: number;
}

export interface PairedEvidenceRow {
  model_version: string;
  segment: number;
  pairs: number;
  outcomes: Record<'escalated' | 'refused' | 'failed', PairedOutcomeRow>;
}
