/**
 * Version comparison as detectors in the monitor's shape: one object per test, `update()` (or
 * `set()` from SQL aggregates), then a verdict. Pure: no I/O, no clock.
 *
 * A test compares one outcome's rate between a candidate and a baseline version in one segment of
 * traffic (an eval cluster, the uncovered traffic, or all of it). Its evidence is counted in units:
 * a session (its share of requests with the outcome), or a request when it has no session id, so
 * sessions that repeat a query or escalate several times count once. The interval is the
 * anytime-valid confidence sequence of `sequence.ts`: the verdict may be read after every unit and
 * the chance that any verdict is ever wrong stays ≤ α.
 *
 * @example
 *   const t = new RateComparison(0.05);
 *   for (let i = 0; i < 2000; i++) t.update('baseline', i % 10 === 0 ? 1 : 0); // 10%
 *   for (let i = 0; i < 400; i++) t.update('candidate', i % 10 < 3 ? 1 : 0);  // 30%
 *   t.verdict; // 'worse'
 */
import { JEFFREYS, twoSampleInterval, type ArmStats, type BetaPrior, type TwoSampleInterval } from './sequence.js';

export type Arm = 'baseline' | 'candidate';
export type Verdict = 'worse' | 'better' | 'no evidence yet';

export interface RateComparisonState {
  baseline: ArmStats;
  candidate: ArmStats;
}

export class RateComparison {
  private arms: RateComparisonState = { baseline: { n: 0, s: 0 }, candidate: { n: 0, s: 0 } };
  private cached: TwoSampleInterval | null = null;

  /** α of this one test (divide the family's α by the number of tests: see compareVersions) */
  constructor(
    readonly alpha: number,
    readonly prior: BetaPrior = JEFFREYS,
  ) {
    if (!(alpha > 0 && alpha < 1)) throw new Error(`alpha must be in (0, 1), got ${alpha}`);
  }

  /** One unit of evidence for an arm: its value in [0, 1] (1/0 for a request, a share for a session). */
  update(arm: Arm, x: number): this {
    if (!(x >= 0 && x <= 1)) throw new Error(`a unit's value must be in [0, 1], got ${x}`);
    const a = this.arms[arm];
    a.n += 1;
    a.s += x;
    this.cached = null;
    return this;
  }

  /** Replace an arm's cumulative evidence (units and the sum of their values), e.g. from SQL. */
  set(arm: Arm, stats: ArmStats): this {
    if (!(stats.n >= 0) || !(stats.s >= 0) || stats.s > stats.n + 1e-9) throw new Error(`invalid evidence n=${stats.n} s=${stats.s}`);
    this.arms[arm] = { n: stats.n, s: Math.min(stats.s, stats.n) };
    this.cached = null;
    return this;
  }

  stats(arm: Arm): ArmStats {
    return { ...this.arms[arm] };
  }

  rate(arm: Arm): number | null {
    const a = this.arms[arm];
    return a.n > 0 ? a.s / a.n : null;
  }

  get interval(): TwoSampleInterval {
    this.cached ??= twoSampleInterval(this.arms.baseline, this.arms.candidate, this.alpha, this.prior);
    return this.cached;
  }

  /** worse: the candidate's rate is higher with confidence; better: lower; else no evidence yet. */
  get verdict(): Verdict {
    const d = this.interval.difference;
    if (d.lo > 0) return 'worse';
    if (d.hi < 0) return 'better';
    return 'no evidence yet';
  }

  /** With confidence, the candidate's rate is above `ratio` × the baseline's (ratio ≥ 1 for a guarantee). */
  exceeds(ratio: number): boolean {
    const i = this.interval;
    return i.candidate.lo > ratio * i.baseline.hi;
  }

  /**
   * With confidence, the candidate's rate is at most the baseline's times `ratio` or plus
   * `difference` (whichever margin is given and more lenient): sequential non-inferiority.
   */
  noWorseThan(margin: { ratio?: number; difference?: number }): boolean {
    const i = this.interval;
    const bounds: number[] = [];
    if (margin.ratio !== undefined) bounds.push(margin.ratio * i.baseline.lo);
    if (margin.difference !== undefined) bounds.push(i.baseline.lo + margin.difference);
    return bounds.length > 0 && i.candidate.hi <= Math.max(...bounds);
  }

  toJSON(): RateComparisonState {
    return { baseline: { ...this.arms.baseline }, candidate: { ...this.arms.candidate } };
  }

  static fromJSON(state: RateComparisonState, alpha: number, prior: BetaPrior = JEFFREYS): RateComparison {
    return new RateComparison(alpha, prior).set('baseline', state.baseline).set('candidate', state.candidate);
  }
}

/** Outcomes compared; higher is worse for each. `slow`: latency above a threshold (see docs/compare.md). */
export const OUTCOMES = ['escalated', 'refused', 'failed', 'slow'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** One version's evidence in one segment. */
export interface SegmentArm {
  /** units (sessions, or requests without one) with requests in the segment */
  units: number;
  requests: number;
  /** Σ over those units of the unit's share of its segment requests with the outcome */
  escalated: number;
  refused: number;
  failed: number;
  /** units with at least one latency in the segment, and Σ their share of requests slower than the threshold */
  latencyUnits: number;
  slow: number;
  /** Σ over ALL the version's units of the unit's share of its requests that fall in this segment */
  mix: number;
}

export interface SegmentCounts {
  /** eval cluster, -1 for uncovered traffic, -2 for all traffic */
  cluster: number;
  label?: string;
  baseline: SegmentArm;
  candidate: SegmentArm;
}

export const UNCOVERED = -1;
export const ALL = -2;

export interface CompareInput {
  /**
   * Every segment tested (each eval cluster of the model and the uncovered traffic), with zero
   * counts where a version has none: the number of tests is fixed before the data, as the
   * multiplicity correction requires.
   */
  segments: SegmentCounts[];
  /** all traffic (cluster ALL) */
  overall: SegmentCounts;
  /** units of each version over all segments (the denominator of the mix shares) */
  units: { baseline: number; candidate: number };
}

export interface CompareOptions {
  /** family-wise α over every test (clusters × outcomes, the overall rows, the mix) */
  alpha: number;
  outcomes: readonly Outcome[];
  prior?: BetaPrior;
}

export const DEFAULT_COMPARE: CompareOptions = { alpha: 0.05, outcomes: OUTCOMES };

export interface OutcomeResult {
  outcome: Outcome;
  baseline: { units: number; rate: number | null };
  candidate: { units: number; rate: number | null };
  interval: TwoSampleInterval;
  verdict: Verdict;
}

export interface SegmentResult {
  cluster: number;
  label?: string;
  requests: { baseline: number; candidate: number };
  units: { baseline: number; candidate: number };
  outcomes: OutcomeResult[];
  /** worse if any outcome is worse; better if some is better and none worse */
  verdict: Verdict;
  /** share of each version's units in this segment; `differs` when the candidate's share differs with confidence */
  mix?: { baseline: number | null; candidate: number | null; interval: TwoSampleInterval; differs: boolean };
}

export interface CompareResult {
  alpha: number;
  /** tests in the family, and the α each gets (Bonferroni: α / tests) */
  tests: number;
  alphaPerTest: number;
  segments: SegmentResult[];
  overall: SegmentResult;
  /** the candidate's traffic mix over segments differs from the baseline's (some segment's share, with confidence) */
  mixDiffers: boolean;
  worse: number[];
  better: number[];
}

function evidence(a: SegmentArm, o: Outcome): ArmStats {
  return o === 'slow' ? { n: a.latencyUnits, s: a.slow } : { n: a.units, s: a[o] };
}

function segmentResult(seg: SegmentCounts, outcomes: readonly Outcome[], alphaPerTest: number, prior: BetaPrior, units?: CompareInput['units']): SegmentResult {
  const res: OutcomeResult[] = outcomes.map((o) => {
    const t = new RateComparison(alphaPerTest, prior).set('baseline', evidence(seg.baseline, o)).set('candidate', evidence(seg.candidate, o));
    return {
      outcome: o,
      baseline: { units: t.stats('baseline').n, rate: t.rate('baseline') },
      candidate: { units: t.stats('candidate').n, rate: t.rate('candidate') },
      interval: t.interval,
      verdict: t.verdict,
    };
  });
  const verdict: Verdict = res.some((r) => r.verdict === 'worse') ? 'worse' : res.some((r) => r.verdict === 'better') ? 'better' : 'no evidence yet';
  let mix: SegmentResult['mix'];
  if (units) {
    const t = new RateComparison(alphaPerTest, prior)
      .set('baseline', { n: units.baseline, s: seg.baseline.mix })
      .set('candidate', { n: units.candidate, s: seg.candidate.mix });
    mix = { baseline: t.rate('baseline'), candidate: t.rate('candidate'), interval: t.interval, differs: t.verdict !== 'no evidence yet' };
  }
  return {
    cluster: seg.cluster,
    label: seg.label,
    requests: { baseline: seg.baseline.requests, candidate: seg.candidate.requests },
    units: { baseline: seg.baseline.units, candidate: seg.candidate.units },
    outcomes: res,
    verdict,
    mix,
  };
}

/**
 * Every segment's outcomes, the overall rows and the traffic mix, with the family-wise error held at
 * α by Bonferroni: each of the (segments + 1) × outcomes + segments tests gets α / tests. A union
 * bound needs no independence between tests, and it composes with anytime validity: each sequence
 * errs at any time with probability ≤ α / tests, so some verdict ever errs with probability ≤ α.
 */
export function compareVersions(input: CompareInput, opts: CompareOptions = DEFAULT_COMPARE): CompareResult {
  if (!(opts.alpha > 0 && opts.alpha < 1)) throw new Error(`alpha must be in (0, 1), got ${opts.alpha}`);
  if (opts.outcomes.length === 0) throw new Error('no outcome to compare');
  const prior = opts.prior ?? JEFFREYS;
  const tests = (input.segments.length + 1) * opts.outcomes.length + input.segments.length;
  const alphaPerTest = opts.alpha / tests;
  const segments = input.segments.map((s) => segmentResult(s, opts.outcomes, alphaPerTest, prior, input.units));
  const overall = segmentResult(input.overall, opts.outcomes, alphaPerTest, prior);
  return {
    alpha: opts.alpha,
    tests,
    alphaPerTest,
    segments,
    overall,
    mixDiffers: segments.some((s) => s.mix?.differs),
    worse: segments.filter((s) => s.verdict === 'worse').map((s) => s.cluster),
    better: segments.filter((s) => s.verdict === 'better').map((s) => s.cluster),
  };
}

/** An empty arm (a segment a version has no traffic in). */
export function emptyArm(): SegmentArm {
  return { units: 0, requests: 0, escalated: 0, refused: 0, failed: 0, latencyUnits: 0, slow: 0, mix: 0 };
}
