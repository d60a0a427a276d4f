/**
 * Simulated traffic for the monitor's tests and benchmark: windows of counts built from a source of
 * distinct queries, with sessions (a query repeated by one user), a night/day volume swing, and
 * several agents. Seeded and deterministic.
 */
import { rng } from '../../src/monitor/stats.js';
import type { ClusterCounts, WindowCounts } from '../../src/monitor/types.js';

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
        clusters: [...byCluster.values()].sort((a, b) => a.cluster - b.cluster),
        sessions,
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
