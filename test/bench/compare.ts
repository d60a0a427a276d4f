/**
 * Version-comparison benchmark (npm run bench; prints one JSON object). Pure-core simulation: no
 * embedding per run.
 *
 * Segments: Banking77's 77 intents (train + test rows) grouped by the first word of their name
 * (card_*, top_up_*, …) as eval clusters, with their Banking77 shares scaled to 95% of traffic,
 * plus 5% uncovered traffic. Per-segment outcome rates are seeded draws (escalated 4–15%, refused
 * 1–3%, failed 1–4%; uncovered 20%, 5%, 6%).
 * Traffic: sessions of 1 + Geometric(½) requests (mean 2, at most 10), 70% of a session's requests in
 * its main segment; a session frailty multiplies its outcome probabilities (3.5 for 20% of sessions,
 * 0.375 for the rest: mean 1), so requests of a session are correlated. Sessions go to the
 * candidate with probability 5%, else to the baseline.
 * Scenarios: regress (the candidate's escalation tripled in the cluster closest to 3% of traffic),
 * better (every candidate rate × 0.7), identical.
 * The guard (src/compare/guard.ts) is evaluated every 50 candidate sessions (then every 1% more
 * candidate sessions past 5,000): detection delay in candidate requests, false rollbacks,
 * time to promote. The same regression through a global test (all traffic as one segment,
 * escalation, ratio 1, one test at α) for comparison.
 */
import { CanaryGuard, GuardConfigSchema, type GuardConfig } from '../../src/compare/guard.js';
import { ALL, UNCOVERED, emptyArm, type CompareInput, type SegmentArm, type SegmentCounts } from '../../src/compare/detector.js';
import { BANKING77_MISSING, hasBanking77, loadBanking77 } from '../helpers/banking77.js';
import { emptyPaired, pairedSegment, type PairedSegmentCounts } from '../../src/compare/paired.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const IDENTICAL_RUNS = Number(args.get('identical-runs') ?? 200);
const RUNS = Number(args.get('runs') ?? 20);
const GLOBAL_RUNS = Number(args.get('global-runs') ?? 10);
const ALPHA = Number(args.get('alpha') ?? 0.05);
/** candidate requests simulated at most per run */
const HORIZON = Number(args.get('horizon') ?? 20_000);
const PROMOTE_HORIZON = Number(args.get('promote-horizon') ?? 400_000);
const GLOBAL_HORIZON = Number(args.get('global-horizon') ?? 400_000);
const SPLIT = 0.05;
/** --only=canary|shadow: run one part */
const ONLY = args.get('only');
const part = <T>(name: 'canary' | 'shadow' | 'long', f: () => T): T | null => (ONLY === undefined ? name !== 'long' : ONLY === name) ? f() : null;
/** --only=long: identical versions over a longer horizon (not part of the default run) */
const LONG_RUNS = Number(args.get('long-runs') ?? 100);
const LONG_HORIZON = Number(args.get('long-horizon') ?? 100_000);
const PAIRED_RUNS = Number(args.get('paired-runs') ?? 20);
const PAIRED_IDENTICAL_RUNS = Number(args.get('paired-identical-runs') ?? 200);
const SHADOW_HORIZON = Number(args.get('shadow-horizon') ?? 40_000);
/** in the shadow simulation, the share of requests whose two answers are drawn independently (else from one shared draw) */
const INDEPENDENT = 0.2;

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Segment {
  cluster: number;
  label: string;
  share: number;
  rates: [number, number, number]; // escalated, refused, failed
}

function segmentsFromBanking77(): Segment[] {
  const rows = [...loadBanking77('train'), ...loadBanking77('test')];
  const byGroup = new Map<string, number>();
  for (const r of rows) {
    const g = r.category.split('_')[0].toLowerCase();
    byGroup.set(g, (byGroup.get(g) ?? 0) + 1);
  }
  const r = rng(77);
  const groups = [...byGroup.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const segs: Segment[] = groups.map(([g, n], i) => ({
    cluster: i,
    label: g,
    share: (0.95 * n) / rows.length,
    rates: [0.04 + 0.11 * r(), 0.01 + 0.02 * r(), 0.01 + 0.03 * r()],
  }));
  segs.push({ cluster: UNCOVERED, label: 'uncovered', share: 0.05, rates: [0.2, 0.05, 0.06] });
  return segs;
}

type Scenario = 'regress' | 'better' | 'identical';

class Sim {
  readonly arms = new Map<number, { baseline: SegmentArm; candidate: SegmentArm }>();
  readonly overall = { baseline: emptyArm(), candidate: emptyArm() };
  candidateRequests = 0;
  candidateSessions = 0;
  private readonly cum: number[];
  private readonly r: () => number;

  constructor(
    readonly segs: Segment[],
    readonly scenario: Scenario,
    readonly target: number,
    seed: number,
  ) {
    for (const s of segs) this.arms.set(s.cluster, { baseline: emptyArm(), candidate: emptyArm() });
    let c = 0;
    this.cum = segs.map((s) => (c += s.share));
    this.r = rng(seed);
  }

  private draw(): number {
    const u = this.r() * this.cum[this.cum.length - 1];
    let lo = 0;
    let hi = this.cum.length - 1;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (this.cum[m] < u) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  private rate(seg: Segment, o: number, cand: boolean): number {
    const base = seg.rates[o];
    if (!cand) return base;
    if (this.scenario === 'better') return base * 0.7;
    if (this.scenario === 'regress' && o === 0 && seg.cluster === this.target) return Math.min(1, 3 * base);
    return base;
  }

  /** One session; returns whether it went to the candidate. */
  session(): boolean {
    const r = this.r;
    const cand = r() < SPLIT;
    let len = 1;
    while (len < 10 && r() < 0.5) len++;
    const main = this.draw();
    const frailty = r() < 0.2 ? 3.5 : 0.375;
    const per = new Map<number, [number, number, number, number]>(); // n, esc, ref, fail
    const tot = [0, 0, 0];
    for (let i = 0; i < len; i++) {
      const si = r() < 0.7 ? main : this.draw();
      const seg = this.segs[si];
      const c = per.get(si) ?? [0, 0, 0, 0];
      c[0]++;
      for (let o = 0; o < 3; o++) {
        if (r() < Math.min(1, this.rate(seg, o, cand) * frailty)) {
          c[o + 1]++;
          tot[o]++;
        }
      }
      per.set(si, c);
    }
    const key = cand ? 'candidate' : 'baseline';
    for (const [si, c] of per) {
      const a = this.arms.get(this.segs[si].cluster)![key];
      a.units++;
      a.requests += c[0];
      a.escalated += c[1] / c[0];
      a.refused += c[2] / c[0];
      a.failed += c[3] / c[0];
      a.mix += c[0] / len;
    }
    const o = this.overall[key];
    o.units++;
    o.requests += len;
    o.escalated += tot[0] / len;
    o.refused += tot[1] / len;
    o.failed += tot[2] / len;
    o.mix += 1;
    if (cand) {
      this.candidateRequests += len;
      this.candidateSessions++;
    }
    return cand;
  }

  input(): CompareInput {
    const segments: SegmentCounts[] = this.segs.map((s) => ({ cluster: s.cluster, label: s.label, ...this.arms.get(s.cluster)! }));
    return {
      segments,
      overall: { cluster: ALL, label: 'all', baseline: this.overall.baseline, candidate: this.overall.candidate },
      units: { baseline: this.overall.baseline.units, candidate: this.overall.candidate.units },
    };
  }
}

interface RunResult {
  /** candidate requests when the event happened, or null when it did not within the horizon */
  rollbackAt: number | null;
  rollbackClusters: number[];
  promoteAt: number | null;
  candidateRequests: number;
  totalRequests: number;
}

function runOnce(segs: Segment[], scenario: Scenario, target: number, seed: number, guardCfg: GuardConfig, horizon: number, stopOn: 'rollback' | 'promote' | 'any'): RunResult {
  const sim = new Sim(segs, scenario, target, seed);
  const guard = new CanaryGuard(guardCfg, segs.filter((s) => s.cluster >= 0).map((s) => s.cluster));
  let nextCheck = 50;
  let total = 0;
  let rollbackAt: number | null = null;
  let rollbackClusters: number[] = [];
  let promoteAt: number | null = null;
  while (sim.candidateRequests < horizon) {
    const cand = sim.session();
    total++;
    if (!cand || sim.candidateSessions < nextCheck) continue;
    nextCheck = sim.candidateSessions < 5000 ? sim.candidateSessions + 50 : Math.ceil(sim.candidateSessions * 1.01);
    const v = guard.update(sim.input());
    if (v.rollback.length > 0 && rollbackAt === null) {
      rollbackAt = sim.candidateRequests;
      rollbackClusters = [...new Set(v.rollback.map((f) => f.cluster))];
    }
    if (v.promote && promoteAt === null) promoteAt = sim.candidateRequests;
    if ((stopOn === 'rollback' || stopOn === 'any') && rollbackAt !== null) break;
    if ((stopOn === 'promote' || stopOn === 'any') && promoteAt !== null) break;
  }
  return { rollbackAt, rollbackClusters, promoteAt, candidateRequests: sim.candidateRequests, totalRequests: total };
}

function quantiles(xs: number[]): { median: number; p10: number; p90: number; mean: number } | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p10: q(0.1), p90: q(0.9), mean: Math.round(s.reduce((a, b) => a + b, 0) / s.length) };
}

/**
 * Shadow: every session's requests are answered by both versions. The two answers to a request share
 * one uniform draw (what pairing exploits) except for INDEPENDENT of them, drawn apart, so identical
 * versions still disagree on some requests. Returns the shadow requests at which the paired test
 * (per cluster, the guard's family) and the unpaired one on the same requests first call a segment
 * worse (or better), or null.
 */
function runShadow(segs: Segment[], scenario: Scenario, target: number, seed: number, anyIncrease: GuardConfig, horizon: number) {
  const r = rng(seed);
  let c = 0;
  const cum = segs.map((x) => (c += x.share));
  const draw = () => {
    const u = r() * cum[cum.length - 1];
    let i = 0;
    while (cum[i] < u) i++;
    return i;
  };
  const rate = (seg: Segment, o: number, cand: boolean) =>
    !cand ? seg.rates[o] : scenario === 'better' ? seg.rates[o] * 0.7 : scenario === 'regress' && o === 0 && seg.cluster === target ? Math.min(1, 3 * seg.rates[o]) : seg.rates[o];
  const clusters = segs.filter((x) => x.cluster >= 0).map((x) => x.cluster);
  const guard = new CanaryGuard(anyIncrease, clusters);
  const arms = new Map(segs.map((x) => [x.cluster, { baseline: emptyArm(), candidate: emptyArm() }]));
  const overall = { baseline: emptyArm(), candidate: emptyArm() };
  const paired = new Map<number, PairedSegmentCounts>(segs.map((x) => [x.cluster, emptyPaired(x.cluster)]));
  const names = ['escalated', 'refused', 'failed'] as const;
  // the paired family: the guard's (outcome, segment) pairs, at the guard's α per test
  const family = anyIncrease.rollback.flatMap((cond) =>
    (cond.segments === 'clusters' ? clusters : cond.segments === 'uncovered' ? [UNCOVERED] : [...clusters, UNCOVERED]).map((cl) => ({ cl, o: cond.outcome as (typeof names)[number], minShare: cond.min_share })),
  );
  let requests = 0;
  let sessions = 0;
  let pairedAt: number | null = null;
  let pairedWrongWay = false;
  let unpairedAt: number | null = null;
  while (requests < horizon && (pairedAt === null || unpairedAt === null)) {
    let len = 1;
    while (len < 10 && r() < 0.5) len++;
    const main = draw();
    const frailty = r() < 0.2 ? 3.5 : 0.375;
    const per = new Map<number, { n: number; b: number[]; c: number[]; d01: number[]; d10: number[] }>();
    const tb = [0, 0, 0];
    const tc = [0, 0, 0];
    for (let i = 0; i < len; i++) {
      const si = r() < 0.7 ? main : draw();
      const seg = segs[si];
      const x = per.get(si) ?? { n: 0, b: [0, 0, 0], c: [0, 0, 0], d01: [0, 0, 0], d10: [0, 0, 0] };
      x.n++;
      for (let o = 0; o < 3; o++) {
        const u = r();
        const v = r() < INDEPENDENT ? r() : u;
        const b = u < Math.min(1, rate(seg, o, false) * frailty) ? 1 : 0;
        const cc = v < Math.min(1, rate(seg, o, true) * frailty) ? 1 : 0;
        x.b[o] += b;
        x.c[o] += cc;
        tb[o] += b;
        tc[o] += cc;
        if (b === 0 && cc === 1) x.d01[o]++;
        if (b === 1 && cc === 0) x.d10[o]++;
      }
      per.set(si, x);
    }
    requests += len;
    sessions++;
    for (const [si, x] of per) {
      const cl = segs[si].cluster;
      const a = arms.get(cl)!;
      const pc = paired.get(cl)!;
      pc.pairs += x.n;
      for (const [key, vals] of [['baseline', x.b], ['candidate', x.c]] as const) {
        const arm = a[key];
        arm.units++;
        arm.requests += x.n;
        arm.escalated += vals[0] / x.n;
        arm.refused += vals[1] / x.n;
        arm.failed += vals[2] / x.n;
        arm.mix += x.n / len;
      }
      names.forEach((nm, o) => {
        const q = pc.outcomes[nm];
        q.baseline += x.b[o];
        q.candidate += x.c[o];
        q.candidateOnly += x.d01[o];
        q.baselineOnly += x.d10[o];
        if (x.d01[o] + x.d10[o] > 0) {
          q.units++;
          q.s += x.d01[o] / (x.d01[o] + x.d10[o]);
        }
      });
    }
    for (const [key, vals] of [['baseline', tb], ['candidate', tc]] as const) {
      const arm = overall[key];
      arm.units++;
      arm.requests += len;
      arm.escalated += vals[0] / len;
      arm.refused += vals[1] / len;
      arm.failed += vals[2] / len;
      arm.mix += 1;
    }
    if (sessions % 50 !== 0) continue;
    if (unpairedAt === null) {
      const input: CompareInput = {
        segments: segs.map((x) => ({ cluster: x.cluster, ...arms.get(x.cluster)! })),
        overall: { cluster: ALL, ...overall },
        units: { baseline: overall.baseline.units, candidate: overall.candidate.units },
      };
      if (guard.update(input).rollback.length > 0) unpairedAt = requests;
    }
    if (pairedAt === null) {
      for (const f of family) {
        const share = (arms.get(f.cl)!.baseline.mix || 0) / Math.max(1, overall.baseline.units);
        if (share < f.minShare) continue;
        const v = pairedSegment(paired.get(f.cl)!, [f.o], guard.alphaPerTest).verdict;
        if (v === 'worse') {
          pairedAt = requests;
          break;
        }
        if (v === 'better') pairedWrongWay = true;
      }
    }
  }
  return { pairedAt, unpairedAt, pairedWrongWay, requests };
}

function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'compare', skipped: BANKING77_MISSING }));
    return;
  }
  const t0 = performance.now();
  const segs = segmentsFromBanking77();
  const clusters = segs.filter((s) => s.cluster >= 0);
  const targetSeg = [...clusters].sort((a, b) => Math.abs(a.share - 0.03) - Math.abs(b.share - 0.03))[0];
  const base = { baseline: 'v1', candidate: 'v2', since: '2026-12-01T00:00:00Z', alpha: ALPHA };
  const guardCfg = GuardConfigSchema.parse({
    ...base,
    rollback: [
      { outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 },
      { outcome: 'refused', segments: 'clusters', min_share: 0.01, ratio: 1.5 },
      { outcome: 'failed', segments: 'uncovered', ratio: 2 },
    ],
    promote: { ratio: 1.2, difference: 0.02, min_share: 0.03 },
  });
  // the same conditions at ratio 1 (any increase, with confidence): compareVersions' `worse`
  const anyIncrease = GuardConfigSchema.parse({
    ...base,
    rollback: [
      { outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1 },
      { outcome: 'refused', segments: 'clusters', min_share: 0.01, ratio: 1 },
      { outcome: 'failed', segments: 'uncovered', ratio: 1 },
    ],
  });
  const global = GuardConfigSchema.parse({ ...base, rollback: [{ outcome: 'escalated', segments: 'all', ratio: 1 }] });

  const regress = (cfg: GuardConfig, runs: number, horizon: number, seed0: number) => {
    const rs = Array.from({ length: runs }, (_, i) => runOnce(segs, 'regress', targetSeg.cluster, seed0 + i, cfg, horizon, 'rollback'));
    const hit = rs.filter((r) => r.rollbackAt !== null);
    return {
      runs,
      detected: hit.length,
      right_cluster_only: hit.filter((r) => r.rollbackClusters.length === 1 && r.rollbackClusters[0] === targetSeg.cluster).length,
      detection_delay_candidate_requests: quantiles(hit.map((r) => r.rollbackAt!)),
      missed_within_horizon: runs - hit.length,
      horizon_candidate_requests: horizon,
    };
  };
  const identical = (cfg: GuardConfig, seed0: number, runs = IDENTICAL_RUNS, horizon = HORIZON) => {
    const rs = Array.from({ length: runs }, (_, i) => runOnce(segs, 'identical', -99, seed0 + i, cfg, horizon, 'rollback'));
    const fired = rs.filter((r) => r.rollbackAt !== null).length;
    return { runs, false_rollbacks: fired, false_rollback_rate: fired / runs, horizon_candidate_requests: horizon };
  };

  const better = part('canary', () => Array.from({ length: Math.max(1, Math.floor(RUNS / 2)) }, (_, i) => runOnce(segs, 'better', -99, 9000 + i, guardCfg, PROMOTE_HORIZON, 'any'))) ?? [];
  const promoted = better.filter((r) => r.promoteAt !== null);
  const out = {
    bench: 'compare',
    setup: {
      segments: clusters.length + 1,
      clusters: clusters.length,
      split: `${SPLIT * 100}% candidate sessions / ${100 - SPLIT * 100}% baseline`,
      regressed_cluster: { label: targetSeg.label, share: Number(targetSeg.share.toFixed(4)), escalation: Number(targetSeg.rates[0].toFixed(4)), candidate_escalation: Number(Math.min(1, 3 * targetSeg.rates[0]).toFixed(4)) },
      sessions: 'mean 2 requests (1 + Geometric(1/2), at most 10), 70% in one segment, frailty 3.5 (20%) / 0.375',
      alpha: ALPHA,
      guard_tests: new CanaryGuard(guardCfg, clusters.map((c) => c.cluster)).tests,
      looks: 'every 50 candidate sessions, every 1% more past 5,000',
    },
    regression_guard_ratio_1_5: part('canary', () => regress(guardCfg, RUNS, HORIZON * 5, 1000)),
    regression_any_increase: part('canary', () => regress(anyIncrease, RUNS, HORIZON * 5, 2000)),
    regression_global_test: part('canary', () => regress(global, GLOBAL_RUNS, GLOBAL_HORIZON, 3000)),
    identical_guard_ratio_1_5: part('canary', () => identical(guardCfg, 5000)),
    identical_any_increase: part('canary', () => identical(anyIncrease, 7000)),
    identical_guard_ratio_1_5_long: part('long', () => identical(guardCfg, 20_000, LONG_RUNS, LONG_HORIZON)),
    better: {
      runs: better.length,
      promoted: promoted.length,
      time_to_promote_candidate_requests: quantiles(promoted.map((r) => r.promoteAt!)),
      wrongly_rolled_back: better.filter((r) => r.rollbackAt !== null).length,
      horizon_candidate_requests: PROMOTE_HORIZON,
      margin: 'every segment with ≥ 3% of the baseline and all traffic: escalated, refused, failed each ≤ 1.2 × or ≤ +2 pp the baseline',
    },
    shadow: part('shadow', () => {
      const reg = Array.from({ length: PAIRED_RUNS }, (_, i) => runShadow(segs, 'regress', targetSeg.cluster, 11_000 + i, anyIncrease, SHADOW_HORIZON * 5));
      const same = Array.from({ length: PAIRED_IDENTICAL_RUNS }, (_, i) => runShadow(segs, 'identical', -99, 13_000 + i, anyIncrease, SHADOW_HORIZON));
      return {
        design: `every request answered by both versions; the two answers share one draw except ${INDEPENDENT * 100}% drawn independently; the any-increase family (${new CanaryGuard(anyIncrease, clusters.map((c) => c.cluster)).tests} tests), looked at every 50 sessions`,
        regression_runs: PAIRED_RUNS,
        paired_detected: reg.filter((x) => x.pairedAt !== null).length,
        paired_delay_shadow_requests: quantiles(reg.filter((x) => x.pairedAt !== null).map((x) => x.pairedAt!)),
        unpaired_detected: reg.filter((x) => x.unpairedAt !== null).length,
        unpaired_delay_same_requests: quantiles(reg.filter((x) => x.unpairedAt !== null).map((x) => x.unpairedAt!)),
        horizon_shadow_requests: SHADOW_HORIZON * 5,
        identical_runs: PAIRED_IDENTICAL_RUNS,
        identical_paired_false_worse: same.filter((x) => x.pairedAt !== null).length,
        identical_paired_false_better: same.filter((x) => x.pairedWrongWay).length,
        identical_unpaired_false: same.filter((x) => x.unpairedAt !== null).length,
        identical_horizon_shadow_requests: SHADOW_HORIZON,
      };
    }),
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  };
  console.log(JSON.stringify(out, null, 2));
}

main();
