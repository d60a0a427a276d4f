/**
 * The monitor checkpoint on the embedded engine (src/store/monitor.ts, src/store/checkpoint-parts.ts):
 * the reference histories are written once as part rows beside the checkpoint, the window's row
 * carries the rest, loading joins them back byte for byte; a checkpoint written by an earlier
 * release (the whole state in its row) loads unchanged; parts that no checkpoint references any
 * more are deleted after the grace, the ones the latest checkpoint references never.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { composeEvaluators, createEvaluateWindow, novelSessionRules } from '../../src/monitor/index.js';
import type { MonitorContext, MonitorState } from '../../src/monitor/types.js';
import { partRefs } from '../../src/store/checkpoint-parts.js';
import { chTime, MonitorStore, PART_GRACE_SEQ } from '../../src/store/monitor.js';
import { Store } from '../../src/store/store.js';
import { testConfig, tmpDir } from '../helpers/fixtures.js';
import { sessionStream } from '../helpers/monitor-sim.js';
import { B, bandedContext, bandedWorld } from '../helpers/banded-world.js';

const START = '2026-03-02T00:00:00.000Z';
const world = bandedWorld();
const ctx: MonitorContext = bandedContext();

/** the runner's checkpoint text after 10 hours of session traffic (core rules and novel_sessions) */
function runnerState(): string {
  const ev = composeEvaluators(createEvaluateWindow({}), [novelSessionRules({})]);
  let st: MonitorState | null = null;
  for (const w of sessionStream({ start: START, durationMs: 10 * 3600_000, windowSeconds: 300, ratePerSecond: 0.5, agents: { support: 0.7, sales: 0.3 }, cells: world.cells, intentCells: world.intentCells, intentWeights: (t) => world.weights(t, 0), bands: B, seed: 4 }))
    if (w.length) st = ev(st, w, ctx).state;
  return JSON.stringify({ monitor: st, log: {}, evaluated: { '2026-03-02': { '*': 1 } }, firstStartedAt: START });
}

describe('monitor checkpoint on the embedded engine', () => {
  let store: Store;
  let json: string;
  const rows = async (monitor: string) =>
    store.query<{ monitor: string; seq: string; bytes: string }>(
      `SELECT monitor, seq, length(state) AS bytes FROM ${store.t('monitor_checkpoints')} WHERE monitor = {m:String} OR startsWith(monitor, {p:String}) ORDER BY seq, monitor`,
      { m: monitor, p: `${monitor}/checkpoint-part/` },
    );
  beforeAll(async () => {
    store = await Store.open(testConfig(tmpDir()).clickhouse);
    json = runnerState();
  });
  afterAll(async () => store?.close());

  it('writes the reference histories once, the rest per window, and loads the checkpoint byte for byte', async () => {
    const ms = new MonitorStore(store);
    await ms.saveCheckpoint('g1', { seq: 1, windowEnd: '2026-03-02T10:00:00.000Z', state: json });
    const first = await rows('g1');
    const row = first.find((r) => r.monitor === 'g1')!;
    const parts = first.filter((r) => r.monitor !== 'g1');
    expect(parts.length).toBeGreaterThan(3);
    // the window's row is the skeleton: much smaller than the state
    expect(Number(row.bytes)).toBeLessThan(json.length / 2);
    expect(Number(row.bytes) + parts.reduce((a, p) => a + Number(p.bytes), 0)).toBeGreaterThanOrEqual(json.length);
    // the next window with the same histories writes its row only
    await ms.saveCheckpoint('g1', { seq: 2, windowEnd: '2026-03-02T10:05:00.000Z', state: json });
    expect(ms.lastCheckpointWrite('g1')).toMatchObject({ seq: 2, partBytes: 0 });
    expect((await rows('g1')).filter((r) => r.monitor !== 'g1').length).toBe(parts.length);
    // the same instance reads it back exactly (the parts' text from memory), and a new process
    // (another leader) from the store
    expect(await ms.loadCheckpoint('g1')).toEqual({ seq: 2, windowEnd: '2026-03-02T10:05:00.000Z', state: json });
    const cp = await new MonitorStore(store).loadCheckpoint('g1');
    expect(cp).toEqual({ seq: 2, windowEnd: '2026-03-02T10:05:00.000Z', state: json });
  });

  it('loads a checkpoint written before the parts existed (the whole state in its row) unchanged, and goes on', async () => {
    // as every earlier release wrote it
    await store.client.insert({
      table: store.t('monitor_checkpoints'),
      values: [{ monitor: 'g-old', seq: 41, window_end: chTime('2026-03-02T10:00:00.000Z'), state: json }],
      format: 'JSONEachRow',
    });
    const ms = new MonitorStore(store);
    const cp = await ms.loadCheckpoint('g-old');
    expect(cp).toEqual({ seq: 41, windowEnd: '2026-03-02T10:00:00.000Z', state: json });
    await ms.saveCheckpoint('g-old', { seq: 42, windowEnd: '2026-03-02T10:00:30.000Z', state: cp!.state });
    // the next window's checkpoint is written the new way
    const [latest] = await store.query<{ state: string }>(`SELECT state FROM ${store.t('monitor_checkpoints')} WHERE monitor = 'g-old' ORDER BY seq DESC LIMIT 1`);
    expect(partRefs(latest.state).length).toBeGreaterThan(3);
    expect((await new MonitorStore(store).loadCheckpoint('g-old'))?.state).toBe(json);
  });

  it('deletes the parts no checkpoint references after the grace, never the latest checkpoint\'s', async () => {
    const ms = new MonitorStore(store);
    const big = (tag: string) => Array.from({ length: 60 }, (_, i) => ({ key: i, tag, req: [i, i + 1, i + 2] }));
    // `kept` stays the same from the first checkpoint to the last; `moving` changes at seq 1, 10 and the last
    const state = (moving: string) => JSON.stringify({ monitor: { scopes: { '*': { blocks: big('kept') } }, sets: { x: { blocks: big(moving) } } }, log: {} });
    await ms.saveCheckpoint('g-gc', { seq: 1, windowEnd: '2026-03-02T00:00:30.000Z', state: state('a') });
    await ms.saveCheckpoint('g-gc', { seq: 10, windowEnd: '2026-03-02T00:05:00.000Z', state: state('b') });
    // within the grace nothing is deleted
    expect((await rows('g-gc')).filter((r) => r.monitor !== 'g-gc').length).toBe(3);
    const last = PART_GRACE_SEQ + 20;
    await ms.saveCheckpoint('g-gc', { seq: last, windowEnd: '2026-03-02T01:00:00.000Z', state: state('c') });
    // 'a' and 'b' were first written more than the grace before the latest checkpoint and it does not reference them
    const left = (await rows('g-gc')).filter((r) => r.monitor !== 'g-gc');
    expect(left.map((r) => Number(r.seq)).sort((x, y) => x - y)).toEqual([1, last]);
    expect((await new MonitorStore(store).loadCheckpoint('g-gc'))?.state).toBe(state('c'));
    // another monitor's parts are untouched
    expect((await rows('g1')).filter((r) => r.monitor !== 'g1').length).toBeGreaterThan(3);
  });

  it('names a missing part instead of loading something else', async () => {
    const ms = new MonitorStore(store);
    await ms.saveCheckpoint('g-miss', { seq: 1, windowEnd: '2026-03-02T00:00:30.000Z', state: json });
    await store.client.command({ query: `DELETE FROM ${store.t('monitor_checkpoints')} WHERE startsWith(monitor, 'g-miss/checkpoint-part/')` });
    await expect(new MonitorStore(store).loadCheckpoint('g-miss')).rejects.toThrow(/references a part that is not stored/);
    // the instance that wrote them (and keeps their text) checks that they are still stored
    await expect(ms.loadCheckpoint('g-miss')).rejects.toThrow(/references a part that is not stored/);
  });
});
