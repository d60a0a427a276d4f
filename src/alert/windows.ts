/**
 * Windows in event time, and late rows (pure).
 *
 * A window [start, end) is evaluated once `end + lateness` has passed. Rows that arrive after their
 * window was evaluated are not lost: the checkpoint keeps, per day, agent, model version and
 * cluster, the totals already evaluated; each evaluation reads the stored totals of the days in
 * the late horizon up to the window's end and evaluates the difference — this window's rows plus
 * any late rows of earlier windows. Rows later than the horizon are stored but never evaluated.
 */
import type { BucketRow, ClosedSessionRow, DayTotalRow } from '../store/monitor.js';
import type { WindowCounts } from '../monitor/types.js';
import { BANDS } from '../coverage/bands.js';

/** requests, uncovered, escalated, refused, failed, uncoveredEscalated, then one count per coverage depth band */
export type Counts = number[];
const FIXED = 6;
const WIDTH = FIXED + BANDS;
/** `${day}|${agent}|${model}|${cluster}` → counts */
export type Totals = Record<string, Counts>;

const DAY = 86_400_000;

/** The start of the window (of `windowSeconds`, aligned to the epoch) holding time `t`. */
export function alignDown(t: number, windowSeconds: number): number {
  const w = windowSeconds * 1000;
  return Math.floor(t / w) * w;
}

/** The latest window end that is closed at `now` (end + lateness ≤ now). */
export function closedUntil(now: number, windowSeconds: number, latenessSeconds: number): number {
  return alignDown(now - latenessSeconds * 1000, windowSeconds);
}

/** The first day (UTC midnight) inside the late horizon of a window ending at `end`. */
export function horizonStart(end: number, lateHorizonDays: number): number {
  return Math.floor((end - lateHorizonDays * DAY) / DAY) * DAY;
}

export function totalsOf(rows: DayTotalRow[]): Totals {
  const t: Totals = {};
  for (const r of rows) {
    const k = `${r.day}|${r.agent}|${r.model_version}|${r.cluster}`;
    const c = (t[k] ??= new Array<number>(WIDTH).fill(0));
    c[0] += r.requests;
    c[1] += r.uncovered;
    c[2] += r.escalated;
    c[3] += r.refused;
    c[4] += r.failed;
    c[5] += r.uncovered_escalated ?? 0;
    for (let b = 0; b < BANDS; b++) c[FIXED + b] += r.bands?.[b] ?? 0;
  }
  return t;
}

/**
 * What is new since the last evaluation: stored totals minus evaluated totals, per key (never
 * negative: rows removed by retention are not "un-counted"). Also returns the totals to keep,
 * pruned to the horizon.
 */
export function newSince(stored: Totals, evaluated: Totals, horizonDay: string): { fresh: BucketRow[]; keep: Totals } {
  const fresh: BucketRow[] = [];
  const keep: Totals = {};
  for (const [k, s] of Object.entries(stored)) {
    const [day, agent, model, cluster] = splitKey(k);
    if (day < horizonDay) continue;
    // a checkpoint written before uncoveredEscalated (5 numbers) or the bands (6) were counted holds fewer
    const e = evaluated[k] ?? [];
    const d = s.map((v, i) => Math.max(0, v - (e[i] ?? 0)));
    keep[k] = s.map((v, i) => Math.max(v, e[i] ?? 0));
    if (d.some((v) => v > 0)) {
      fresh.push({ bucket: day, agent, model_version: model, cluster: Number(cluster), requests: d[0], uncovered: d[1], escalated: d[2], refused: d[3], failed: d[4], uncovered_escalated: d[5], bands: d.slice(FIXED, WIDTH) });
    }
  }
  for (const [k, e] of Object.entries(evaluated)) if (!(k in keep) && splitKey(k)[0] >= horizonDay) keep[k] = e;
  return { fresh, keep };
}

function splitKey(k: string): [string, string, string, string] {
  // agent names may contain '|': the day is first, model and cluster are last
  const parts = k.split('|');
  const day = parts[0];
  const cluster = parts[parts.length - 1];
  const model = parts[parts.length - 2];
  const agent = parts.slice(1, parts.length - 2).join('|');
  return [day, agent, model, cluster];
}

/** Group aggregate rows into one WindowCounts per agent and model version. */
export function toWindowCounts(rows: BucketRow[], start: string, end: string): WindowCounts[] {
  const by = new Map<string, WindowCounts>();
  for (const r of rows) {
    const k = `${r.agent}\u0000${r.model_version}`;
    let w = by.get(k);
    if (!w) {
      w = { start, end, agent: r.agent, modelVersion: r.model_version, clusters: [] };
      by.set(k, w);
    }
    let c = w.clusters.find((x) => x.cluster === r.cluster);
    if (!c) {
      c = { cluster: r.cluster, requests: 0, uncovered: 0, escalated: 0, refused: 0, failed: 0, uncoveredEscalated: 0, bands: new Array<number>(BANDS).fill(0) };
      w.clusters.push(c);
    }
    for (let b = 0; b < BANDS; b++) c.bands![b] += r.bands?.[b] ?? 0;
    c.requests += r.requests;
    c.uncovered += r.uncovered;
    c.escalated += r.escalated;
    c.refused += r.refused;
    c.failed += r.failed;
    c.uncoveredEscalated = (c.uncoveredEscalated ?? 0) + (r.uncovered_escalated ?? 0);
  }
  const out = [...by.values()].sort((a, b) => (a.agent < b.agent ? -1 : a.agent > b.agent ? 1 : a.modelVersion < b.modelVersion ? -1 : 1));
  for (const w of out) w.clusters.sort((a, b) => a.cluster - b.cluster);
  return out;
}

export function dayString(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}

/**
 * Give each window of [start, end) the sessions of its agent and model version that closed in it;
 * an agent with closed sessions but no counts in the window gets an empty window to carry them.
 */
export function attachClosedSessions(windows: WindowCounts[], rows: ClosedSessionRow[], start: string, end: string): WindowCounts[] {
  const out = windows.slice();
  for (const r of rows) {
    let w = out.find((x) => x.agent === r.agent && x.modelVersion === r.model_version);
    if (!w) out.push((w = { start, end, agent: r.agent, modelVersion: r.model_version, clusters: [] }));
    (w.closedSessions ??= []).push({ session: r.session, cluster: r.cluster, uncovered: r.uncovered, band: r.band, requests: r.requests, escalated: r.escalated, refused: r.refused, failed: r.failed, hourSq: r.hourSq });
  }
  return out;
}
