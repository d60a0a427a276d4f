/**
 * Sequential detectors, one small object each (River's shape): `update(...)` returns a verdict, the
 * state is plain JSON (`toJSON` / `fromJSON`), and a detector resets itself after an alarm. The
 * reference (p0) is passed in by the caller, which freezes it after warm-up and while alarmed, so a
 * running mean never chases the shift being detected.
 *
 * Guarantee used throughout (Lorden 1971, "Procedures for reacting to a change in distribution",
 * Ann. Math. Statist. 42): if, for every possible start k, the statistic accumulated since k is a
 * likelihood ratio (or any non-negative martingale with mean 1) under no change, a detector that
 * alarms when the statistic since some start reaches e^h has an average run length to a false alarm
 * of at least e^h observations. G alternatives watched at once cost ln G: h = ln(G · ARL).
 */
import { bernoulliLlr, lnGamma, oddsShift } from './stats.js';

export interface Verdict {
  alarm: boolean;
  /** the largest statistic (nats) before any reset this update */
  statistic: number;
  threshold: number;
  /** requests and events in the evidence segment of the largest statistic */
  segmentRequests: number;
  segmentEvents: number;
  /** the alternative (odds ratio) with the largest statistic */
  ratio: number;
}

export interface BernoulliCusumOptions {
  /** odds ratios of the alternatives watched (> 1: a rate rising) */
  ratios: number[];
  /** alarm threshold h in nats (ARL ≥ e^h / ratios.length windows) */
  threshold: number;
  /** minimum evidence: requests and events in the segment before an alarm may sound */
  minRequests: number;
  minEvents: number;
}

export const BERNOULLI_CUSUM_DEFAULTS: BernoulliCusumOptions = {
  ratios: [1.25, 1.5, 2, 3, 5],
  threshold: Math.log(8640 * 5),
  minRequests: 200,
  minEvents: 10,
};

export interface BernoulliCusumState {
  s: number[];
  n: number[];
  x: number[];
  /**
   * reference noise of the segment (see ReferenceCell): Σ N_h²/R_h, requests in the current cell,
   * the current cell and the segment's first cell; absent when no reference cells were given
   */
  rv?: number[];
  rc?: number[];
  rk?: number[];
  r0?: number[];
  /** requests of the segment in the cell before the current one */
  rp?: number[];
}

/**
 * One-sided Bernoulli/binomial CUSUM (Page 1954; Reynolds & Stoumbos 1999 for the binomial form)
 * over windows, for a rate rising above a frozen reference p0. Each window contributes the
 * log-likelihood ratio of its x events in n requests under p1 = p0·θ (odds) against p0, divided by
 * the dispersion φ (quasi-likelihood: overdispersed counts carry 1/φ of the evidence). One CUSUM per
 * odds ratio θ; an alarm when any reaches h with at least minRequests requests and minEvents events
 * in its segment. Volume does not enter except as evidence: the test is conditional on n.
 *
 * @example
 *   const d = new BernoulliCusum(); // h = ln(8640 · 5) ≈ 10.7: 30 days of 5-minute windows, 5 alternatives
 *   d.update(40, 200, 0.1).alarm; // false: 40 of 200 against 10% is 8.7 nats (odds ratio 2)
 *   d.update(40, 200, 0.1).alarm; // true: 17.3 nats
 */
/**
 * The bookkeeping shared by the CUSUMs that watch several alternatives at once: one statistic per
 * alternative with the requests and events of its current segment, floored at zero, an alarm when
 * any reaches h with enough evidence, and a reset after an alarm.
 */
/**
 * The dispersion that scales a detector's evidence: a number (each window's log-likelihood ratio
 * divided by it), or φ(N) of the evidence segment's N requests: the segment's summed ratio is then
 * divided by φ(N). The second is the quasi-likelihood of the segment as one observation: when the
 * true rate wanders slowly (a drift shared by consecutive windows), the segment's counts vary as
 * φ(N) = φ0 + κ·N, more than any one window's φ(n) shows. The multi-alternative CUSUMs pass the
 * alternative's index as a third argument (a dispersion may differ per alternative: see
 * session-evalue.ts).
 */
export type Dispersion = number | ((segmentRequests: number, referenceTerm: number, alternative?: number) => number);

/**
 * The reference a window is tested against, for the reference's own noise at the segment's scale:
 * `cell` names it (hour-of-day references: the absolute hour; one pooled reference: a constant),
 * `size` is its requests, `period` how many cells pass before the same reference comes back (24
 * for hour-of-day cells). The detector keeps, per alternative, Σ_h N_h²/R_h over the cells its
 * segment has spanned (N_h its requests tested against cell h): the variance of the reference's
 * error summed over the segment, in units of φ·p(1 − p), when different cells are estimated from
 * different requests. Sessions that straddle an hour correlate adjacent cells; the term adds their
 * covariance 2·ρ·N_{h−1}·N_h/R_h, assuming sessions shorter than a cell (no correlation two cells
 * apart). `rho` bounds the correlation of adjacent cells' errors: by Cauchy–Schwarz at most the
 * share of a cell's variance carried by sessions that straddle an hour (measured by the caller from
 * closed sessions, src/monitor/rules.ts); absent = 1, the bound that holds whatever the sessions. A segment spanning D periods meets a cell up to D times; the cells are then
 * not independent of themselves, and the term is taken ×D (Cauchy–Schwarz: (Σ_d a_d)² ≤ D·Σ a_d²).
 * The dispersion function receives this term as its second argument.
 */
export interface ReferenceCell {
  cell: number;
  size: number;
  period: number;
  /** upper bound on the correlation of adjacent cells' errors, in [0, 1] (default 1) */
  rho?: number;
}

abstract class MultiAlternativeCusum {
  protected s: number[];
  protected n: number[];
  protected x: number[];
  /** reference noise per alternative (see ReferenceCell); null until a reference cell is given */
  protected rv: number[] | null;
  protected rc: number[] | null;
  protected rk: number[] | null;
  protected r0: number[] | null;
  protected rp: number[] | null;
  /** the divisor of each alternative's sum at the last update (1 with a number dispersion) */
  private scale: number[];

  constructor(alternatives: number, state?: BernoulliCusumState) {
    this.s = state?.s.slice() ?? new Array(alternatives).fill(0);
    this.n = state?.n.slice() ?? new Array(alternatives).fill(0);
    this.x = state?.x.slice() ?? new Array(alternatives).fill(0);
    this.rv = state?.rv?.slice() ?? null;
    this.rc = state?.rc?.slice() ?? null;
    this.rk = state?.rk?.slice() ?? null;
    this.r0 = state?.r0?.slice() ?? null;
    this.rp = state?.rp?.slice() ?? (this.rv ? new Array(alternatives).fill(0) : null);
    this.scale = new Array(alternatives).fill(1);
  }

  /** the largest statistic now (nats) */
  get statistic(): number {
    return Math.max(0, ...this.s.map((v, g) => v / this.scale[g]));
  }

  /** the reference-noise term of alternative g's segment (Σ N_h²/R_h, ×D periods spanned) */
  protected refTerm(g: number, ref?: ReferenceCell): number {
    if (!this.rv || !this.rk || !this.r0) return 0;
    const d = ref && ref.period > 0 ? Math.floor((this.rk[g] - this.r0[g]) / ref.period) + 1 : 1;
    return this.rv[g] * Math.max(1, d);
  }

  /**
   * add one window: `llr(g)` for each alternative g (labelled `labels[g]` in the verdict), the
   * evidence scaled by the dispersion `phi`; `ref` names the reference the window is tested against
   */
  protected step(llr: (g: number) => number, requests: number, events: number, o: { threshold: number; minRequests: number; minEvents: number }, labels: number[], phi: Dispersion, ref?: ReferenceCell): Verdict {
    let best = 0;
    let alarm = false;
    const G = labels.length;
    if (ref && !this.rv) {
      this.rv = new Array(G).fill(0);
      this.rc = new Array(G).fill(0);
      this.rk = new Array(G).fill(ref.cell);
      this.r0 = new Array(G).fill(ref.cell);
      this.rp = new Array(G).fill(0);
    }
    const stat = new Array<number>(G);
    for (let g = 0; g < G; g++) {
      if (requests > 0) {
        if (this.n[g] === 0 && ref) {
          this.rv![g] = 0;
          this.rc![g] = 0;
          this.rk![g] = ref.cell;
          this.r0![g] = ref.cell;
          this.rp![g] = 0;
        }
        this.s[g] += typeof phi === 'number' ? llr(g) / phi : llr(g);
        this.n[g] += requests;
        this.x[g] += events;
        if (ref) {
          if (this.rk![g] !== ref.cell) {
            // the previous cell is kept for its covariance with this one (below)
            this.rp![g] = this.rk![g] === ref.cell - 1 ? this.rc![g] : 0;
            this.rk![g] = ref.cell;
            this.rc![g] = 0;
          }
          const c = this.rc![g];
          // N_h²/R_h grows by (c + n)² − c²; and sessions straddling the hour make adjacent cells'
          // errors correlated (at most ρ, itself at most 1 by Cauchy–Schwarz): + 2·ρ·n·N_{h−1}/R
          const rho = Number.isFinite(ref.rho) ? Math.min(1, Math.max(0, ref.rho!)) : 1;
          this.rv![g] += ((c + requests) ** 2 - c * c + 2 * rho * requests * this.rp![g]) / Math.max(1, ref.size);
          this.rc![g] = c + requests;
        }
      }
      if (this.s[g] <= 0) {
        this.s[g] = 0;
        this.n[g] = 0;
        this.x[g] = 0;
        if (this.rv) {
          this.rv[g] = 0;
          this.rc![g] = 0;
          this.rp![g] = 0;
        }
      }
      this.scale[g] = typeof phi === 'number' ? 1 : Math.max(1, phi(this.n[g], this.refTerm(g, ref), g));
      stat[g] = this.s[g] / this.scale[g];
      if (stat[g] > stat[best]) best = g;
      if (stat[g] >= o.threshold && this.n[g] >= o.minRequests && this.x[g] >= o.minEvents) alarm = true;
    }
    const v: Verdict = { alarm, statistic: stat[best], threshold: o.threshold, segmentRequests: this.n[best], segmentEvents: this.x[best], ratio: labels[best] };
    if (alarm) this.reset();
    return v;
  }

  reset(): void {
    this.s.fill(0);
    this.n.fill(0);
    this.x.fill(0);
    this.rv?.fill(0);
    this.rc?.fill(0);
    this.rp?.fill(0);
    this.scale.fill(1);
  }

  toJSON(): BernoulliCusumState {
    return {
      s: this.s.slice(),
      n: this.n.slice(),
      x: this.x.slice(),
      ...(this.rv ? { rv: this.rv.slice(), rc: this.rc!.slice(), rk: this.rk!.slice(), r0: this.r0!.slice(), rp: this.rp!.slice() } : {}),
    };
  }
}

export class BernoulliCusum extends MultiAlternativeCusum {
  readonly options: BernoulliCusumOptions;

  constructor(options: Partial<BernoulliCusumOptions> = {}, state?: BernoulliCusumState) {
    const o = { ...BERNOULLI_CUSUM_DEFAULTS, ...options };
    super(o.ratios.length, state);
    this.options = o;
  }

  set threshold(h: number) {
    this.options.threshold = h;
  }

  get threshold(): number {
    return this.options.threshold;
  }

  update(x: number, n: number, p0: number, phi: Dispersion = 1, ref?: ReferenceCell): Verdict {
    const o = this.options;
    return this.step((g) => bernoulliLlr(x, n, p0, oddsShift(p0, o.ratios[g])), n, x, o, o.ratios, phi, ref);
  }

  static fromJSON(state: BernoulliCusumState, options: Partial<BernoulliCusumOptions> = {}): BernoulliCusum {
    return new BernoulliCusum(options, state);
  }
}

export interface DirichletCusumOptions {
  /** Dirichlet prior concentration around the reference (ssrm-test's dirichlet_concentration) */
  concentration: number;
  threshold: number;
  minRequests: number;
}

export const DIRICHLET_CUSUM_DEFAULTS: DirichletCusumOptions = {
  concentration: 1000,
  threshold: Math.log(8640),
  minRequests: 200,
};

export interface DirichletCusumState {
  /** log Bayes factor of the current segment */
  lbf: number;
  /** Dirichlet prior parameters at the segment start (concentration · reference) */
  alpha0: number[] | null;
  /** effective counts accumulated in the segment */
  seg: number[] | null;
  requests: number;
  /** reference noise of the segment (see ReferenceCell): Σ N_h²/R_h, current cell's requests, current and first cell */
  ref?: [number, number, number, number];
}

/**
 * Sequential multinomial test with a Dirichlet-multinomial mixture alternative (Lindon & Malek
 * 2022, "Anytime-valid inference for multinomial count data", NeurIPS; the Python `ssrm-test`
 * package), run as a CUSUM-type e-detector: the mixture Bayes factor of the segment since it last
 * fell to ≤ 1 is a test martingale under no change for every start, so by Lorden's argument an
 * alarm at e^h has ARL ≥ e^h windows. The null p0 may change window to window (each increment is
 * the posterior predictive against the null's probability of that window, ssrm-test's recursion);
 * counts are divided by the dispersion φ first.
 */
export class DirichletMultinomialCusum {
  readonly options: DirichletCusumOptions;
  private st: DirichletCusumState;

  constructor(options: Partial<DirichletCusumOptions> = {}, state?: DirichletCusumState) {
    this.options = { ...DIRICHLET_CUSUM_DEFAULTS, ...options };
    this.st = state ? { ...state, alpha0: state.alpha0?.slice() ?? null, seg: state.seg?.slice() ?? null, ...(state.ref ? { ref: [...state.ref] as [number, number, number, number] } : {}) } : { lbf: 0, alpha0: null, seg: null, requests: 0 };
  }

  set threshold(h: number) {
    this.options.threshold = h;
  }

  get threshold(): number {
    return this.options.threshold;
  }

  get statistic(): number {
    return Math.max(0, this.st.lbf);
  }

  /** log Bayes factor increment of one window of counts c under null p0 given the segment so far */
  static increment(c: ArrayLike<number>, p0: ArrayLike<number>, alpha: ArrayLike<number>): number {
    let a = 0;
    let n = 0;
    let s = 0;
    for (let i = 0; i < c.length; i++) {
      a += alpha[i];
      if (c[i] <= 0) continue;
      n += c[i];
      s += lnGamma(alpha[i] + c[i]) - lnGamma(alpha[i]) - c[i] * Math.log(p0[i]);
    }
    if (n === 0) return 0;
    return s - (lnGamma(a + n) - lnGamma(a));
  }

  /**
   * add one window; `phi` divides its counts: a number, or φ(N, term) of the segment's N requests
   * (this window included) and its reference-noise term when `ref` names the reference cell
   */
  update(counts: ArrayLike<number>, p0: ArrayLike<number>, phi: Dispersion = 1, ref?: ReferenceCell): Verdict {
    const o = this.options;
    const k = counts.length;
    let n = 0;
    for (let i = 0; i < k; i++) n += counts[i];
    if (n > 0) {
      if (!this.st.alpha0 || !this.st.seg || this.st.alpha0.length !== k) {
        this.st.alpha0 = Array.from(p0, (p) => p * o.concentration);
        this.st.seg = new Array(k).fill(0);
        this.st.lbf = 0;
        this.st.requests = 0;
        delete this.st.ref;
      }
      let term = 0;
      if (ref) {
        const r = (this.st.ref ??= [0, 0, ref.cell, ref.cell]);
        if (r[2] !== ref.cell) {
          r[2] = ref.cell;
          r[1] = 0;
        }
        r[0] += ((r[1] + n) ** 2 - r[1] * r[1]) / Math.max(1, ref.size);
        r[1] += n;
        term = r[0] * (ref.period > 0 ? Math.floor((r[2] - r[3]) / ref.period) + 1 : 1);
      }
      const f = typeof phi === 'number' ? phi : Math.max(1, phi(this.st.requests + n, term));
      const c = Array.from(counts, (v) => v / f);
      const alpha = this.st.alpha0.map((a, i) => a + this.st.seg![i]);
      this.st.lbf += DirichletMultinomialCusum.increment(c, p0, alpha);
      for (let i = 0; i < k; i++) this.st.seg[i] += c[i];
      this.st.requests += n;
    }
    const v: Verdict = {
      alarm: this.st.lbf >= o.threshold && this.st.requests >= o.minRequests,
      statistic: Math.max(0, this.st.lbf),
      threshold: o.threshold,
      segmentRequests: this.st.requests,
      segmentEvents: this.st.requests,
      ratio: 1,
    };
    if (v.alarm || this.st.lbf <= 0) this.reset();
    return v;
  }

  reset(): void {
    this.st = { lbf: 0, alpha0: null, seg: null, requests: 0 };
  }

  toJSON(): DirichletCusumState {
    return { ...this.st, alpha0: this.st.alpha0?.slice() ?? null, seg: this.st.seg?.slice() ?? null, ...(this.st.ref ? { ref: [...this.st.ref] as [number, number, number, number] } : {}) };
  }

  static fromJSON(state: DirichletCusumState, options: Partial<DirichletCusumOptions> = {}): DirichletMultinomialCusum {
    return new DirichletMultinomialCusum(options, state);
  }
}

/**
 * The log Bayes factor after each row of `data` of the Dirichlet-multinomial mixture against the
 * fixed null p0, without restarts: the quantity `ssrm_test.sequential_posteriors` reports as
 * log_bayes_factor (prior Dirichlet(concentration · p0)). Used to check the detector's arithmetic
 * against the reference implementation.
 */
export function sequentialLogBayesFactors(data: number[][], p0: number[], concentration = 10000): number[] {
  const alpha = p0.map((p) => p * concentration);
  let lbf = 0;
  return data.map((row) => {
    lbf += DirichletMultinomialCusum.increment(row, p0, alpha);
    row.forEach((v, i) => (alpha[i] += v));
    return lbf;
  });
}

export interface ProfileCusumOptions extends Omit<BernoulliCusumOptions, 'ratios'> {
  /** shares of traffic moving to the profile watched at once (the alternatives); events are the
   * requests in the categories the profile makes more likely */
  mixes: number[];
}

export const PROFILE_CUSUM_DEFAULTS: ProfileCusumOptions = {
  threshold: BERNOULLI_CUSUM_DEFAULTS.threshold,
  minRequests: BERNOULLI_CUSUM_DEFAULTS.minRequests,
  minEvents: BERNOULLI_CUSUM_DEFAULTS.minEvents,
  mixes: [0.01, 0.02, 0.05, 0.1, 0.2],
};

export type ProfileCusumState = BernoulliCusumState;

/**
 * One-sided multinomial CUSUM for a share ε of traffic moving to a known profile q (Page 1954 with
 * a mixture alternative): each request in category b contributes ln((1 − ε) + ε·q_b/p0_b), the
 * log-likelihood ratio of p1 = (1 − ε)·p0 + ε·q against p0. Under p0 every increment has
 * E[e^increment] = Σ p0_b((1 − ε) + ε·q_b/p0_b) = 1, so the accumulated ratio since any start is a
 * test martingale and an alarm at h has ARL ≥ e^h windows (Lorden). One CUSUM per ε; counts are
 * divided by the dispersion φ (quasi-likelihood). evalgap uses it with the coverage depth bands as
 * categories and the model's novel-topic profile as q: it sees a new topic by how deep its queries
 * fall below the eval set, not only by whether they cross the threshold.
 *
 * @example
 *   const d = new ProfileCusum({ threshold: 10 });
 *   d.update([30, 70, 900], [0.01, 0.05, 0.94], [0.3, 0.4, 0.3]).alarm; // true: 30 deep requests against 1%
 */
export class ProfileCusum extends MultiAlternativeCusum {
  readonly options: ProfileCusumOptions;

  constructor(options: Partial<ProfileCusumOptions> = {}, state?: ProfileCusumState) {
    const o = { ...PROFILE_CUSUM_DEFAULTS, ...options };
    super(o.mixes.length, state);
    this.options = o;
  }

  /** the log-likelihood ratio of one window's counts for one mix ε */
  static llr(counts: ArrayLike<number>, p0: ArrayLike<number>, q: ArrayLike<number>, eps: number): number {
    let s = 0;
    for (let b = 0; b < counts.length; b++) if (counts[b] > 0) s += counts[b] * Math.log(1 - eps + (eps * q[b]) / p0[b]);
    return s;
  }

  update(counts: ArrayLike<number>, p0: ArrayLike<number>, q: ArrayLike<number>, phi: Dispersion = 1, ref?: ReferenceCell): Verdict {
    const o = this.options;
    let n = 0;
    let x = 0;
    for (let b = 0; b < counts.length; b++) {
      n += counts[b];
      if (q[b] > p0[b]) x += counts[b];
    }
    return this.step((g) => ProfileCusum.llr(counts, p0, q, o.mixes[g]), n, x, o, o.mixes, phi, ref);
  }
}
