/** Upgrading a store written by the materialized view (migration 1) to evalgap-written aggregates (migration 2). */
import { describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../src/store/migrations.js';
import { Store, aggToken, aggregateRows, type RequestRow } from '../../src/store/store.js';
import { testConfig, tmpDir } from '../helpers/fixtures.js';

function row(i: number, partition: number): RequestRow {
  return {
    request_id: `r-${partition}-${i}`,
    ts: new Date(Date.UTC(2026, 10, 24, 12, 0, i)).toISOString(),
    agent: 'a',
    session_id: '',
    turn: 0,
    query: `q ${i}`,
    query_redacted: 0,
    truncated: 0,
    cluster: i % 3,
    similarity: 0.8,
    coverage: 0.6,
    covered: i % 4 === 0 ? 0 : 1,
    escalated: 0,
    outcome: 'ok',
    latency_ms: null,
    cost_usd: null,
    tools: [],
    metadata: '{}',
    model_version: 'cm-000000000000',
    kafka_topic: 't',
    kafka_partition: partition,
    kafka_offset: String(i),
  };
}

describe('migration 2 on an existing store', () => {
  it('seeds the progress marks from the stored rows, drops the view, and keeps aggregates equal to raw rows', async () => {
    const dir = tmpDir();
    const cfg = testConfig(dir).clickhouse;
    const old = await Store.open(cfg, { migrate: false });
    await old.migrate(MIGRATIONS.filter((m) => m.version === 1));
    const strip = (r: RequestRow) => {
      const { repaired: _x, ...rest } = r;
      return rest as RequestRow;
    };
    await old.insertRequests(Array.from({ length: 12 }, (_, i) => strip(row(i, 0))), 'old:0');
    await old.insertRequests(Array.from({ length: 5 }, (_, i) => strip(row(i, 2))), 'old:2');
    await old.close();

    const store = await Store.open(cfg);
    try {
      expect(await store.schemaVersion()).toBeGreaterThanOrEqual(2);
      expect(await store.progress('t', 0)).toEqual({ raw: 11n, agg: 11n });
      expect(await store.progress('t', 2)).toEqual({ raw: 4n, agg: 4n });
      expect(await store.progress('t', 1)).toEqual({ raw: -1n, agg: -1n });
      expect(await store.repairPartition('t', 0)).toMatchObject({ deleted: 0, aggregated: false });
      // new rows after the upgrade: written by evalgap, not by a view (which would count them twice)
      const more = Array.from({ length: 3 }, (_, i) => row(12 + i, 0));
      await store.insertRequests(more, 'new:0');
      await store.insertAggregates(aggregateRows(more), aggToken('t', 0, 11n, 14n));
      const [raw] = await store.query<{ n: string }>(`SELECT toString(count()) n FROM ${store.t('requests')}`);
      const [agg] = await store.query<{ n: string }>(`SELECT toString(sum(requests)) n FROM ${store.t('coverage_5m')}`);
      expect(raw.n).toBe('20');
      expect(agg.n).toBe('20');
    } finally {
      await store.close();
    }
  });
});
