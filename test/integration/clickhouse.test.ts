/** The embedded ClickHouse engine (chdb) through @clickhouse/client: migrations, inserts, parameters, views. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, type RequestRow } from '../../src/store/store.js';
import { MIGRATIONS } from '../../src/store/migrations.js';
import { testConfig, tmpDir } from '../helpers/fixtures.js';

function row(i: number, over: Partial<RequestRow> = {}): RequestRow {
  return {
    request_id: `r-${i}`,
    ts: new Date(Date.UTC(2026, 10, 24, 12, 0, i)).toISOString(),
    agent: i % 2 ? 'a' : 'b',
    session_id: `s-${i}`,
    turn: i % 3,
    query: `text ${i} with 'quotes' and {braces}`,
    query_redacted: 0,
    truncated: 0,
    cluster: i % 3,
    similarity: 0.8,
    coverage: 0.6,
    covered: i % 4 === 0 ? 0 : 1,
    escalated: i % 5 === 0 ? 1 : 0,
    outcome: i % 5 === 0 ? 'escalated' : 'ok',
    latency_ms: 100 + i,
    cost_usd: null,
    tools: ['search'],
    metadata: '{}',
    model_version: 'cm-000000000000',
    kafka_topic: 't',
    kafka_partition: 0,
    kafka_offset: String(i),
    ...over,
  };
}

describe('Store on the embedded engine', () => {
  let store: Store;
  beforeAll(async () => {
    store = await Store.open(testConfig(tmpDir()).clickhouse);
  });
  afterAll(async () => store?.close());

  it('is the embedded engine and applies the schema once', async () => {
    expect(store.kind).toBe('embedded');
    expect(await store.schemaVersion()).toBe(MIGRATIONS[MIGRATIONS.length - 1].version);
    expect(await store.migrate()).toEqual([]); // idempotent
    const tables = await store.query<{ name: string }>(
      'SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name',
      { db: store.database },
    );
    expect(tables.map((t) => t.name)).toEqual(
      expect.arrayContaining(['requests', 'coverage_5m', 'coverage_5m_mv', 'coverage_clusters', 'schema_migrations']),
    );
  });

  it('inserts rows, binds parameters, and keeps aggregates equal to the raw rows', async () => {
    const rows = Array.from({ length: 40 }, (_, i) => row(i));
    await store.insertRequests(rows, 't:0:0-39');
    const hit = await store.query<{ request_id: string; query: string }>(
      `SELECT request_id, query FROM ${store.t('requests')} WHERE query = {q:String}`,
      { q: "text 7 with 'quotes' and {braces}" },
    );
    expect(hit).toEqual([{ request_id: 'r-7', query: "text 7 with 'quotes' and {braces}" }]);
    const raw = await store.query<{ n: string; u: string; e: string }>(
      `SELECT count() n, countIf(covered = 0) u, countIf(escalated = 1) e FROM ${store.t('requests')}`,
    );
    const agg = await store.query<{ n: string; u: string; e: string }>(
      `SELECT sum(requests) n, sum(uncovered) u, sum(escalated) e FROM ${store.t('coverage_5m')}`,
    );
    expect(raw).toEqual([{ n: '40', u: '10', e: '8' }]);
    expect(agg).toEqual(raw);
  });

  it('makes a retried insert with the same token a no-op, in the table and in the view', async () => {
    const rows = Array.from({ length: 5 }, (_, i) => row(100 + i, { kafka_partition: 3 }));
    await store.insertRequests(rows, 't:3:100-104');
    await store.insertRequests(rows, 't:3:100-104');
    const [raw] = await store.query<{ n: string }>(`SELECT count() n FROM ${store.t('requests')} WHERE kafka_partition = 3`);
    const [agg] = await store.query<{ n: string }>(`SELECT sum(requests) n FROM ${store.t('coverage_5m')}`);
    expect(raw.n).toBe('5');
    expect(agg.n).toBe('45');
  });

  it('reports the stored Kafka high watermark per partition', async () => {
    expect(await store.storedHighWatermark('t', 0)).toBe(39n);
    expect(await store.storedHighWatermark('t', 3)).toBe(104n);
    expect(await store.storedHighWatermark('t', 9)).toBe(-1n);
    expect(await store.storedHighWatermark('other', 0)).toBe(-1n);
  });
});
