/**
 * The weighted_score rule: the eval score reweighted to each window's production traffic
 * (Σ_c share_c · pass_c over the covered requests, docs/estimate.md) falls by more than a set amount
 * against its production reference. A RuleSet (./compose.ts): pure, with its own state slice.
 *
 * Each covered request of cluster c carries the score pass_c (the eval run's pass rate of its
 * cluster, shrunk as `evalgap estimate` does; `MonitorContext.evalPassRates`). The reference μ0 is
 * the mean score of the scope's recent production traffic (an exponentially weighted count per
 * cluster with a mean age of `referenceDays`), frozen while the rule fires (for at most
 * `freezeHours`). The null hypothesis is "the mean score is at least m0 = μ0 − drop", for any mix
 * of clusters: each request's score y ∈ [0, 1] multiplies a test martingale by 1 + η(m0 − y)
 * (a bet against the null; under it, E ≤ 1 whatever the mix, since y is bounded: Waudby-Smith &
 * Ramdas 2023, "Estimating means of bounded random variables by betting"). A window's log factor is
 * Σ_c n_c · ln(1 + η(m0 − pass_c)), divided by the session design effect φ ≥ 1 (a power 1/φ of an
 * e-value is an e-value, by Jensen). A CUSUM of these log factors (floored at 0, one per bet η) is
 * an e-detector (Shin, Ramdas & Rinaldo 2024, "E-detectors"): its average run length to a false
 * alarm is at least e^h windows; with h = ln(ARL windows · scopes · bets) the whole rule keeps one
 * false alarm per `arlDays` at most. The bets target falls of `drop + extra` for each `extra`.
 *
 * Sessions are the unit, as in the core rules (docs/monitor.md): whole closed sessions measure the
 * design effect φ = Σ_s (Y_s − n_s μ0)² / (σ0² Σ_s n_s) (Y_s the session's score sum over its n_s
 * covered requests, σ0² the reference's variance of the score), taken at its upper ~95% bound and
 * floored at 1; a scope with session ids waits for `minSessions` closed sessions.
 */
import { z } from 'zod';
import type { RuleSet, RuleSetEvaluation } from './compose.js';
import type { ClusterShare, Finding, MonitorContext, TrendRow, WindowCounts } from './types.js';
import { pct, scopeName } from './wording.js';
import { windowClock } from './clock.js';

export interface WeightedScoreOptions {
  /** off: the rule evaluates nothing */
  enabled: boolean;
  /** the fall (in score points as a fraction, 0.05 = 5 points) the rule must establish before firing */
  drop: number;
  /** further falls beyond `drop` the bets are tuned to (one bet each; the alarm budget is split over them) */
  extra: number[];
  /** false-alarm guarantee of the rule, summed over its scopes: average run length in days */
  arlDays: number;
  /** mean age of the production reference (days) */
  referenceDays: number;
  /** no alarm before the reference holds this many hours of traffic… */
  warmupHours: number;
  /** …and this many covered requests */
  minRequests: number;
  /** with session ids: closed sessions needed before the rule runs (they measure the design effect) */
  minSessions: number;
  /** a firing finding resolves after this many minutes without a new alarm (and the statistic below h/2) */
  resolveMinutes: number;
  /** while firing, the reference is frozen for at most this many hours (then the new level is learnt) */
  freezeHours: number;
  /** cap on the design effect */
  maxDispersion: number;
  /** clusters named per finding */
  drivers: number;
}

export const DEFAULT_WEIGHTED_SCORE: WeightedScoreOptions = {
  enabled: true,
  drop: 0.03,
  extra: [0.01, 0.03, 0.1],
  arlDays: 30,
  referenceDays: 7,
  warmupHours: 24,
  minRequests: 200,
  minSessions: 50,
  resolveMinutes: 60,
  freezeHours: 24,
  maxDispersion: 100,
  drivers: 5,
};

export const WeightedScoreOptionsSchema = z
  .object({
    enabled: z.boolean(),
    drop: z.number().gt(0).lt(1),
    extra: z.array(z.number().gt(0).lt(1)).min(1).max(10),
    arlDays: z.number().positive(),
    referenceDays: z.number().positive(),
    warmupHours: z.number().nonnegative(),
    minRequests: z.number().int().positive(),
    minSessions: z.number().int().positive(),
    resolveMinutes: z.number().positive(),
    freezeHours: z.number().positive(),
    maxDispersion: z.number().min(1),
    drivers: z.number().int().min(0),
  })
  .partial()
  .strict();

interface ScopeSlice {
  /** reference: exponentially weighted covered requests per cluster id */
  ref: Record<string, number>;
  /** event time (ms) of traffic in the reference */
  refMs: number;
  /** closed sessions' moments (exponentially weighted like the reference): count, Σn, Σn², ΣY, ΣY², ΣnY */
  sess: [number, number, number, number, number, number];
  /** session ids were seen in this scope */
  sessioned: boolean;
  /** per bet: CUSUM statistic (nats, before φ scaling is applied per window) and its segment's requests */
  s: number[];
  n: number[];
  firing: boolean;
  onset: string | null;
  /** window index of the last alarm */
  lastAlarm: number | null;
  /** event time the current episode's reference freeze began */
  frozenSince: number | null;
}

export interface WeightedScoreState {
  version: 1;
  modelVersion: string;
  scopes: Record<string, ScopeSlice>;
}

const freshScope = (bets: number): ScopeSlice => ({
  ref: {},
  refMs: 0,
  sess: [0, 0, 0, 0, 0, 0],
  sessioned: false,
  s: new Array(bets).fill(0),
  n: new Array(bets).fill(0),
  firing: false,
  onset: null,
  lastAlarm: null,
  frozenSince: null,
});


/** The bet η for a fall to m0 − δ with the score's variance v (Kelly's approximation), kept where every factor stays positive. */
export function betFor(m0: number, delta: number, v: number): number {
  const eta = delta / Math.max(1e-4, v + delta * delta);
  return Math.min(eta, 0.5 / Math.max(1e-9, 1 - m0));
}

/** A window's log e-value against "mean score ≥ m0" with bet η: Σ_c n_c ln(1 + η(m0 − y_c)). */
export function windowLogE(counts: readonly { n: number; y: number }[], m0: number, eta: number): number {
  let s = 0;
  for (const c of counts) if (c.n > 0) s += c.n * Math.log(1 + eta * (m0 - c.y));
  return s;
}

export function weightedScoreRules(options: Partial<WeightedScoreOptions> = {}): RuleSet<WeightedScoreState> {
  const o: WeightedScoreOptions = { ...DEFAULT_WEIGHTED_SCORE, ...options };
  const G = o.extra.length;
  return {
    key: 'weighted_score',
    evaluate(prev, windows, ctx): RuleSetEvaluation<WeightedScoreState> {
      const notices: string[] = [];
      const findings: Finding[] = [];
      const trends: TrendRow[] = [];
      const rates = ctx.evalPassRates;
      const st: WeightedScoreState =
        prev && prev.modelVersion === ctx.modelVersion ? { ...prev, scopes: { ...prev.scopes } } : { version: 1, modelVersion: ctx.modelVersion, scopes: {} };
      if (!o.enabled || !rates || Object.keys(rates).length === 0) return { state: st, findings, trends, notices };
      const mine = windows.filter((w) => w.modelVersion === ctx.modelVersion);
      if (!mine.length) return { state: st, findings, trends, notices };

      const { start, end, t0, windowMs, widx, arlWindows } = windowClock(mine[0], o.arlDays);
      const decay = Math.exp(-windowMs / (o.referenceDays * 86400000));
      const resolveWindows = Math.max(1, Math.round((o.resolveMinutes * 60000) / windowMs));
      const agents = [...new Set(mine.map((w) => w.agent))].sort();
      const S = new Set([...Object.keys(st.scopes).filter((a) => a !== '*'), ...agents]).size + 1;
      const h = Math.log(arlWindows * S * G);
      const rate = (c: number): number | null => {
        const r = rates[c];
        return typeof r === 'number' && r >= 0 && r <= 1 ? r : null;
      };
      const evalScore = (() => {
        let a = 0;
        let z = 0;
        for (const [c, share] of Object.entries(ctx.evalShares)) {
          const r = rate(Number(c));
          if (r !== null) {
            a += share * r;
            z += share;
          }
        }
        return z > 0 ? a / z : NaN;
      })();

      for (const agent of ['*', ...agents]) {
        const ws: WindowCounts[] = agent === '*' ? mine : mine.filter((w) => w.agent === agent);
        const prevScope = st.scopes[agent] ?? freshScope(G);
        const sc: ScopeSlice = { ...prevScope, ref: { ...prevScope.ref }, sess: [...prevScope.sess] as ScopeSlice['sess'], s: prevScope.s.slice(), n: prevScope.n.slice() };
        st.scopes[agent] = sc;
        // this window's covered requests per cluster with a pass rate
        const now = new Map<number, number>();
        for (const w of ws) {
          for (const c of w.clusters) {
            if (rate(c.cluster) === null) continue;
            const k = c.requests - c.uncovered;
            if (k > 0) now.set(c.cluster, (now.get(c.cluster) ?? 0) + k);
          }
          if ((w.sessions ?? 0) > 0 || (w.closedSessions?.length ?? 0) > 0) sc.sessioned = true;
        }
        const N = [...now.values()].reduce((a, b) => a + b, 0);

        // the reference's mean score and variance
        let rn = 0;
        let ry = 0;
        let ry2 = 0;
        for (const [c, k] of Object.entries(sc.ref)) {
          const y = rate(Number(c));
          if (y === null) continue;
          rn += k;
          ry += k * y;
          ry2 += k * y * y;
        }
        const mu0 = rn > 0 ? ry / rn : NaN;
        const var0 = rn > 0 ? Math.max(0, ry2 / rn - mu0 * mu0) : 0;

        // closed sessions: their covered score sums (whole sessions; '' = requests without an id, each its own session: skipped)
        const bySession = new Map<string, { n: number; y: number }>();
        for (const w of ws) {
          for (const c of w.closedSessions ?? []) {
            const y = rate(c.cluster);
            if (c.uncovered || y === null || c.session === '') continue;
            const key = `${w.agent}\u0000${c.session}`;
            const x = bySession.get(key) ?? { n: 0, y: 0 };
            x.n += c.requests;
            x.y += c.requests * y;
            bySession.set(key, x);
          }
        }
        const phi = (() => {
          if (!sc.sessioned) return 1;
          const [cnt, sn, sn2, , sy2, sny] = sc.sess;
          if (cnt < o.minSessions || !(var0 > 0) || !(sn > 0)) return Number.NaN;
          const num = sy2 - 2 * mu0 * sny + mu0 * mu0 * sn2;
          const up = 1 + 2 * Math.sqrt(2 / cnt);
          return Math.min(o.maxDispersion, Math.max(1, (num / (var0 * sn)) * up));
        })();
        const ready = rn >= o.minRequests && sc.refMs >= o.warmupHours * 3600000 && Number.isFinite(mu0) && Number.isFinite(phi);

        let stat = 0;
        let alarm = false;
        let best = 0;
        const m0 = mu0 - o.drop;
        if (ready && m0 > 0 && var0 > 0) {
          const counts = [...now.entries()].map(([c, n]) => ({ n, y: rate(c)! }));
          for (let g = 0; g < G; g++) {
            const eta = betFor(m0, o.extra[g], var0);
            if (N > 0) {
              sc.s[g] += windowLogE(counts, m0, eta) / phi;
              sc.n[g] += N;
            }
            if (sc.s[g] <= 0) {
              sc.s[g] = 0;
              sc.n[g] = 0;
            }
            if (sc.s[g] > stat) {
              stat = sc.s[g];
              best = g;
            }
            if (sc.s[g] >= h && sc.n[g] >= o.minRequests) alarm = true;
          }
        }
        const segment = sc.n[best];
        if (alarm) {
          sc.s.fill(0);
          sc.n.fill(0);
          sc.lastAlarm = widx;
          if (!sc.firing) {
            sc.firing = true;
            sc.onset = start;
            sc.frozenSince = t0;
          }
        } else if (sc.firing && sc.lastAlarm !== null && widx - sc.lastAlarm >= resolveWindows && stat < h / 2) {
          sc.firing = false;
        }

        // reference update (frozen while firing, for at most freezeHours)
        const frozen = sc.firing && sc.frozenSince !== null && t0 - sc.frozenSince < o.freezeHours * 3600000;
        if (!frozen) {
          for (const k of Object.keys(sc.ref)) sc.ref[k] *= decay;
          for (const [c, k] of now) sc.ref[c] = (sc.ref[c] ?? 0) + k;
          if (N > 0) sc.refMs = Math.min(sc.refMs + windowMs, o.referenceDays * 86400000 * 10);
          for (let i = 0; i < 6; i++) sc.sess[i] *= decay;
          for (const x of bySession.values()) {
            sc.sess[0] += 1;
            sc.sess[1] += x.n;
            sc.sess[2] += x.n * x.n;
            sc.sess[3] += x.y;
            sc.sess[4] += x.y * x.y;
            sc.sess[5] += x.n * x.y;
          }
        }
        if (!ready) continue;

        // the window's score, and the drivers: clusters whose share rose, by their part in the fall
        const scoreNow = N > 0 ? [...now.entries()].reduce((a, [c, n]) => a + n * rate(c)!, 0) / N : NaN;
        const drivers: ClusterShare[] = [...new Set([...now.keys(), ...Object.keys(sc.ref).map(Number)])]
          .map((c) => {
            const shareNow = N > 0 ? (now.get(c) ?? 0) / N : 0;
            const shareReference = rn > 0 ? (prevScope.ref[c] ?? 0) / rn : 0;
            return { c, part: (shareNow - shareReference) * (rate(c)! - mu0), share: { cluster: c, label: ctx.labels?.[c], shareNow, shareReference, shareEval: ctx.evalShares[c] ?? 0 } };
          })
          .filter((x) => x.part < 0)
          .sort((a, b) => a.part - b.part)
          .slice(0, o.drivers)
          .map((x) => x.share);
        const fell = Number.isFinite(scoreNow) ? mu0 - scoreNow : 0;
        findings.push({
          rule: 'weighted_score',
          scope: { agent, cluster: null },
          firing: sc.firing,
          severity: 'warning',
          ...(sc.firing && sc.onset ? { onset: sc.onset } : {}),
          windowStart: start,
          windowEnd: end,
          statistic: stat,
          threshold: h,
          // the fall: established above `drop` while firing (lo), the window's observed fall (value)
          effect: { name: 'weighted_score_fall', value: fell, lo: sc.firing ? o.drop : 0, hi: Math.max(fell, sc.firing ? o.drop : 0) },
          summary: sc.firing
            ? `the eval score reweighted to the traffic of ${scopeName(agent)} fell by more than ${(100 * o.drop).toFixed(1)} points: ` +
              `${pct(scoreNow)} in this window against ${pct(mu0)} in its reference (eval set ${pct(evalScore)}); ` +
              `production moved toward clusters the eval run fails more` +
              (drivers.length ? ` (${drivers.map((d) => `cluster ${d.cluster}${d.label ? ` "${d.label}"` : ''}`).join(', ')})` : '') +
              `; evidence over ${segment} covered request(s)` +
              (phi > 1 ? `, design effect ${phi.toFixed(2)} for sessions` : '')
            : `the eval score reweighted to the traffic of ${scopeName(agent)}: ${Number.isFinite(scoreNow) ? pct(scoreNow) : 'no covered traffic'} in this window, ${pct(mu0)} in its reference`,
          clusters: drivers,
        });
        trends.push({
          windowStart: start,
          windowEnd: end,
          rule: 'weighted_score',
          agent,
          cluster: null,
          modelVersion: ctx.modelVersion,
          // for this rule: the window's reweighted score, the reference's, and the eval set's own score
          shareNow: Number.isFinite(scoreNow) ? scoreNow : 0,
          shareReference: mu0,
          shareEval: Number.isFinite(evalScore) ? evalScore : 0,
          escalationRate: 0,
          statistic: stat,
          threshold: h,
        });
      }
      return { state: st, findings, trends, notices };
    },
  };
}
