/**
 * The canary guard: rollback conditions declared before the canary starts (a JSON file, validated
 * with zod), evaluated on the evidence so far as often as wanted. Pure: `update(input)` then a
 * verdict; the monitor's runner evaluates it as the version_regression rule (src/alert/version-guard.ts).
 *
 * Guarantee. Every (outcome, segment) pair any condition or the promote test ranges over is one
 * anytime-valid confidence sequence at α / tests (Bonferroni). With probability ≥ 1 - α every one
 * of them covers its true rates at every evaluation, so:
 * - a rollback condition "the candidate's rate is above `ratio` × the baseline's" (ratio ≥ 1) fires
 *   on a candidate for which it is false with probability ≤ α, however long the canary runs and
 *   however often it is evaluated; in particular an identical candidate is rolled back with
 *   probability ≤ α;
 * - `promote` (every eligible segment's rate no worse than the margin) is announced for a
 *   candidate that is worse than the margin somewhere eligible with probability ≤ α.
 * Which segments are eligible (`min_share`) is decided on the data, but as all the sequences hold at
 * once, the guarantee does not depend on it.
 */
import { z } from 'zod';
import { ALL, OUTCOMES, RateComparison, UNCOVERED, type CompareInput, type Outcome, type SegmentArm, type SegmentCounts } from './detector.js';
import { JEFFREYS, type BetaPrior, type TwoSampleInterval } from './sequence.js';

const outcome = z.enum(OUTCOMES);
const version = z.string().min(1).max(128);

const ConditionSchema = z
  .object({
    /** the outcome whose rate is watched */
    outcome,
    /** clusters: every eval cluster; uncovered; all: all traffic as one; every: clusters and uncovered */
    segments: z.enum(['clusters', 'uncovered', 'all', 'every']).default('every'),
    /** only segments holding at least this share of the baseline's units (0–1) */
    min_share: z.number().min(0).max(1).default(0),
    /** fire when, with confidence, the candidate's rate exceeds ratio × the baseline's (≥ 1) */
    ratio: z.number().min(1).max(1000).default(1),
  })
  .strict();

const PromoteSchema = z
  .object({
    /** no worse than ratio × the baseline's rate … */
    ratio: z.number().min(1).max(1000).optional(),
    /** … or than the baseline's rate + difference (the more lenient margin counts) */
    difference: z.number().min(0).max(1).optional(),
    /** segments holding at least this share of the baseline's units must all pass (all traffic always does) */
    min_share: z.number().min(0).max(1).default(0.02),
    outcomes: z.array(outcome).min(1).default(['escalated', 'refused', 'failed']),
  })
  .strict()
  .refine((p) => p.ratio !== undefined || p.difference !== undefined, 'promote needs a ratio or a difference margin');

export const GuardConfigSchema = z
  .object({
    baseline: version,
    candidate: version,
    /** one agent's traffic; '' for all */
    agent: z.string().max(256).default(''),
    /** the canary's start (ISO-8601): evidence is counted from here */
    since: z.string().datetime({ offset: true }),
    /** family-wise error over every test of the guard */
    alpha: z.number().gt(0).lt(0.5).default(0.05),
    /** a request is slow above this latency (declared in advance; needed by conditions on `slow`) */
    latency_ms: z.number().positive().finite().optional(),
    /** a session counts once it has been idle this long (its last request is older) */
    session_idle_seconds: z.number().int().min(0).max(86_400).default(1800),
    rollback: z.array(ConditionSchema).min(1).max(50),
    promote: PromoteSchema.optional(),
  })
  .strict()
  .refine((c) => c.baseline !== c.candidate, 'baseline and candidate must differ')
  .refine(
    (c) => c.latency_ms !== undefined || (!c.rollback.some((r) => r.outcome === 'slow') && !c.promote?.outcomes.includes('slow')),
    'conditions on slow need latency_ms (the threshold is declared before the canary, not taken from its data)',
  );

export type GuardConfig = z.output<typeof GuardConfigSchema>;
export type GuardCondition = z.output<typeof ConditionSchema>;

export interface RollbackFinding {
  condition: number;
  outcome: Outcome;
  cluster: number;
  label?: string;
  /** the segment's share of the baseline's units */
  share: number;
  baseline: { units: number; rate: number | null };
  candidate: { units: number; rate: number | null };
  interval: TwoSampleInterval;
  ratio: number;
}

export interface GuardVerdict {
  rollback: RollbackFinding[];
  promote: boolean;
  /** eligible (segment, outcome) pairs not yet shown no worse than the margin */
  promotePending: number;
  tests: number;
  alphaPerTest: number;
}

function evidence(a: SegmentArm, o: Outcome) {
  return o === 'slow' ? { n: a.latencyUnits, s: a.slow } : { n: a.units, s: a[o] };
}

function segmentsOf(kind: GuardCondition['segments'], clusters: readonly number[]): number[] {
  if (kind === 'clusters') return [...clusters];
  if (kind === 'uncovered') return [UNCOVERED];
  if (kind === 'all') return [ALL];
  return [...clusters, UNCOVERED];
}

export interface CanaryGuardState {
  /** conditions × segments × outcomes that fired, as "condition:cluster:outcome" (latched) */
  fired: string[];
  promoted: boolean;
}

/**
 * One guard over a canary. `clusters` are the coverage model's clusters, fixed before the data (the
 * number of tests depends on them, never on the traffic).
 *
 * @example
 *   const g = new CanaryGuard(GuardConfigSchema.parse({ baseline: 'v1', candidate: 'v2', since: '2026-12-01T00:00:00Z',
 *     rollback: [{ outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 }] }), [0, 1, 2]);
 *   g.update(input).rollback; // the findings of conditions that hold with confidence
 */
export class CanaryGuard {
  readonly tests: number;
  readonly alphaPerTest: number;
  private state: CanaryGuardState = { fired: [], promoted: false };

  constructor(
    readonly config: GuardConfig,
    readonly clusters: readonly number[],
    readonly prior: BetaPrior = JEFFREYS,
  ) {
    const pairs = new Set<string>();
    for (const c of config.rollback) for (const s of segmentsOf(c.segments, clusters)) pairs.add(`${s}:${c.outcome}`);
    if (config.promote) for (const o of config.promote.outcomes) for (const s of [...clusters, UNCOVERED, ALL]) pairs.add(`${s}:${o}`);
    this.tests = pairs.size;
    this.alphaPerTest = config.alpha / this.tests;
  }

  /** Evaluate the evidence so far (cumulative since the canary's start). Rollback findings are latched. */
  update(input: CompareInput): GuardVerdict {
    const bySeg = new Map<number, SegmentCounts>(input.segments.map((s) => [s.cluster, s]));
    bySeg.set(ALL, input.overall);
    const share = (s: SegmentCounts) => (s.cluster === ALL ? 1 : input.units.baseline > 0 ? s.baseline.mix / input.units.baseline : 0);
    const cache = new Map<string, RateComparison>();
    const test = (s: SegmentCounts, o: Outcome) => {
      const k = `${s.cluster}:${o}`;
      let t = cache.get(k);
      if (!t) {
        t = new RateComparison(this.alphaPerTest, this.prior).set('baseline', evidence(s.baseline, o)).set('candidate', evidence(s.candidate, o));
        cache.set(k, t);
      }
      return t;
    };
    const rollback: RollbackFinding[] = [];
    this.config.rollback.forEach((c, i) => {
      for (const cl of segmentsOf(c.segments, this.clusters)) {
        const s = bySeg.get(cl);
        if (!s || share(s) < c.min_share) continue;
        const t = test(s, c.outcome);
        const key = `${i}:${cl}:${c.outcome}`;
        if (!t.exceeds(c.ratio) && !this.state.fired.includes(key)) continue;
        if (!this.state.fired.includes(key)) this.state.fired.push(key);
        rollback.push({
          condition: i,
          outcome: c.outcome,
          cluster: cl,
          label: s.label,
          share: share(s),
          baseline: { units: t.stats('baseline').n, rate: t.rate('baseline') },
          candidate: { units: t.stats('candidate').n, rate: t.rate('candidate') },
          interval: t.interval,
          ratio: c.ratio,
        });
      }
    });
    let pending = 0;
    const p = this.config.promote;
    if (p) {
      for (const s of [...input.segments, input.overall]) {
        if (s.cluster !== ALL && share(s) < p.min_share) continue;
        for (const o of p.outcomes) if (!test(s, o).noWorseThan({ ratio: p.ratio, difference: p.difference })) pending++;
      }
      if (pending === 0 && rollback.length === 0) this.state.promoted = true;
    }
    return { rollback, promote: this.state.promoted && rollback.length === 0, promotePending: pending, tests: this.tests, alphaPerTest: this.alphaPerTest };
  }

  toJSON(): CanaryGuardState {
    return { fired: [...this.state.fired], promoted: this.state.promoted };
  }

  static fromJSON(state: CanaryGuardState, config: GuardConfig, clusters: readonly number[]): CanaryGuard {
    const g = new CanaryGuard(config, clusters);
    g.state = { fired: [...state.fired], promoted: state.promoted };
    return g;
  }
}
