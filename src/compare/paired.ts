/**
 * Paired comparison for shadow traffic: the candidate answered the very requests the baseline
 * answered (rows of both versions with the same request_id), so each request is its own control
 * and only the discordant pairs carry evidence, McNemar's idea (McNemar 1947) made anytime-valid.
 *
 * Under the sharp null "the two versions are exchangeable on every request" a discordant pair is
 * candidate-only (baseline ok, candidate has the outcome) with probability ½, independently of the
 * others. Units are sessions again: a session's value is its share of candidate-only pairs among its
 * discordant pairs, a number in [0, 1] with mean ½ under the null, so the confidence sequence of
 * `sequence.ts` for θ (the mean of that share) applies: worse when it excludes ½ from above, better
 * from below. One sample, so no union bound over two arms; Bonferroni over segments × outcomes.
 */
import { rateInterval, JEFFREYS, type BetaPrior, type Interval } from './sequence.js';
import type { Verdict } from './detector.js';

export const PAIRED_OUTCOMES = ['escalated', 'refused', 'failed'] as const;
export type PairedOutcome = (typeof PAIRED_OUTCOMES)[number];

export interface PairedOutcomeCounts {
  /** pairs where only the candidate / only the baseline had the outcome */
  candidateOnly: number;
  baselineOnly: number;
  /** pairs where the baseline / the candidate had it (for the rates) */
  baseline: number;
  candidate: number;
  /** units (sessions) with at least one discordant pair, and Σ their share of candidate-only pairs among them */
  units: number;
  s: number;
}

export interface PairedSegmentCounts {
  cluster: number;
  label?: string;
  pairs: number;
  outcomes: Record<PairedOutcome, PairedOutcomeCounts>;
}

export interface PairedOutcomeResult {
  outcome: PairedOutcome;
  baselineRate: number | null;
  candidateRate: number | null;
  candidateOnly: number;
  baselineOnly: number;
  units: number;
  /** θ: the share of discordant evidence against the candidate (½ under no difference) */
  theta: number | null;
  interval: Interval;
  verdict: Verdict;
}

export interface PairedSegmentResult {
  cluster: number;
  label?: string;
  pairs: number;
  outcomes: PairedOutcomeResult[];
  verdict: Verdict;
}

export interface PairedResult {
  alpha: number;
  tests: number;
  alphaPerTest: number;
  segments: PairedSegmentResult[];
  overall: PairedSegmentResult;
  worse: number[];
  better: number[];
}

/** One segment's paired verdicts at α per test. */
export function pairedSegment(seg: PairedSegmentCounts, outcomes: readonly PairedOutcome[], alphaPerTest: number, prior: BetaPrior = JEFFREYS): PairedSegmentResult {
  const res = outcomes.map((o): PairedOutcomeResult => {
    const c = seg.outcomes[o];
    const interval = rateInterval({ n: c.units, s: c.s }, alphaPerTest, prior);
    const verdict: Verdict = interval.lo > 0.5 ? 'worse' : interval.hi < 0.5 ? 'better' : 'no evidence yet';
    return {
      outcome: o,
      baselineRate: seg.pairs > 0 ? c.baseline / seg.pairs : null,
      candidateRate: seg.pairs > 0 ? c.candidate / seg.pairs : null,
      candidateOnly: c.candidateOnly,
      baselineOnly: c.baselineOnly,
      units: c.units,
      theta: c.units > 0 ? c.s / c.units : null,
      interval,
      verdict,
    };
  });
  const verdict: Verdict = res.some((r) => r.verdict === 'worse') ? 'worse' : res.some((r) => r.verdict === 'better') ? 'better' : 'no evidence yet';
  return { cluster: seg.cluster, label: seg.label, pairs: seg.pairs, outcomes: res, verdict };
}

/** Every segment and all traffic, Bonferroni over (segments + 1) × outcomes. */
export function comparePaired(
  input: { segments: PairedSegmentCounts[]; overall: PairedSegmentCounts },
  opts: { alpha: number; outcomes: readonly PairedOutcome[]; prior?: BetaPrior },
): PairedResult {
  if (!(opts.alpha > 0 && opts.alpha < 1)) throw new Error(`alpha must be in (0, 1), got ${opts.alpha}`);
  const tests = (input.segments.length + 1) * opts.outcomes.length;
  const alphaPerTest = opts.alpha / tests;
  const segments = input.segments.map((s) => pairedSegment(s, opts.outcomes, alphaPerTest, opts.prior));
  return {
    alpha: opts.alpha,
    tests,
    alphaPerTest,
    segments,
    overall: pairedSegment(input.overall, opts.outcomes, alphaPerTest, opts.prior),
    worse: segments.filter((s) => s.verdict === 'worse').map((s) => s.cluster),
    better: segments.filter((s) => s.verdict === 'better').map((s) => s.cluster),
  };
}

export function emptyPaired(cluster: number, label?: string): PairedSegmentCounts {
  const z = (): PairedOutcomeCounts => ({ candidateOnly: 0, baselineOnly: 0, baseline: 0, candidate: 0, units: 0, s: 0 });
  return { cluster, label, pairs: 0, outcomes: { escalated: z(), refused: z(), failed: z() } };
}
