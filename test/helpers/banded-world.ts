/**
 * The synthetic banded world of the novel_sessions unit tests (test/unit/monitor-novel-sessions,
 * monitor-fresh-sessions, monitor-checkpoint): K clusters of B coverage bands each, NOVEL novel
 * intents, and the coverage model's context for it (bandedContext).
 */
import type { Cell } from './monitor-sim.js';
import type { MonitorContext } from '../../src/monitor/types.js';
import { rng } from '../../src/monitor/stats.js';

export const K = 12;
export const B = 9;
export const NOVEL = 6;

/**
 * 24 tested intents over 12 clusters and 6 novel ones (as in monitor-novel-calibrated.test.ts).
 * Cells: (cluster, band), uncovered below band 5. A tested intent puts 0.2–1.6% of its requests in
 * the three deepest bands (each intent its own rate, so a session repeating one intent correlates
 * its turns), one "poorly covered" tested intent 8% (its sessions put several turns deep: the case
 * a per-turn independence model gets wrong); a novel intent 40%.
 */
export function bandedWorld(seed = 11) {
  const r = rng(seed);
  const cells: Cell[] = [];
  for (let c = 0; c < K; c++) for (let b = 0; b < B; b++) cells.push({ cluster: c, uncovered: b < 5, band: b });
  const cell = (c: number, b: number) => c * B + b;
  const profile = (deep: number, unc: number) => {
    const rest = 1 - unc - 0.35;
    return [deep / 3, deep / 3, deep / 3, 0.004, unc - deep - 0.004, 0.05, 0.1, 0.2, rest];
  };
  const intentCells: number[][] = [];
  for (let j = 0; j < 2 * K; j++) {
    const c = j % K;
    const deep = j === 5 ? 0.08 : 0.002 + 0.014 * r();
    const p = profile(deep, Math.max(deep + 0.02, 0.03 + 0.05 * r()));
    const f = new Array<number>(cells.length).fill(0);
    for (let b = 0; b < B; b++) {
      f[cell(c, b)] += 0.9 * p[b];
      f[cell((c + 1) % K, b)] += 0.1 * p[b];
    }
    intentCells.push(f);
  }
  const novelProfile = [0.14, 0.12, 0.14, 0.08, 0.12, 0.1, 0.1, 0.1, 0.1];
  for (let j = 0; j < NOVEL; j++) {
    const f = new Array<number>(cells.length).fill(0);
    for (let b = 0; b < B; b++) f[cell((2 * j + 1) % K, b)] = novelProfile[b];
    intentCells.push(f);
  }
  const base = Array.from({ length: 2 * K }, () => 0.3 + r());
  const phase = base.map(() => r());
  const weights = (t: number, novel: number) => {
    const h = ((t / 3600000) % 24) / 24;
    const w = base.map((b, j) => b * (1 + 0.5 * Math.sin(2 * Math.PI * (h + phase[j]))));
    const s = w.reduce((a, b) => a + b, 0);
    return [...w.map((x) => ((1 - novel) * x) / s), ...Array.from({ length: NOVEL }, () => novel / NOVEL)];
  };
  return { cells, intentCells, weights, novelProfile };
}

/**
 * The coverage model's context for the banded world: an honest, wide calibrated interval, equal eval
 * shares, and the fit's novel-topic profile somewhat off the true one (the fit cannot know it exactly).
 */
export function bandedContext(over: Partial<MonitorContext> = {}): MonitorContext {
  return {
    modelVersion: 'm1',
    calibratedRate: 0.055,
    calibratedRateInterval: [0.02, 0.12],
    evalShares: Object.fromEntries(Array.from({ length: K }, (_, i) => [i, 1 / K])),
    labels: Object.fromEntries(Array.from({ length: K }, (_, i) => [i, `topic ${i}`])),
    novelProfile: [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15],
    heldOutDeep: { deepBands: 3, share: 0.01, interval: [0.005, 0.016], novelShare: 0.3 },
    ...over,
  };
}
