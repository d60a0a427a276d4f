/**
 * The eval score reweighted to production traffic (post-stratification), with a posterior interval.
 * Pure: counts in, numbers out.
 *
 * Target: θ = Σ_c w_c · p_c over the covered production traffic, where w_c is cluster c's share of
 * the covered requests and p_c the pass rate of the agent on production requests of cluster c.
 * Plain post-stratification assumes that within a cluster the eval cases' pass rate stands for
 * production's. It breaks when production's requests in a cluster are harder or easier than the
 * eval's there (a different mix of sub-topics inside the cluster, longer conversations, other
 * phrasing). The within-cluster term (`withinCluster: 'tilt'`, tiltFit below) addresses the first
 * for sub-topics the eval cases' tags separate: it assumes production leans toward the failing
 * sub-groups inside a cluster as much as it leans toward failing clusters (fitted across
 * clusters on each cluster's deepest-depth-band requests, `deepCovered`, where the traffic the eval
 * does not represent is scarcest), corrects the estimate by λ · Σ_c w_c τ_c², and adds that term's
 * uncertainty (slope, the slope's shrinkage bias, model form, sub-groups' scatter) to each draw.
 * What no tag shows: on Banking77 the covered requests of intents with no eval case in their
 * cluster (held-out intents, neighbours' queries; 16–17% of covered traffic) lean on failure too
 * and leave 1.5–2 points of bias when production leans (test/bench/estimate.ts, `decomposition`).
 * The unrepresented term (unrepresentedShare) sizes their share from the dilution of the lean fitted
 * on the shallower bands and carries û · |λ| · V_G in the interval as an error of its own (their
 * pass rates taken to be those of topics drawn from the whole eval set, tilted by the same λ); it
 * does not move the point estimate (as a correction it cost accuracy where production does not lean).
 *
 * Uncertainty, propagated jointly by drawing from the posterior (`draws` times):
 *  - p_c ~ Beta(s_c + m·μ_g, n_c − s_c + m·(1 − μ_g)): the cluster's eval results (s_c passes of
 *    n_c, or the sum of scores in [0, 1]) shrunk toward μ_g, the pass rate of its group (the
 *    clusters sharing its most frequent eval tag; the whole set when it has no tag or is its tag's
 *    only cluster), smoothed toward the whole set with GROUP_PRIOR_CASES pseudo-cases. m = `priorCases`
 *    (default 1): a cluster with n cases keeps n/(n + 1) of its own rate. Fixed and small on
 *    purpose: an empirical-Bayes m (beta-binomial marginal likelihood) chose 5–10 pseudo-cases when
 *    the cluster rates were bimodal (most clusters fine, a few much worse), pulled the bad clusters
 *    up, and its 90% interval held the truth in 67% of simulated worlds where production leans
 *    toward them; m = 1: 84% with 20 eval cases per cluster, 90% with 40, 92% with 80 (the Beta
 *    posterior of a cluster whose ~20 cases nearly all passed is a little too sure). A Jeffreys
 *    floor on the prior's parameters raised the first to 88% but moved the Banking77 estimate 1.5
 *    points down (clusters whose cases all passed pulled toward ½), so it is not used.
 *  - w ~ Dirichlet(N_c / deff): the production shares (a Bayesian bootstrap of the requests).
 *    deff ≥ 1 is the design effect of sessions: requests of one session are not independent, so
 *    the effective sample is between the sessions and the requests; deff = requests / sessions
 *    treats a session as one draw (conservative).
 * The interval is the equal-tailed `level` interval of the drawn θ; the point estimate is the
 * posterior mean Σ w_c · E[p_c] (the shares observed).
 */
import gammaRandom from '@stdlib/random-base-gamma';

/** standard normal draws (Box–Muller) from a seeded uniform stream of its own */
function normalFactory(o: { seed: number }): () => number {
  const u = (gammaRandom.factory({ seed: o.seed }).PRNG as unknown as { normalized: () => number }).normalized;
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

export interface ClusterCounts {
  cluster: number;
  label: string;
  /** shrinkage group (e.g. the cluster's most frequent eval tag); '' = the whole set */
  group: string;
  /** eval cases of this cluster with a result */
  evalCases: number;
  /** their passes (or the sum of their scores in [0, 1]) */
  evalPassed: number;
  /** covered production requests assigned to this cluster */
  covered: number;
  /** uncovered production requests whose nearest cluster this is */
  uncovered: number;
  /**
   * the cluster's eval results split by sub-group (the case's first tag): cases and passes (or sum
   * of scores) per sub-group. Used for the within-cluster heterogeneity τ_c (the assumption's error
   * term); absent or one sub-group: τ_c = 0
   */
  subgroups?: { n: number; s: number }[];
  /**
   * covered production requests of this cluster in the deepest coverage depth band (requests.coverage_band:
   * the requests most like the eval cases); absent: the model has no bands, and the tilt is fitted on `covered`
   */
  deepCovered?: number;
}

export interface EstimateOptions {
  /** interval level, e.g. 0.9 */
  level: number;
  /** posterior draws */
  draws: number;
  seed: number;
  /** design effect of the production sample (≥ 1); requests / sessions is the conservative choice */
  designEffect: number;
  /** prior strength m: pseudo-cases at the group's pass rate added to each cluster */
  priorCases: number;
  /**
   * the within-cluster term (see withinClusterFit): 'tilt' corrects the estimate for production's
   * lean toward the failing sub-groups inside clusters, as far as it leans toward failing clusters,
   * and widens the interval for its uncertainty; 'off' is plain post-stratification, sampling error only
   */
  withinCluster: 'tilt' | 'off';
}

export const DEFAULT_ESTIMATE: EstimateOptions = { level: 0.9, draws: 4000, seed: 1, designEffect: 1, priorCases: 1, withinCluster: 'tilt' };

/** pseudo-cases with which a group's pass rate is smoothed toward the whole set's */
export const GROUP_PRIOR_CASES = 10;

export type Interval = [number, number];

export interface ClusterEstimate extends ClusterCounts {
  /** share of the covered production requests */
  prodShare: number;
  /** share of the eval results */
  evalShare: number;
  /** the cluster's raw eval pass rate (null: no results) */
  evalPassRate: number | null;
  /** posterior mean of the pass rate (shrunk toward the group) */
  passRate: number;
  /** its posterior interval */
  passRateInterval: Interval;
  /** (prodShare − evalShare) × (passRate − raw score): this cluster's part of the gap due to the mix */
  contribution: number;
  /** E[p(1 − p)]: the within-cluster variance the allocation uses */
  variance: number;
  /** τ_c: the spread of the true pass rates of the cluster's sub-groups (method of moments; 0 without sub-groups) */
  heterogeneity: number;
}

export interface Estimate {
  level: number;
  /** eval results in all, and their mean (the score the eval run reports) */
  evalCases: number;
  raw: number;
  /** production requests, covered ones, and the covered share */
  requests: number;
  covered: number;
  coveredShare: number;
  /** the reweighted score on covered traffic, and its interval (null when no covered traffic) */
  estimate: number | null;
  interval: Interval | null;
  /** the interval of plain post-stratification: sampling error alone (eval results and production shares) */
  samplingInterval: Interval | null;
  /** the within-cluster term: its fit, and its part in the estimate (λ · Σ_c w_c τ_c²); null when off or no covered traffic */
  withinCluster: WithinClusterFit | null;
  /** estimate − raw */
  gap: number | null;
  /** the part of the gap from shrinking small clusters (the rest is Σ contribution) */
  shrinkage: number | null;
  /** the untested share, and what it implies for the score on ALL traffic */
  untested: number;
  bounds: {
    /** the uncovered traffic all passes / all fails / passes like its nearest cluster */
    allPass: { estimate: number; interval: Interval };
    allFail: { estimate: number; interval: Interval };
    nearest: { estimate: number; interval: Interval };
  } | null;
  /** prior strength m (pseudo-cases) */
  priorCases: number;
  designEffect: number;
  clusters: ClusterEstimate[];
}

export interface WithinClusterFit {
  /** λ: the slope of log(production share / eval share) on the pass rate across clusters, shrunk (< 0: production leans on failing clusters) */
  slope: number;
  /** its standard error, and the unshrunk slope */
  slopeSe: number;
  rawSlope: number;
  /** σ_ε: the clusters' scatter around that line beyond the counts' own noise */
  residualSd: number;
  /** clusters in the fit */
  clusters: number;
  /** the estimate's correction: λ · Σ_c w_c τ_c² */
  correction: number;
  /**
   * the shrinkage's bias: |unshrunk − shrunk slope| · Σ_c w_c τ_c², counted in the interval as an error of its own
   * (the slope's draws are centred on the shrunk slope)
   */
  shrinkageBias: number;
  /** the production counts the slope is fitted on: each cluster's requests in the deepest depth band, or all its covered requests (a model without bands) */
  fittedOn: 'deepest band' | 'covered';
  /**
   * the unrepresented term (fitted on the deepest band only; null otherwise): covered requests of topics without an
   * eval case in their cluster, sized from how much the lean fitted on the shallower bands is diluted, and carried in
   * the interval as an error of its own (see unrepresentedTerm)
   */
  unrepresented: UnrepresentedTerm | null;
}

export interface UnrepresentedTerm {
  /** the slope of the same fit on each cluster's covered requests outside the deepest band (unshrunk) */
  shallowSlope: number;
  /** û: the estimated share of covered requests the eval does not represent, (S/N) · clamp(1 − shallowSlope / deep slope, 0, 1) */
  share: number;
  /** √V_G: the spread of the true pass rates of all sub-groups of the eval set (method of moments, all clusters' sub-groups pooled) */
  topicSpread: number;
  /** the error's standard deviation at the fitted slope: û · |λ| · V_G */
  sd: number;
}

/**
 * The production/eval density ratio r as a tilt on the pass rate: log r = α + λ·p + ε, ε of sd σ_ε,
 * fitted across clusters (where both shares are seen) by weighted least squares of
 * log(W_c / E_c) on the cluster's eval pass rate. W_c counts the cluster's production requests in the
 * deepest coverage depth band when `deep` (else all its covered requests): a cluster's covered traffic
 * also holds requests the eval cases do not represent (topics without an eval case there, neighbours'
 * queries), whose volume does not follow the cluster's eval pass rate, so they dilute the slope toward 0
 * (by their share u: d log W_c / d p_c ≈ (1 − u) λ); they sit shallower than represented requests, and
 * the deepest band holds fewer of them (Banking77: 5–7% of it against 16–17% of covered requests).
 * Assumed: the share of a cluster's represented requests that reaches the deepest band does not depend
 * on its pass rate (it only shifts α). Weights 1/(1/W_c + 1/E_c) (the log-ratio's
 * counting noise), the slope corrected for the pass rates' own sampling noise (errors in variables)
 * and shrunk toward 0 by its standard error (positive-part James–Stein: a slope within noise of 0
 * corrects nothing). Assumed to hold inside clusters too: the sub-groups (tags) of a cluster get
 * production weight ∝ eval weight × e^{λ p_t + ε_t}, so production's pass rate in cluster c is, to
 * first order, p_c + λ τ_c² + Σ_t π_t ε_t (p_t − p_c).
 * `boot` (Exp(1) weights per cluster) gives a Bayesian-bootstrap replicate of the raw slope.
 */
function tiltFit(
  cs: readonly ClusterCounts[],
  designEffect: number,
  deep: boolean,
  boot?: Float64Array,
): { slope: number; naive: number; se: number; resVar: number; k: number } | null {
  const W0 = (c: ClusterCounts) => (deep ? (c.deepCovered ?? 0) : c.covered);
  const nCov = cs.reduce((a, c) => a + W0(c), 0) / designEffect;
  const nEval = cs.reduce((a, c) => a + c.evalCases, 0);
  const use = cs.map((c, i) => [c, i] as const).filter(([c]) => c.evalCases > 0);
  const K = use.length;
  if (K < 3 || !(nCov > 0)) return null;
  let sw = 0;
  let sx = 0;
  let sy = 0;
  const xs: number[] = [];
  const ys: number[] = [];
  const ws: number[] = [];
  const nvx: number[] = [];
  const nvy: number[] = [];
  for (const [c, i] of use) {
    const W = W0(c) / designEffect + 0.5;
    const E = c.evalCases + 0.5;
    const y = Math.log(W / (nCov + 0.5 * K)) - Math.log(E / (nEval + 0.5 * K));
    const x = c.evalPassed / c.evalCases;
    const vy = 1 / W + 1 / E;
    const xs0 = (c.evalPassed + 0.5) / (c.evalCases + 1);
    const w = (1 / vy) * (boot ? boot[i] : 1);
    xs.push(x);
    ys.push(y);
    ws.push(w);
    nvy.push(vy);
    nvx.push((xs0 * (1 - xs0)) / c.evalCases);
    sw += w;
    sx += w * x;
    sy += w * y;
  }
  const mx = sx / sw;
  const my = sy / sw;
  let sxx = 0;
  let sxy = 0;
  let noiseX = 0;
  for (let j = 0; j < K; j++) {
    sxx += ws[j] * (xs[j] - mx) ** 2;
    sxy += ws[j] * (xs[j] - mx) * (ys[j] - my);
    noiseX += ws[j] * nvx[j];
  }
  if (!(sxx > 0)) return null;
  const den = Math.max(0.5 * sxx, sxx - noiseX);
  const slope = sxy / den;
  let rss = 0;
  let noiseY = 0;
  for (let j = 0; j < K; j++) {
    rss += ws[j] * (ys[j] - my - slope * (xs[j] - mx)) ** 2;
    noiseY += ws[j] * nvy[j];
  }
  const resVar = Math.max(0, (rss - noiseY - slope * slope * noiseX) / sw);
  // the slope's standard error: the residual scatter (its own plus the counts') over the spread of the pass rates
  const se = Math.sqrt(rss / Math.max(1, K - 2) / den);
  return { slope, naive: sxy / sxx, se: Number.isFinite(se) ? se : Infinity, resVar, k: K };
}

/**
 * The unrepresented share of covered traffic from the dilution of the lean in the shallower bands. A cluster's covered
 * requests outside the deepest band (S_c) hold most of the requests the eval does not represent (Banking77: 70–79% of
 * them, against 22–23% of the represented ones); their volume does not follow the cluster's eval pass rate, so the
 * slope fitted on S_c is the deepest band's diluted by their share u_S of S: λ_S ≈ (1 − u_S) λ_D (assumed: the
 * deepest band's own unrepresented share is small beside u_S, and the represented requests' lean is the same in both).
 * û = (S/N) · clamp(1 − λ_S / λ_D, 0, 1). It is only informative when production leans (λ_D away from 0), and then
 * only what it is needed for: the error it sizes is proportional to λ.
 */
function unrepresentedShare(deepSlope: number, shallowSlope: number, shallowShare: number): number {
  if (deepSlope === 0) return 0;
  return shallowShare * Math.min(1, Math.max(0, 1 - shallowSlope / deepSlope));
}

/**
 * A cluster's sub-groups as (share π_t, pass rate) with each rate shrunk toward the cluster's by the
 * empirical-Bayes factor τ² / (τ² + its sampling variance), so that sampling noise is not read as spread.
 */
function shrunkSubgroups(groups: readonly { n: number; s: number }[] | undefined, tau2: number): { pi: number; r: number }[] {
  const gs = (groups ?? []).filter((x) => x.n > 0);
  if (gs.length < 2 || !(tau2 > 0)) return [];
  const n = gs.reduce((a, x) => a + x.n, 0);
  const p = gs.reduce((a, x) => a + x.s, 0) / n;
  return gs.map((x) => {
    const r = x.s / x.n;
    const noise = Math.max(1e-6, (p * (1 - p)) / x.n);
    return { pi: x.n / n, r: p + (tau2 / (tau2 + noise)) * (r - p) };
  });
}

/** The shift of a cluster's pass rate when its sub-groups are weighted by e^{λ r_t}: Σ π e^{λr} r / Σ π e^{λr} − Σ π r. */
function tiltShift(subs: readonly { pi: number; r: number }[], lambda: number): number {
  if (!subs.length || lambda === 0) return 0;
  let a = 0;
  let b = 0;
  let m = 0;
  for (const x of subs) {
    const w = x.pi * Math.exp(lambda * x.r);
    a += w * x.r;
    b += w;
    m += x.pi * x.r;
  }
  return a / b - m;
}

/** Σ_t π_t² ((p_t − p_c)² less its sampling noise): the within-cluster random term's variance per unit σ_ε² */
function subgroupSpread(groups: readonly { n: number; s: number }[] | undefined): number {
  const gs = (groups ?? []).filter((x) => x.n > 0);
  if (gs.length < 2) return 0;
  const n = gs.reduce((a, x) => a + x.n, 0);
  const p = gs.reduce((a, x) => a + x.s, 0) / n;
  let v = 0;
  for (const x of gs) {
    const r = x.s / x.n;
    const pi = x.n / n;
    v += pi * pi * Math.max(0, (r - p) ** 2 - (r * (1 - r)) / Math.max(1, x.n - 1));
  }
  return v;
}

/**
 * τ: the spread (standard deviation, weighted by cases) of the true pass rates of a cluster's
 * sub-groups, by the method of moments: the between-group sum of squares less what binomial noise
 * alone gives it, (G − 1) times the pooled within-group variance. Floored at 0. A pass/fail result
 * per case cannot show heterogeneity without groups: one sub-group gives 0.
 */
export function heterogeneity(groups: readonly { n: number; s: number }[] | undefined): number {
  const gs = (groups ?? []).filter((x) => x.n > 0);
  if (gs.length < 2) return 0;
  const n = gs.reduce((a, x) => a + x.n, 0);
  const p = gs.reduce((a, x) => a + x.s, 0) / n;
  let between = 0;
  let within = 0;
  for (const x of gs) {
    const r = x.s / x.n;
    between += x.n * (r - p) * (r - p);
    // each result's variance around its group's rate: r(1 − r) for pass/fail (an upper bound for scores)
    within += x.n * r * (1 - r);
  }
  const w = n > gs.length ? within / (n - gs.length) : p * (1 - p);
  return Math.sqrt(Math.max(0, (between - (gs.length - 1) * w) / n));
}

/**
 * The prior mean of each cluster: the pass rate of its group (when the group has two clusters or
 * more), smoothed toward the whole set's Jeffreys-smoothed rate with GROUP_PRIOR_CASES pseudo-cases;
 * the whole set's for clusters without a group.
 */
export function priorMeans(cs: readonly ClusterCounts[]): number[] {
  let n = 0;
  let s = 0;
  const g = new Map<string, { n: number; s: number; k: number }>();
  for (const c of cs) {
    n += c.evalCases;
    s += c.evalPassed;
    const x = g.get(c.group) ?? { n: 0, s: 0, k: 0 };
    x.n += c.evalCases;
    x.s += c.evalPassed;
    x.k++;
    g.set(c.group, x);
  }
  // the whole set's rate (Jeffreys-smoothed: never exactly 0 or 1)
  const all = (s + 0.5) / (n + 1);
  return cs.map((c) => {
    const x = g.get(c.group)!;
    if (c.group === '' || x.k < 2) return all;
    return (x.s + GROUP_PRIOR_CASES * all) / (x.n + GROUP_PRIOR_CASES);
  });
}

function quantileOf(sorted: Float64Array, q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function intervalOf(x: Float64Array, level: number): Interval {
  const s = Float64Array.from(x).sort();
  return [quantileOf(s, (1 - level) / 2), quantileOf(s, (1 + level) / 2)];
}

function validate(cs: readonly ClusterCounts[], o: EstimateOptions): void {
  if (!(o.level > 0 && o.level < 1)) throw new RangeError('level must be in (0, 1)');
  if (!(Number.isInteger(o.draws) && o.draws >= 100)) throw new RangeError('draws must be an integer ≥ 100');
  if (!(o.designEffect >= 1)) throw new RangeError('designEffect must be ≥ 1');
  if (!(o.priorCases > 0)) throw new RangeError('priorCases must be > 0');
  if (o.withinCluster !== 'tilt' && o.withinCluster !== 'off') throw new RangeError("withinCluster must be 'tilt' or 'off'");
  for (const c of cs) {
    if (!(c.evalCases >= 0 && c.evalPassed >= 0 && c.evalPassed <= c.evalCases + 1e-9)) {
      throw new RangeError(`cluster ${c.cluster}: passes must be between 0 and the eval cases`);
    }
    if (!(c.covered >= 0 && c.uncovered >= 0)) throw new RangeError(`cluster ${c.cluster}: negative request counts`);
  }
}

/** The posterior of every cluster's pass rate: Beta(a_c, b_c). Shared by the estimate and the allocation. */
export interface PassRatePosterior {
  mu: number[];
  a: number[];
  b: number[];
  /** posterior mean and E[p(1 − p)] per cluster */
  mean: number[];
  variance: number[];
}

export function passRatePosterior(cs: readonly ClusterCounts[], priorCases = DEFAULT_ESTIMATE.priorCases): PassRatePosterior {
  const mu = priorMeans(cs);
  const a = cs.map((c, i) => c.evalPassed + priorCases * mu[i]);
  const b = cs.map((c, i) => c.evalCases - c.evalPassed + priorCases * (1 - mu[i]));
  return {
    mu,
    a,
    b,
    mean: a.map((x, i) => x / (x + b[i])),
    variance: a.map((x, i) => (x * b[i]) / ((x + b[i]) * (x + b[i] + 1))),
  };
}

export function estimateScore(cs: readonly ClusterCounts[], opts: Partial<EstimateOptions> = {}): Estimate {
  // an option given as undefined keeps its default
  const o = { ...DEFAULT_ESTIMATE, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as EstimateOptions;
  validate(cs, o);
  const k = cs.length;
  const nEval = cs.reduce((s, c) => s + c.evalCases, 0);
  const sEval = cs.reduce((s, c) => s + c.evalPassed, 0);
  const nCov = cs.reduce((s, c) => s + c.covered, 0);
  const nUnc = cs.reduce((s, c) => s + c.uncovered, 0);
  const raw = nEval ? sEval / nEval : NaN;
  const post = passRatePosterior(cs, o.priorCases);

  const g = gammaRandom.factory({ seed: o.seed });
  const norm = normalFactory({ seed: o.seed + 7919 });
  const tau = cs.map((c) => heterogeneity(c.subgroups));
  const tau2 = tau.map((t) => t * t);
  const spread = cs.map((c) => subgroupSpread(c.subgroups));
  const subs = cs.map((c, i) => shrunkSubgroups(c.subgroups, tau2[i]));
  // the lean is fitted on each cluster's deepest-band requests when every cluster with traffic has them (a model with bands)
  const deep = cs.some((c) => (c.deepCovered ?? 0) > 0) && cs.every((c) => c.covered === 0 || c.deepCovered !== undefined);
  const tilt = o.withinCluster === 'tilt' && tau.some((t) => t > 0) ? tiltFit(cs, o.designEffect, deep) : null;
  // the unrepresented term (unrepresentedShare): the same fit on each cluster's covered requests outside the deepest band
  const shallowCs = deep ? cs.map((c) => ({ ...c, covered: c.covered - Math.min(c.covered, c.deepCovered ?? 0) })) : [];
  const shallow = tilt && deep ? tiltFit(shallowCs, o.designEffect, false) : null;
  const nDeep = cs.reduce((s, c) => s + Math.min(c.covered, c.deepCovered ?? 0), 0);
  const shallowShare = nCov > 0 ? (nCov - nDeep) / nCov : 0;
  // V_G: the spread of the true pass rates of all the eval set's sub-groups (each cluster's sub-groups, pooled)
  const vG = shallow ? heterogeneity(cs.flatMap((c) => c.subgroups ?? [])) ** 2 : 0;
  // the slope shrunk toward 0 by its standard error (positive part)
  const shrink = tilt ? Math.max(0, 1 - (tilt.se * tilt.se) / Math.max(1e-12, tilt.slope * tilt.slope)) : 0;
  const lambda = tilt ? tilt.slope * shrink : 0;
  const sigmaEps = tilt ? Math.sqrt(tilt.resVar) : 0;
  const eivGap = tilt ? Math.abs(tilt.slope - tilt.naive) : 0;
  // the shrinkage's own bias: the draws' slopes are centred on the shrunk slope, so the distance to the unshrunk
  // one (which the bootstrap spreads around) is a bias the interval carries as an error of its own (bias-aware)
  const shrinkGap = tilt ? Math.abs(tilt.slope - lambda) : 0;
  const bootW = new Float64Array(k);
  const theta = new Float64Array(o.draws);
  const thetaSampling = new Float64Array(o.draws);
  const thetaNear = new Float64Array(o.draws);
  const covShare = new Float64Array(o.draws);
  const pDraw = new Float64Array(k);
  const pDraws = cs.map(() => new Float64Array(o.draws));
  const de = o.designEffect;
  for (let d = 0; d < o.draws; d++) {
    for (let i = 0; i < k; i++) {
      const x = g(post.a[i], 1);
      const y = g(post.b[i], 1);
      pDraw[i] = x + y > 0 ? x / (x + y) : post.mu[i];
      pDraws[i][d] = pDraw[i];
    }
    // Dirichlet(N_c / deff) shares of covered traffic, and of the uncovered traffic's nearest clusters
    let t = 0;
    let z = 0;
    let tb = 0;
    let tt = 0;
    let tm = 0;
    let tv = 0;
    let tn = 0;
    let zn = 0;
    // this draw's slope: a Bayesian bootstrap of the clusters' fit, around the shrunk slope
    let lam = 0;
    // this draw's unrepresented error: û (from the same bootstrap replicate of both fits) · |λ| · V_G
    let unrepSd = 0;
    if (tilt) {
      for (let i = 0; i < k; i++) bootW[i] = g(1, 1);
      const b = tiltFit(cs, o.designEffect, deep, bootW);
      lam = lambda + (b ? b.slope - tilt.slope : 0);
      if (shallow && b) {
        const bs = tiltFit(shallowCs, o.designEffect, false, bootW);
        unrepSd = bs ? unrepresentedShare(b.slope, bs.slope, shallowShare) * Math.abs(lam) * vG : 0;
      }
    }
    for (let i = 0; i < k; i++) {
      if (cs[i].covered > 0) {
        const w = g(cs[i].covered / de, 1);
        t += w * pDraw[i];
        if (tilt) {
          const first = lam * tau2[i];
          tb += w * first;
          tt += w * tau2[i];
          tm += w * Math.abs(first - tiltShift(subs[i], lam));
          tv += w * w * spread[i];
        }
        z += w;
      }
      if (cs[i].uncovered > 0) {
        const w = g(cs[i].uncovered / de, 1);
        tn += w * pDraw[i];
        zn += w;
      }
    }
    thetaSampling[d] = z > 0 ? t / z : NaN;
    // the within-cluster term: the tilt with this draw's slope (a Bayesian bootstrap of the clusters, around the
    // shrunk slope), and the sub-groups' own scatter ε
    // the first-order tilt λ τ², with the distance to the exact tilt of the (shrunk) sub-group rates as a
    // model-form error of its own, and the sub-groups' own scatter ε
    // the errors-in-variables correction is an approximation too: the slope's distance to the uncorrected fit
    // (eivGap) times Σ w τ² is counted as a model-form error of its own; so is the shrinkage's bias (shrinkGap)
    const within =
      tilt && z > 0
        ? tb / z +
          norm() * Math.sqrt((tm / z) ** 2 + (eivGap * tt / z) ** 2 + (shrinkGap * tt / z) ** 2 + (sigmaEps * sigmaEps * tv) / (z * z) + unrepSd ** 2)
        : 0;
    theta[d] = z > 0 ? Math.min(1, Math.max(0, t / z + within)) : NaN;
    thetaNear[d] = zn > 0 ? tn / zn : NaN;
    const a = nCov > 0 ? g(nCov / de, 1) : 0;
    const b = nUnc > 0 ? g(nUnc / de, 1) : 0;
    covShare[d] = a + b > 0 ? a / (a + b) : NaN;
  }

  const clusters: ClusterEstimate[] = cs.map((c, i) => ({
    ...c,
    prodShare: nCov ? c.covered / nCov : 0,
    evalShare: nEval ? c.evalCases / nEval : 0,
    evalPassRate: c.evalCases > 0 ? c.evalPassed / c.evalCases : null,
    passRate: post.mean[i],
    passRateInterval: intervalOf(pDraws[i], o.level),
    contribution: 0,
    variance: post.variance[i],
    heterogeneity: tau[i],
  }));
  const correction = tilt && nCov ? lambda * clusters.reduce((s, c, i) => s + c.prodShare * tau2[i], 0) : 0;
  const est = nCov ? clusters.reduce((s, c) => s + c.prodShare * c.passRate, 0) + correction : null;
  for (const c of clusters) c.contribution = (c.prodShare - c.evalShare) * (c.passRate - (Number.isNaN(raw) ? 0 : raw));
  const shrinkage = est === null || !nEval ? null : clusters.reduce((s, c) => s + (c.evalPassRate === null ? 0 : c.evalShare * (c.passRate - c.evalPassRate)), 0);
  const requests = nCov + nUnc;
  const coveredShare = requests ? nCov / requests : 0;
  let bounds: Estimate['bounds'] = null;
  if (est !== null) {
    const near = nUnc ? cs.reduce((s, c, i) => s + (c.uncovered / nUnc) * post.mean[i], 0) : 0;
    const mix = (fill: (d: number) => number) => {
      const x = new Float64Array(o.draws);
      for (let d = 0; d < o.draws; d++) {
        const cv = Number.isNaN(covShare[d]) ? 1 : covShare[d];
        x[d] = cv * theta[d] + (1 - cv) * fill(d);
      }
      return intervalOf(x, o.level);
    };
    const un = 1 - coveredShare;
    bounds = {
      allPass: { estimate: coveredShare * est + un, interval: mix(() => 1) },
      allFail: { estimate: coveredShare * est, interval: mix(() => 0) },
      nearest: { estimate: coveredShare * est + un * near, interval: mix((d) => (nUnc ? thetaNear[d] : 0)) },
    };
  }
  return {
    level: o.level,
    evalCases: nEval,
    raw,
    requests,
    covered: nCov,
    coveredShare,
    estimate: est,
    interval: est === null ? null : intervalOf(theta, o.level),
    samplingInterval: est === null ? null : intervalOf(thetaSampling, o.level),
    withinCluster:
      est === null || !tilt
        ? null
        : {
            slope: lambda,
            slopeSe: tilt.se,
            rawSlope: tilt.slope,
            residualSd: sigmaEps,
            clusters: tilt.k,
            correction,
            shrinkageBias: shrinkGap * clusters.reduce((s, c, i) => s + c.prodShare * tau2[i], 0),
            fittedOn: deep ? 'deepest band' : 'covered',
            unrepresented: shallow
              ? {
                  shallowSlope: shallow.slope,
                  share: unrepresentedShare(tilt.slope, shallow.slope, shallowShare),
                  topicSpread: Math.sqrt(vG),
                  sd: unrepresentedShare(tilt.slope, shallow.slope, shallowShare) * Math.abs(lambda) * vG,
                }
              : null,
          },
    gap: est === null || !nEval ? null : est - raw,
    shrinkage,
    untested: requests ? nUnc / requests : 0,
    bounds,
    priorCases: o.priorCases,
    designEffect: de,
    clusters,
  };
}
