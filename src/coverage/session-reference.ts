/**
 * The fit-time session reference (pure): how closed sessions of a TESTED intent score on the
 * monitor's novel_sessions statistic, for the rule's fresh-deployment mode (docs/monitor.md,
 * "Novel topics, one session at a time", "Fresh deployment").
 *
 * The rule summarises a closed session by its distinct coverage cells (nearest cluster, depth
 * band) counted in six band groups (`sessionGroup`, capped at `SESSION_GROUP_CAPS`) and scores it
 * with the working likelihood ratio Λ = Π_g (q_g / p_g)^{n_g}, q the novel-topic profile and p a
 * reference's share of distinct cells per group. Its e-value is min(Λ, W) / C with C an upper
 * bound on the mean of min(Λ, W) over in-scope sessions. With production history, C is measured
 * on production's closed sessions. Before it exists, this module states C from the fit:
 *
 * Pseudo-sessions. A session of a tested intent is m DISTINCT phrasings of one intent (an exact
 * retry repeats its cell and adds nothing to the distinct cells). At fit time each eval case has
 * two calibration margins: scored against the others with its near-duplicates left out (a new
 * member of a phrasing family the eval set has, "seen") and scored with its whole phrasing family
 * left out (a phrasing the eval set did not write, "new"). A pseudo-session of region r (a tag, or
 * the cluster when the eval set has no tags: the calibration's regions) draws m distinct cases of
 * r without replacement, each read at its new margin with probability π and its seen margin
 * otherwise, in the cell (the case's cluster, the band of that margin). Phrasings of one family sit
 * close together, so drawing several members of one family carries the within-intent dependence
 * the eval set shows (a family far from the rest puts its members deep together).
 *
 * The bound. For region r, μ_r(m, π) = E[min(Λ, W)] over its pseudo-sessions (Monte Carlo with a
 * fixed seed). The production mean is Σ_r w_r μ_r(m, π) under production's intent mix w, session
 * lengths and share π of new phrasings, none of them known at fit time:
 *  - the intent mix: regions are the sampling units. The bound is the case-weighted mean over
 *    regions plus z_{1−δ} standard errors, whose variance adds to each region's own sampling
 *    variance (a delete-one-family jackknife: families are the independent units inside a region)
 *    the between-region variance (DerSimonian–Laird), as the calibrated rate's and heldOutDeep's
 *    intervals do: production weights the intents otherwise than the eval set does;
 *  - the session length: the bound is the largest over m = 1 … `maxPhrasings` distinct phrasings
 *    (production's mean over any mix of lengths is at most the largest per-length mean; sessions
 *    with more distinct phrasings than `maxPhrasings` are assumed to score no higher: their capped
 *    counts have saturated);
 *  - the share of new phrasings: the largest over π ∈ {0, ½, 1}.
 * What is assumed: production's phrasings of a tested intent are distributed between the eval's
 * seen and new phrasings (the bracket the calibration already assumes); a session's distinct
 * phrasings are like distinct eval phrasings of one intent drawn at random (a session whose user
 * phrases every turn in one odd way the eval set lacks is, to this statistic, a novel session); and
 * production's intents are spread like a random draw of intents around the eval's (the between-
 * region variance), each session on one intent (an intent switch inside a session mixes two).
 *
 * The session's size. A tested intent's session with more distinct phrasings reaches its rare deep
 * cells more often, so one bound for every length is the longest sessions' (on the benchmark's
 * fit 2.8 at m = 24 against 0.8 at m = 3–5: no power). The normaliser is therefore spread over the
 * number k of distinct cells the rule sees: a shape f(k) (the largest over m and π of the pooled
 * mean of min(Λ, W) among pseudo-sessions with k distinct cells, on draws of its own), and the
 * bound is on the mean of min(Λ, W) / f(k), the largest over m and π as above. A session's e-value
 * is min(Λ, W) / (bound · f(k)): its mean is at most 1 for every m, so for any mix of lengths.
 *
 * p: the pseudo-sessions' share of distinct cells per group (π = ½, m = 1 … 8 equally), so the
 * working ratio reads the fit's held-out profile counted in distinct cells, as the rule counts
 * production's. The cap W is the rule's largest (1000).
 */
import jstatPkg from 'jstat';
import { randomEffectsPool } from './calibrate.js';
import { BAND_LEVELS } from './bands.js';
import { rng } from './vec.js';

const { jStat } = jstatPkg as unknown as { jStat: { normal: { inv(p: number, mean: number, sd: number): number } } };

/** distinct cells counted per band group up to these caps (the monitor's novel_sessions reads them too) */
export const SESSION_GROUP_CAPS = [4, 4, 4, 4, 4, 6] as const;
export const SESSION_GROUPS = SESSION_GROUP_CAPS.length;

/** the first covered band */
const BELOW = BAND_LEVELS.indexOf('threshold') + 1;

/**
 * The band group of a cell: 0 the `deepBands` deepest bands, 1 the other uncovered bands, 2 … 5
 * each covered band (up to the in-scope margins' 10%, 20%, 40% levels, and above); -1 without a band.
 */
export function sessionGroup(band: number, uncovered: boolean, deepBands: number): number {
  if (!(band >= 0)) return -1;
  if (band < deepBands) return 0;
  if (uncovered || band < BELOW) return 1;
  return Math.min(SESSION_GROUPS - 1, 2 + band - BELOW);
}

/** a per-band profile summed over the groups */
export function groupShares(perBand: readonly number[], deepBands: number): number[] {
  const out = new Array<number>(SESSION_GROUPS).fill(0);
  perBand.forEach((v, b) => (out[sessionGroup(b, b < BELOW, deepBands)] += v));
  return out;
}

/** log Λ of distinct-cell counts per group (capped) */
export function logRatioOf(counts: readonly number[], logRatio: readonly number[]): number {
  let s = 0;
  for (let g = 0; g < SESSION_GROUPS; g++) s += Math.min(counts[g], SESSION_GROUP_CAPS[g]) * logRatio[g];
  return s;
}

export interface SessionReference {
  /** the groups' caps the bound was computed with (the rule uses the bound only when its caps are these) */
  caps: number[];
  deepBands: number;
  /** p: the share of distinct cells per group of the tested intents' pseudo-sessions */
  groupShares: number[];
  /** q: the novel-topic profile per group */
  novelShares: number[];
  /** the cap W on a session's working ratio */
  cap: number;
  /**
   * f(k), k = 1 … SESSION_MAX_CELLS distinct cells (more: the last): a session's normaliser is
   * bound · f(k), so its e-value is min(Λ, W) / (bound · f(k))
   */
  shape: number[];
  /** the upper bound on the mean of min(Λ, W) / f(k) over sessions of tested intents (largest over m and π) */
  bound: number;
  /** the bound's confidence: one-sided 1 − delta (normal, regions as units) */
  delta: number;
  /** per number of distinct phrasings m: the case-weighted mean and its upper bound, at the worst π */
  byPhrasings: { m: number; mean: number; upper: number }[];
  /** the mean of min(Λ, W) / f(k) over the novel pseudo-sessions (leave-region-out cases of one region, 2 … 6 of them) */
  novelMean: number;
  /** regions (sampling units) */
  regions: number;
  /** pseudo-sessions drawn per region, m and π */
  draws: number;
  method: string;
}

export interface SessionReferenceInput {
  /** margins of each case scored against the others (near-duplicates left out) */
  seen: ArrayLike<number>;
  /** margins of each case scored with its phrasing family left out */
  fresh: ArrayLike<number>;
  /** each case's cluster */
  cluster: ArrayLike<number>;
  family: ArrayLike<number>;
  region: ArrayLike<number>;
  regions: number;
  /** band of a margin */
  bandOf: (margin: number) => number;
  deepBands: number;
  /** the novel-topic profile per band */
  novel: readonly number[];
  /** the leave-region-out sample: case indices and their margins (the novel profile's cases) */
  novelSample: ArrayLike<number>;
  novelMargins: ArrayLike<number>;
  maxPhrasings: number;
  draws: number;
  delta: number;
  seed: number;
  /** the cap W on a session's working ratio */
  cap: number;
}

const PI = [0, 0.5, 1];

/** distinct cells the normaliser's shape tells apart (sessions with more share the last) */
export const SESSION_MAX_CELLS = 24;
/** draws a (k, m, π) cell of the shape needs to count */
const SHAPE_MIN = 100;

/**
 * m distinct members of `perm`, left in perm[0 … k) (k = min(m, its length)): a partial
 * Fisher–Yates shuffle in place, which draws a uniform k-subset whatever order perm is in, so the
 * same array serves every draw without being copied.
 */
function drawDistinct(perm: number[], m: number, r: () => number): number {
  const n = perm.length;
  const k = Math.min(m, n);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(r() * (n - i));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return k;
}

/** distinct cells per group of a pseudo-session: its phrasings' (cluster, band, uncovered) */
function sessionCounts(cluster: ArrayLike<number>, band: ArrayLike<number>, k: number, deepBands: number, seen: Stamps): number[] {
  const n = new Array<number>(SESSION_GROUPS).fill(0);
  const mark = ++seen.now;
  for (let a = 0; a < k; a++) {
    const key = cluster[a] * 16 + band[a];
    if (seen.at[key] === mark) continue;
    seen.at[key] = mark;
    const g = sessionGroup(band[a], band[a] < BELOW, deepBands);
    if (g >= 0) n[g]++;
  }
  return n;
}

/** cells already counted in the current pseudo-session: at[cluster · 16 + band] === now */
interface Stamps {
  at: Int32Array;
  now: number;
}

export function sessionReference(x: SessionReferenceInput): SessionReference {
  const n = x.seen.length;
  const by: number[][] = Array.from({ length: x.regions }, () => []);
  for (let i = 0; i < n; i++) by[x.region[i]].push(i);
  const use = by.map((_, r) => r).filter((r) => by[r].length > 0);
  let maxCluster = 0;
  for (let i = 0; i < n; i++) maxCluster = Math.max(maxCluster, x.cluster[i]);
  const stamps: Stamps = { at: new Int32Array((maxCluster + 1) * 16), now: 0 };
  /** each region's cases, shuffled in place by the draws */
  const perms = new Map<number, number[]>();
  const permOf = (reg: number) => {
    let p = perms.get(reg);
    if (!p) perms.set(reg, (p = by[reg].slice()));
    return p;
  };
  const bandSeen = Int8Array.from({ length: n }, (_, i) => x.bandOf(x.seen[i]));
  const bandNew = Int8Array.from({ length: n }, (_, i) => x.bandOf(x.fresh[i]));
  const cl = new Int32Array(Math.max(1, x.maxPhrasings, 8));
  const bd = new Int32Array(cl.length);
  /** one pseudo-session of m distinct phrasings of `rows`, each new with probability π: distinct cells per group */
  const draw = (perm: number[], m: number, pi: number, r: () => number) => {
    const k = drawDistinct(perm, m, r);
    for (let a = 0; a < k; a++) {
      const i = perm[a];
      cl[a] = x.cluster[i];
      bd[a] = r() < pi ? bandNew[i] : bandSeen[i];
    }
    return sessionCounts(cl, bd, k, x.deepBands, stamps);
  };

  // ---- p: distinct cells per group over pseudo-sessions (π = ½, m = 1 … 8) ----
  const rp = rng(x.seed);
  const gsum = new Array<number>(SESSION_GROUPS).fill(0);
  for (const reg of use)
    for (let m = 1; m <= 8; m++)
      for (let d = 0; d < Math.max(4, Math.ceil(x.draws / 8)); d++) {
        const c = draw(permOf(reg), m, 0.5, rp);
        for (let g = 0; g < SESSION_GROUPS; g++) gsum[g] += c[g];
      }
  const cells = gsum.reduce((a, b) => a + b, 0);
  const p = gsum.map((v) => (v + 0.5) / (cells + 0.5 * SESSION_GROUPS));
  const q = groupShares(x.novel, x.deepBands);
  const logRatio = q.map((v, g) => Math.log(Math.max(v, 1e-9) / p[g]));
  const K = SESSION_MAX_CELLS;
  const kOf = (c: number[]) => Math.max(1, Math.min(K, c.reduce((a, b) => a + b, 0)));
  // the shape f(k): the largest over m and π of the mean working ratio (capped) of pseudo-sessions
  // with k distinct cells, pooled over regions (by cases), on draws of its own; (k, m, π) with fewer
  // than SHAPE_MIN draws are left out (the bound below is what makes the e-value valid; f only
  // spreads it over sizes of session)
  const shapeDraws: { k: number; m: number; pi: number; l: number; w: number }[] = [];
  for (const reg of use)
    for (let m = 1; m <= x.maxPhrasings; m++)
      for (let pj = 0; pj < PI.length; pj++)
        for (let d = 0; d < Math.max(4, Math.ceil(x.draws / 4)); d++) {
          const c = draw(permOf(reg), m, PI[pj], rp);
          shapeDraws.push({ k: kOf(c), m, pi: pj, l: logRatioOf(c, logRatio), w: by[reg].length / n });
        }
  const shapeFor = (W: number): number[] => {
    const key = (k: number, m: number, pj: number) => (k * (x.maxPhrasings + 1) + m) * PI.length + pj;
    const s = new Map<number, [number, number, number]>();
    for (const d of shapeDraws) {
      const e = s.get(key(d.k, d.m, d.pi)) ?? [0, 0, 0];
      e[0] += d.w * Math.min(W, Math.exp(d.l));
      e[1] += d.w;
      e[2] += 1;
      s.set(key(d.k, d.m, d.pi), e);
    }
    const f = new Array<number>(K + 1).fill(0);
    for (const [kk, e] of s) {
      if (e[2] < SHAPE_MIN) continue;
      const k = Math.floor(Math.floor(kk / PI.length) / (x.maxPhrasings + 1));
      f[k] = Math.max(f[k], e[0] / e[1]);
    }
    // k without enough draws: the nearest smaller k's; never below 1/W (a floor on the normaliser)
    for (let k = 1; k <= K; k++) if (!(f[k] > 0)) f[k] = f[k - 1] || 1;
    return f.map((v, k) => (k === 0 ? 0 : Math.max(v, 1 / W)));
  };

  // ---- the pseudo-sessions' log ratios per region, m, π (the same draws for every cap W) ----
  const fams = use.map((reg) => [...new Set(by[reg].map((i) => x.family[i]))]);
  const rs = rng(x.seed + 1);
  /** [m − 1][π] → log Λ and distinct cells k of each draw */
  const simulate = (perm: number[]): { l: Float64Array; k: Uint8Array }[][] =>
    Array.from({ length: x.maxPhrasings }, (_, mi) =>
      PI.map((pi) => {
        const l = new Float64Array(x.draws);
        const k = new Uint8Array(x.draws);
        for (let d = 0; d < x.draws; d++) {
          const c = draw(perm, mi + 1, pi, rs);
          l[d] = logRatioOf(c, logRatio);
          k[d] = kOf(c);
        }
        return { l, k };
      }),
    );
  const whole = use.map((reg) => simulate(by[reg].slice()));
  // delete-one-family: each region's sampling variance, families as the independent units
  const jack = use.map((reg, j) => (fams[j].length >= 2 ? fams[j].map((f) => simulate(by[reg].filter((i) => x.family[i] !== f))) : []));

  // ---- novel pseudo-sessions: leave-region-out cases of one left-out region, 2 … 6 distinct phrasings ----
  const novelBy = new Map<number, number[]>();
  for (let s = 0; s < x.novelSample.length; s++) {
    const reg = x.region[x.novelSample[s]];
    const a = novelBy.get(reg) ?? [];
    a.push(s);
    novelBy.set(reg, a);
  }
  const novelLogs: { l: number; k: number }[] = [];
  const rn = rng(x.seed + 2);
  for (const rows of novelBy.values())
    for (let m = 2; m <= Math.min(6, rows.length); m++)
      for (let d = 0; d < 20; d++) {
        const k = drawDistinct(rows, m, rn);
        for (let a = 0; a < k; a++) {
          cl[a] = x.cluster[x.novelSample[rows[a]]];
          bd[a] = x.bandOf(x.novelMargins[rows[a]]);
        }
        const c = sessionCounts(cl, bd, k, x.deepBands, stamps);
        novelLogs.push({ l: logRatioOf(c, logRatio), k: kOf(c) });
      }

  const z = jStat.normal.inv(1 - x.delta, 0, 1);
  const meanCapped = (d: { l: Float64Array; k: Uint8Array }, W: number, f: number[]) => {
    let s = 0;
    const lw = Math.log(W);
    for (let i = 0; i < d.l.length; i++) s += (d.l[i] >= lw ? W : Math.exp(d.l[i])) / f[d.k[i]];
    return s / d.l.length;
  };
  const boundFor = (W: number, f: number[]) => {
    let bound = 0;
    const byM: { m: number; mean: number; upper: number }[] = [];
    for (let mi = 0; mi < x.maxPhrasings; mi++) {
      let worst = { m: mi + 1, mean: 0, upper: -Infinity };
      for (let pj = 0; pj < PI.length; pj++) {
        const y = whole.map((w) => meanCapped(w[mi][pj], W, f));
        // each region's sampling variance: the jackknife over its families (regions of one family: the median of the others')
        const v = use.map((_, j) => {
          const J = jack[j];
          if (J.length < 2) return NaN;
          const t = J.map((d) => meanCapped(d[mi][pj], W, f));
          const tm = t.reduce((a, b) => a + b, 0) / t.length;
          return ((t.length - 1) / t.length) * t.reduce((a, b) => a + (b - tm) ** 2, 0);
        });
        const known = v.filter((a) => Number.isFinite(a)).sort((a, b) => a - b);
        const med = known.length ? known[Math.floor(known.length / 2)] : (W * W) / (4 * f[1] * f[1]);
        const vv = v.map((a) => Math.max(1e-12, Number.isFinite(a) ? a : med));
        const { mean, variance } = randomEffectsPool(use.map((reg) => by[reg].length / n), y, vv);
        const upper = mean + z * Math.sqrt(variance);
        if (upper > worst.upper) worst = { m: mi + 1, mean, upper };
      }
      byM.push(worst);
      bound = Math.max(bound, worst.upper);
    }
    return { bound, byM };
  };
  const W = x.cap;
  const f = shapeFor(W);
  const { bound, byM } = boundFor(W, f);
  // the novel pseudo-sessions' mean e-value before the bound (a diagnostic: how far novel sessions score above 1)
  const novelMean = novelLogs.length ? novelLogs.reduce((a, d) => a + Math.min(W, Math.exp(d.l)) / f[d.k], 0) / novelLogs.length : 0;
  const b = { W, f, bound, byM, novelMean };
  return {
    caps: [...SESSION_GROUP_CAPS],
    deepBands: x.deepBands,
    groupShares: p,
    novelShares: q,
    cap: b.W,
    shape: b.f.slice(1),
    bound: b.bound,
    delta: x.delta,
    byPhrasings: b.byM,
    novelMean: b.novelMean,
    regions: use.length,
    draws: x.draws,
    method: '',
  };
}

/** the fit's settings of the session reference */
export const SESSION_REFERENCE = { maxPhrasings: 24, draws: 200, delta: 0.01, cap: 1000 } as const;

export function sessionReferenceMethod(s: SessionReference, region: 'tag' | 'cluster'): string {
  return (
    `pseudo-sessions of a tested intent: m = 1…${s.byPhrasings.length} distinct eval phrasings of one ${region} drawn without replacement, ` +
    `each read at its margin scored with its phrasing family left out (probability π) or with its near-duplicates left out, π ∈ {0, ½, 1}; ` +
    `distinct cells (cluster, band) per band group, capped at ${s.caps.join(', ')}; Λ = Π (q_g/p_g)^n_g with p the pseudo-sessions' share of distinct cells per group; ` +
    `bound: the largest over m and π of the ${region}-weighted mean of min(Λ, ${s.cap}) plus z(1 − ${s.delta}) standard errors ` +
    `(each ${region}'s delete-one-family jackknife variance plus the between-${region} variance, DerSimonian–Laird), ${s.draws} draws per ${region}, m and π`
  );
}
