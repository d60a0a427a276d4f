/**
 * The monitor checkpoint's reference histories stored once (src/store/checkpoint-parts.ts): a
 * checkpoint cut into a skeleton and parts joins back byte for byte, and a monitor restored from
 * it at every window (JSON text → skeleton + parts → JSON text → state, as the runner and the
 * store do) decides exactly as one that never stopped: the same findings, window by window, with
 * the core rules and novel_sessions on session traffic with a shift. A checkpoint written before
 * the parts existed (no references) loads unchanged.
 */
import { describe, expect, it } from 'vitest';
import { composeEvaluators, createEvaluateWindow, novelSessionRules } from '../../src/monitor/index.js';
import type { EvaluateWindow, MonitorContext, MonitorState, WindowCounts } from '../../src/monitor/types.js';
import { joinCheckpoint, PART_MIN_BYTES, partRefs, splitCheckpoint } from '../../src/store/checkpoint-parts.js';
import { sessionStream } from '../helpers/monitor-sim.js';
import { B, bandedContext, bandedWorld } from '../helpers/banded-world.js';

const DAY = 86400_000;
const START = '2026-03-02T00:00:00.000Z';
const world = bandedWorld();
const ctx: MonitorContext = bandedContext();
const evaluator = (): EvaluateWindow => composeEvaluators(createEvaluateWindow({}), [novelSessionRules({})]);

/** 30 hours at 0.3 requests/s in 5-minute windows; after a day, 20% of traffic on novel intents (so that rules fire) */
function windows(): WindowCounts[][] {
  const change = Date.parse(START) + DAY;
  const out: WindowCounts[][] = [];
  for (const w of sessionStream({
    start: START,
    durationMs: 1.25 * DAY,
    windowSeconds: 300,
    ratePerSecond: 0.3,
    agents: { support: 0.7, sales: 0.3 },
    cells: world.cells,
    intentCells: world.intentCells,
    intentWeights: (t) => world.weights(t, t >= change ? 0.2 : 0),
    bands: B,
    seed: 4,
  }))
    if (w.length) out.push(w);
  return out;
}
const WINDOWS = windows();

/**
 * Two monitors side by side over the windows: one keeps its state in memory, the other's passes
 * through `restore` after every window. Returns the first window whose findings differ (-1: none),
 * the windows with a firing finding, both final states' JSON and the largest checkpoint's sizes.
 */
function sideBySide(restore: (json: string) => MonitorState) {
  const a = evaluator();
  const b = evaluator();
  let sa: MonitorState | null = null;
  let sb: MonitorState | null = null;
  let differs = -1;
  const rules = new Set<string>();
  let peak = { total: 0, skeleton: 0 };
  WINDOWS.forEach((w, i) => {
    if (differs >= 0) return;
    const ra = a(sa, w, ctx);
    const rb = b(sb, w, ctx);
    if (JSON.stringify(ra.findings) !== JSON.stringify(rb.findings)) differs = i;
    for (const f of ra.findings) if (f.firing) rules.add(f.rule);
    sa = ra.state;
    const json = JSON.stringify(rb.state);
    if (json.length > peak.total) peak = { total: json.length, skeleton: splitCheckpoint(json).skeleton.length };
    sb = restore(json);
  });
  return { differs, rules, final: [JSON.stringify(sa), JSON.stringify(sb)], peak };
}

describe('monitor checkpoint: reference histories stored once', () => {
  const viaParts = (json: string): MonitorState => {
    const { skeleton, parts } = splitCheckpoint(json);
    // (what the store writes and reads: the skeleton row and one row per part, by id)
    const stored = new Map(JSON.parse(JSON.stringify(parts.map((p) => [p.id, p.body]))) as [string, string][]);
    const back = joinCheckpoint(skeleton, stored);
    expect(back).toBe(json);
    return JSON.parse(back) as MonitorState;
  };

  it('a monitor restored from its checkpoint at every window decides exactly as one that never stopped', () => {
    const r = sideBySide(viaParts);
    expect(r.differs).toBe(-1);
    expect(r.final[1]).toBe(r.final[0]);
    // the runs are not trivial: several rules fired after the shift
    expect(r.rules.size).toBeGreaterThan(1);
    // and the parts carry most of the state: the per-window row holds well under half of it
    expect(r.peak.skeleton).toBeLessThan(r.peak.total / 2);
  });

  it('cuts out the blocks and rings only, each distinct one once, and joins back byte for byte', () => {
    const ev = evaluator();
    let st: MonitorState | null = null;
    for (const w of WINDOWS.slice(0, 250)) st = ev(st, w, ctx).state;
    const json = JSON.stringify(st);
    const { skeleton, parts } = splitCheckpoint(json);
    expect(parts.length).toBeGreaterThan(3);
    expect(new Set(parts.map((p) => p.id)).size).toBe(parts.length);
    expect(partRefs(skeleton).sort()).toEqual(parts.map((p) => p.id).sort());
    for (const p of parts) {
      expect(p.body.length).toBeGreaterThanOrEqual(PART_MIN_BYTES);
      expect(Array.isArray(JSON.parse(p.body))).toBe(true);
    }
    // what stays inline is what changes every window (detectors, current block, episodes)
    const sk = JSON.parse(skeleton) as { scopes: Record<string, { blocks: unknown; det: unknown; current: unknown }> };
    expect(sk.scopes['*'].blocks).toEqual({ $part: expect.any(String) });
    expect(sk.scopes['*'].det).toEqual((JSON.parse(json) as typeof sk).scopes['*'].det);
    expect(joinCheckpoint(skeleton, new Map(parts.map((p) => [p.id, p.body])))).toBe(json);
    // the same state again writes the same parts (the store then skips them)
    expect(splitCheckpoint(json).parts.map((p) => p.id)).toEqual(parts.map((p) => p.id));
    // a missing part is named, not read as something else
    expect(() => joinCheckpoint(skeleton, new Map(parts.slice(1).map((p) => [p.id, p.body])))).toThrow(parts[0].id);
  });

  it('a checkpoint written before the parts existed loads unchanged and goes on alike', () => {
    // the runner's checkpoint text as every earlier release wrote it: the whole state inline
    const ev = evaluator();
    let st: MonitorState | null = null;
    for (const w of WINDOWS.slice(0, 200)) st = ev(st, w, ctx).state;
    const old = JSON.stringify({ monitor: st, log: {}, evaluated: {}, firstStartedAt: START });
    expect(partRefs(old)).toEqual([]);
    expect(joinCheckpoint(old, new Map())).toBe(old);
    const loaded = (JSON.parse(joinCheckpoint(old, new Map())) as { monitor: MonitorState }).monitor;
    const a = evaluator();
    const b = evaluator();
    let sa: MonitorState = JSON.parse(JSON.stringify(st)) as MonitorState;
    let sb = loaded;
    for (const w of WINDOWS.slice(200, 300)) {
      const ra = a(sa, w, ctx);
      const rb = b(sb, w, ctx);
      expect(rb.findings).toEqual(ra.findings);
      sa = ra.state;
      sb = viaParts(JSON.stringify(rb.state));
    }
    expect(JSON.stringify(sb)).toBe(JSON.stringify(sa));
  });
});
