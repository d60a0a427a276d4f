/**
 * Simulated traffic for the monitor's tests and benchmark: windows of counts built from a source of
 * distinct queries, with sessions (a query repeated by one user), a night/day volume swing, and
 * several agents. Seeded and deterministic.
 */
import { rng } from '../../src/monitor/stats.js';
import type { ClusterCounts, SessionCell, WindowCounts } from '../../src/monitor/types.js';
import gammaRandom from '@stdlib/random-base-gamma';

function normal(r: () => number): number {
  const u = Math.max(1e-12, r());
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
}

export function poisson(r: () => number, mean: number): number {
  if (mean <= 0) return 0;
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * normal(r)));
  const l = Math.exp(-mean);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= r();
  } while (p > l);
  return k - 1;
}

/** Binomial(n, p): exact for small n·p (Bernoulli trials or Poisson-style inversion), normal beyond. */
export function binomial(r: () => number, n: number, p: number): number {
  if (n <= 0 || p <= 0) return 0;
  if (p >= 1) return n;
  if (n < 40) {
    let k = 0;
    for (let i = 0; i < n; i++) if (r() < p) k++;
    return k;
  }
  const m = n * p;
  const v = m * (1 - p);
  if (v > 15) return Math.min(n, Math.max(0, Math.round(m + Math.sqrt(v) * normal(r))));
  if (p > 0.5) return n - binomial(r, n, 1 - p);
  // inversion on the pmf
  let u = r();
  let k = 0;
  let pk = Math.pow(1 - p, n);
  while (u > pk && k < n) {
    u -= pk;
    pk *= ((n - k) / (k + 1)) * (p / (1 - p));
    k++;
  }
  return k;
}

/** Multinomial(n, p) by conditional binomials. */
export function multinomial(r: () => number, n: number, p: number[]): number[] {
  const out = new Array<number>(p.length).fill(0);
  let left = n;
  let mass = 1;
  for (let i = 0; i < p.length && left > 0; i++) {
    const q = mass > 0 ? Math.min(1, p[i] / mass) : 0;
    out[i] = i === p.length - 1 ? left : binomial(r, left, q);
    left -= out[i];
    mass -= p[i];
  }
  return out;
}

/**
 * Traffic over "cells" (a distinct kind of query: its cluster and whether it is uncovered) with
 * shares `weights(t)`. Sessions: each session draws a cell and repeats it a geometric number of
 * times with mean `sessionMean` (near-duplicate queries of one user).
 */
export interface Cell {
  cluster: number;
  uncovered: boolean;
  /** coverage depth band (src/coverage/bands.ts), when the model has bands */
  band?: number;
}

export interface StreamSpec {
  start: string;
  windows: number;
  windowSeconds: number;
  ratePerSecond: number;
  /** amplitude of the night/day volume swing (0: flat; 0.7: night volume 30% of the peak) */
  volumeSwing?: number;
  agents?: string[];
  cells: Cell[];
  /** cell shares at time t (ms), for an agent */
  weights: (t: number, agent: string) => number[];
  /** per-request escalation / refusal / failure probability of a cell */
  escalation?: (cell: Cell, t: number) => number;
  refusal?: (cell: Cell, t: number) => number;
  failure?: (cell: Cell, t: number) => number;
  /** mean requests per session (1: every request independent) */
  sessionMean?: number;
  modelVersion?: string;
  seed?: number;
  /** number of coverage depth bands to count (cells carry their band); absent: no band counts */
  bands?: number;
}

export function* stream(spec: StreamSpec): Generator<WindowCounts[]> {
  const r = rng(spec.seed ?? 1);
  const agents = spec.agents ?? ['support'];
  const t0 = Date.parse(spec.start);
  const ms = spec.windowSeconds * 1000;
  const m = Math.max(1, spec.sessionMean ?? 1);
  for (let w = 0; w < spec.windows; w++) {
    const t = t0 + w * ms;
    const hour = ((t / 3600000) % 24) / 24;
    const vol = 1 - (spec.volumeSwing ?? 0) * (0.5 + 0.5 * Math.cos(2 * Math.PI * (hour - 0.6)));
    const out: WindowCounts[] = [];
    for (const agent of agents) {
      const requests = (spec.ratePerSecond * spec.windowSeconds * vol) / agents.length;
      const sessions = poisson(r, requests / m);
      const perCell = multinomial(r, sessions, spec.weights(t, agent));
      const byCluster = new Map<number, ClusterCounts>();
      perCell.forEach((s, i) => {
        if (s === 0) return;
        const cell = spec.cells[i];
        // s sessions of geometric length (mean m): s + NegBin extra requests
        let n = s;
        if (m > 1) {
          if (s < 20) for (let j = 0; j < s; j++) n += Math.floor(Math.log(Math.max(1e-12, r())) / Math.log(1 - 1 / m));
          else n += Math.max(0, Math.round(s * (m - 1) + Math.sqrt(s * m * (m - 1)) * normal(r)));
        }
        const c = byCluster.get(cell.cluster) ?? { cluster: cell.cluster, requests: 0, uncovered: 0, escalated: 0, refused: 0, failed: 0, uncoveredEscalated: 0, ...(spec.bands ? { bands: new Array<number>(spec.bands).fill(0) } : {}) };
        if (c.bands && cell.band !== undefined) c.bands[cell.band] += n;
        const e = binomial(r, n, spec.escalation?.(cell, t) ?? 0.05);
        c.requests += n;
        c.escalated += e;
        if (cell.uncovered) {
          c.uncovered += n;
          c.uncoveredEscalated! += e;
        }
        c.refused += binomial(r, n, spec.refusal?.(cell, t) ?? 0.02);
        c.failed += binomial(r, n, spec.failure?.(cell, t) ?? 0.01);
        byCluster.set(cell.cluster, c);
      });
      out.push({
        start: new Date(t).toISOString(),
        end: new Date(t + ms).toISOString(),
        agent,
        modelVersion: spec.modelVersion ?? 'm1',
        // its sessions live inside one window (the windows' dispersion sees them): no session ids given
        clusters: [...byCluster.values()].sort((a, b) => a.cluster - b.cluster),
      });
    }
    yield out;
  }
}

/**
 * Synthetic cells: K clusters with shares p, each split into a covered and an uncovered cell by
 * its uncovered rate. Returns the cells and a function turning cluster shares into cell weights.
 */
export function syntheticCells(uncovered: number[]): { cells: Cell[]; weights: (clusterShares: number[]) => number[] } {
  const cells: Cell[] = [];
  uncovered.forEach((_, i) => cells.push({ cluster: i, uncovered: false }, { cluster: i, uncovered: true }));
  return { cells, weights: (p) => p.flatMap((q, i) => [q * (1 - uncovered[i]), q * uncovered[i]]) };
}

/** Cluster shares following a daily cycle: each cluster's weight × (1 + amp·sin(2π(hour + phase))). */
export function dailyCycle(base: number[], amp: number, seed = 7): (t: number) => number[] {
  const r = rng(seed);
  const phase = base.map(() => r());
  return (t) => {
    const h = ((t / 3600000) % 24) / 24;
    const w = base.map((b, i) => b * (1 + amp * Math.sin(2 * Math.PI * (h + phase[i]))));
    const s = w.reduce((a, b) => a + b, 0);
    return w.map((x) => x / s);
  };
}

/**
 * Request-level traffic with real sessions (the realistic generator of the benchmark and the
 * session tests): sessions arrive as a Poisson process whose rate follows a daily cycle (day peak
 * `volumeRatio` × the night trough); each session has 1–`maxTurns` turns `gapSeconds` apart, mostly
 * one intent: a turn is an exact retry of the previous one (same cell), a paraphrase (a new draw
 * from the intent's cells) or, rarely, a new intent. Agents carry unequal shares of the volume.
 * Windows carry the distinct sessions seen and the sessions that closed (idle `idleSeconds`), as
 * the runner gives them to the monitor.
 */
export interface SessionStreamSpec {
  start: string;
  /** total length (ms) and window length (s) */
  durationMs: number;
  windowSeconds: number;
  /** mean requests per second over a day */
  ratePerSecond: number;
  /** day peak ÷ night trough of the volume (5: ×5) */
  volumeRatio?: number;
  /** agent name → share of the volume */
  agents?: Record<string, number>;
  cells: Cell[];
  /** per intent: its distribution over cells (what its paraphrases land on) */
  intentCells: number[][];
  /** intent shares at time t for an agent */
  intentWeights: (t: number, agent: string) => number[];
  escalation?: (cell: Cell, t: number) => number;
  /** turns: 1..maxTurns, P(L) ∝ decay^L (default 30, 0.88: mean ≈ 6.6) */
  maxTurns?: number;
  turnDecay?: number;
  gapSeconds?: [number, number];
  /** per turn after the first: exact retry, else paraphrase, else (switch) a new intent */
  retry?: number;
  switchIntent?: number;
  /** a session closes this long after its last turn */
  idleSeconds?: number;
  /** false: windows carry no session ids (traffic without session_id) */
  sessionIds?: boolean;
  modelVersion?: string;
  seed?: number;
  bands?: number;
  /** called once per session at its start (the oracle's observations) */
  onSession?: (s: { t: number; agent: string; intent: number; cells: number[]; escalated: number[] }) => void;
  /** called with each window's request count (after it is emitted) */
  onWindow?: (t: number, requests: number) => void;
}

function pick(r: () => number, w: number[], total?: number): number {
  let u = r() * (total ?? w.reduce((a, b) => a + b, 0));
  for (let i = 0; i < w.length; i++) {
    u -= w[i];
    if (u < 0) return i;
  }
  return w.length - 1;
}

export function* sessionStream(spec: SessionStreamSpec): Generator<WindowCounts[]> {
  const r = rng(spec.seed ?? 1);
  const W = spec.windowSeconds * 1000;
  const t0 = Date.parse(spec.start);
  const nWin = Math.floor(spec.durationMs / W);
  const agents = Object.entries(spec.agents ?? { support: 0.7, sales: 0.3 });
  const ratio = spec.volumeRatio ?? 5;
  const amp = (ratio - 1) / (ratio + 1);
  const maxTurns = spec.maxTurns ?? 30;
  const decay = spec.turnDecay ?? 0.88;
  const lenW = Array.from({ length: maxTurns }, (_, i) => Math.pow(decay, i + 1));
  const lenSum = lenW.reduce((a, b) => a + b, 0);
  const meanLen = lenW.reduce((a, w, i) => a + w * (i + 1), 0) / lenSum;
  const [g0, g1] = spec.gapSeconds ?? [5, 90];
  const retry = spec.retry ?? 0.3;
  const sw = spec.switchIntent ?? 0.05;
  const idle = (spec.idleSeconds ?? 300) * 1000;
  const ids = spec.sessionIds !== false;
  const cellCum = spec.intentCells.map((f) => f.reduce((a, b) => a + b, 0));
  // future windows: per window, per agent: cell → [req, esc, ref, fail], session ids seen, closed sessions
  interface Slot {
    cells: Map<number, number[]>;
    sessions: Set<number>;
    closed: SessionCell[];
  }
  const future = new Map<number, Map<string, Slot>>();
  const slot = (w: number, agent: string): Slot => {
    let m = future.get(w);
    if (!m) future.set(w, (m = new Map()));
    let s = m.get(agent);
    if (!s) m.set(agent, (s = { cells: new Map(), sessions: new Set(), closed: [] }));
    return s;
  };
  let sid = 0;
  for (let w = 0; w < nWin; w++) {
    const tw = t0 + w * W;
    const h = ((tw / 3600000) % 24) / 24;
    const vol = 1 + amp * Math.cos(2 * Math.PI * (h - 0.6));
    for (const [agent, share] of agents) {
      const n = poisson(r, (spec.ratePerSecond * spec.windowSeconds * vol * share) / meanLen);
      for (let k = 0; k < n; k++) {
        const id = sid++;
        let t = tw + r() * W;
        const L = 1 + pick(r, lenW, lenSum);
        const iw = spec.intentWeights(t, agent);
        let intent = pick(r, iw);
        const start = t;
        let cell = pick(r, spec.intentCells[intent], cellCum[intent]);
        const seq: number[] = [];
        const esc: number[] = [];
        const tally = new Map<number, number[]>();
        // the session's requests per clock hour (SessionCell.hourSq)
        const perHour = new Map<number, number>();
        for (let turn = 0; turn < L; turn++) {
          if (turn > 0) {
            t += (g0 + r() * (g1 - g0)) * 1000;
            const u = r();
            if (u < sw) {
              intent = pick(r, iw);
              cell = pick(r, spec.intentCells[intent], cellCum[intent]);
            } else if (u >= sw + retry) cell = pick(r, spec.intentCells[intent], cellCum[intent]);
          }
          const c = spec.cells[cell];
          const e = r() < (spec.escalation?.(c, t) ?? 0.05) ? 1 : 0;
          const rf = r() < 0.02 ? 1 : 0;
          const fl = r() < 0.01 ? 1 : 0;
          seq.push(cell);
          esc.push(e);
          perHour.set(Math.floor(t / 3600000), (perHour.get(Math.floor(t / 3600000)) ?? 0) + 1);
          const wi = Math.floor((t - t0) / W);
          const s = slot(wi, agent);
          const cc = s.cells.get(cell) ?? [0, 0, 0, 0];
          cc[0] += 1;
          cc[1] += e;
          cc[2] += rf;
          cc[3] += fl;
          s.cells.set(cell, cc);
          s.sessions.add(id);
          const tt = tally.get(cell) ?? [0, 0, 0, 0];
          tt[0] += 1;
          tt[1] += e;
          tt[2] += rf;
          tt[3] += fl;
          tally.set(cell, tt);
        }
        spec.onSession?.({ t: start, agent, intent, cells: seq, escalated: esc });
        if (ids) {
          let hourSq = 0;
          for (const v of perHour.values()) hourSq += v * v;
          const cw = Math.floor((t + idle - t0) / W);
          const s = slot(cw, agent);
          for (const [cell, tt] of tally) {
            const c = spec.cells[cell];
            s.closed.push({ session: `s${id}`, cluster: c.cluster, uncovered: c.uncovered, band: c.band ?? -1, requests: tt[0], escalated: tt[1], refused: tt[2], failed: tt[3], hourSq });
          }
        }
      }
    }
    const m = future.get(w);
    future.delete(w);
    const out: WindowCounts[] = [];
    let total = 0;
    for (const [agent] of agents) {
      const s = m?.get(agent);
      const byCluster = new Map<number, ClusterCounts>();
      for (const [cell, cc] of s?.cells ?? []) {
        const c = spec.cells[cell];
        const x = byCluster.get(c.cluster) ?? { cluster: c.cluster, requests: 0, uncovered: 0, escalated: 0, refused: 0, failed: 0, uncoveredEscalated: 0, ...(spec.bands ? { bands: new Array<number>(spec.bands).fill(0) } : {}) };
        x.requests += cc[0];
        x.escalated += cc[1];
        x.refused += cc[2];
        x.failed += cc[3];
        if (c.uncovered) {
          x.uncovered += cc[0];
          x.uncoveredEscalated! += cc[1];
        }
        if (x.bands && c.band !== undefined) x.bands[c.band] += cc[0];
        byCluster.set(c.cluster, x);
        total += cc[0];
      }
      if (byCluster.size === 0 && !(s && s.closed.length)) continue;
      out.push({
        start: new Date(tw).toISOString(),
        end: new Date(tw + W).toISOString(),
        agent,
        modelVersion: spec.modelVersion ?? 'm1',
        clusters: [...byCluster.values()].sort((a, b) => a.cluster - b.cluster),
        ...(ids ? { sessions: s?.sessions.size ?? 0, closedSessions: s?.closed ?? [] } : {}),
      });
    }
    spec.onWindow?.(tw, total);
    yield out;
  }
}

/**
 * Per-cluster rates drawn once from Beta(alpha, beta) (seeded): clusters that genuinely escalate at
 * different rates, for the escalation family's no-shift checks. Returns a rate for each cluster id.
 */
export function betaRates(clusters: number[], alpha: number, beta: number, seed = 1): Map<number, number> {
  const g = gammaRandom.factory({ seed });
  return new Map(clusters.map((c) => {
    const x = g(alpha, 1);
    const y = g(beta, 1);
    return [c, x / (x + y)];
  }));
}
