/** The embedded ClickHouse engine (chdb) through @clickhouse/client: migrations, inserts, parameters, views. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, aggToken, aggregateRows, dataError, type RequestRow } from '../../src/store/store.js';
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
      expect.arrayContaining(['requests', 'coverage_5m', 'coverage_clusters', 'ingest_progress', 'schema_migrations']),
    );
    // aggregates are written by evalgap with the raw rows' progress marks, not by a view
    expect(tables.map((t) => t.name)).not.toContain('coverage_5m_mv');
  });

  it('inserts rows, binds parameters, and keeps aggregates equal to the raw rows', async () => {
    const rows = Array.from({ length: 40 }, (_, i) => row(i));
    await store.insertRequests(rows, 't:0:0-39');
    await store.insertAggregates(aggregateRows(rows), aggToken('t', 0, -1n, 39n));
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

  it('makes a retried insert with the same token a no-op, in the table and in the aggregates', async () => {
    const rows = Array.from({ length: 5 }, (_, i) => row(100 + i, { kafka_partition: 3 }));
    await store.insertRequests(rows, 't:3:100-104');
    await store.insertRequests(rows, 't:3:100-104');
    await store.insertAggregates(aggregateRows(rows), aggToken('t', 3, 99n, 104n));
    await store.insertAggregates(aggregateRows(rows), aggToken('t', 3, 99n, 104n));
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
  const totals = async (topic: string, partition: number) => {
    const [raw] = await store.query<{ n: string; u: string }>(
      `SELECT count() n, countIf(covered = 0) u FROM ${store.t('requests')} WHERE kafka_topic = {t:String} AND kafka_partition = {p:UInt32}`,
      { t: topic, p: partition },
    );
    return raw;
  };
  const aggTotal = async () =>
    (await store.query<{ n: string }>(`SELECT toString(sum(requests)) n FROM ${store.t('coverage_5m')}`))[0].n;

  it('repairs a partition after a crash at each step: raw rows past the mark deleted, missing aggregates recomputed once', async () => {
    const T = 'crash';
    const before = BigInt(await aggTotal());
    // slice 1 completed: raw, raw mark, aggregates, agg mark
    const s1 = Array.from({ length: 10 }, (_, i) => row(i, { kafka_topic: T, kafka_partition: 1, kafka_offset: String(i) }));
    await store.insertRequests(s1, 'raw:1');
    await store.setProgress(T, 1, 'raw', 9n);
    await store.insertAggregates(aggregateRows(s1), aggToken(T, 1, -1n, 9n));
    await store.setProgress(T, 1, 'agg', 9n);
    // slice 2: raw rows landed, crash before the raw mark (spanning two days: one insert)
    const s2 = Array.from({ length: 6 }, (_, i) =>
      row(10 + i, { kafka_topic: T, kafka_partition: 1, kafka_offset: String(10 + i), ts: new Date(Date.UTC(2026, 10, 20 + (i % 2), 1)).toISOString() }),
    );
    await store.insertRequests(s2, 'raw:2');
    let r = await store.repairPartition(T, 1);
    expect(r).toMatchObject({ raw: 9n, agg: 9n, deleted: 6, aggregated: false });
    expect((await totals(T, 1)).n).toBe('10');
    // the same offsets consumed again under a new token, raw mark set, crash before the aggregates
    await store.insertRequests(s2, 'raw:2-again');
    await store.setProgress(T, 1, 'raw', 15n);
    r = await store.repairPartition(T, 1);
    expect(r).toMatchObject({ raw: 15n, agg: 15n, deleted: 0, aggregated: true });
    expect(BigInt(await aggTotal()) - before).toBe(16n);
    // slice 3: aggregates inserted, crash before the agg mark: the repair's insert is a no-op
    const s3 = Array.from({ length: 4 }, (_, i) => row(16 + i, { kafka_topic: T, kafka_partition: 1, kafka_offset: String(16 + i) }));
    await store.insertRequests(s3, 'raw:3');
    await store.setProgress(T, 1, 'raw', 19n);
    await store.insertAggregates(aggregateRows(s3), aggToken(T, 1, 15n, 19n));
    r = await store.repairPartition(T, 1);
    expect(r).toMatchObject({ raw: 19n, agg: 19n, aggregated: true });
    expect(BigInt(await aggTotal()) - before).toBe(20n);
    expect((await totals(T, 1)).n).toBe('20');
    // nothing to do the next time
    expect(await store.repairPartition(T, 1)).toMatchObject({ deleted: 0, aggregated: false });
  });

  it('keeps per-version aggregates equal to the raw rows, written or repaired (migration 14)', async () => {
    const T = 'ver';
    const rows = Array.from({ length: 30 }, (_, i) => row(i, { kafka_topic: T, kafka_offset: String(i), version: ['v1', 'v2', ''][i % 3] }));
    // offsets 0..14 written with their aggregates; 15..29 raw only, as a crash before the aggregates leaves them
    await store.insertRequests(rows.slice(0, 15), `${T}:0:0-14`);
    await store.setProgress(T, 0, 'raw', 14n);
    await store.insertAggregates(aggregateRows(rows.slice(0, 15)), aggToken(T, 0, -1n, 14n));
    await store.setProgress(T, 0, 'agg', 14n);
    await store.insertRequests(rows.slice(15), `${T}:0:15-29`);
    await store.setProgress(T, 0, 'raw', 29n);
    expect(await store.repairPartition(T, 0)).toMatchObject({ aggregated: true });
    const per = (sql: string) => store.query<{ version: string; n: string; e: string }>(sql);
    const raw = await per(
      `SELECT version, toString(count()) AS n, toString(countIf(escalated = 1)) AS e FROM ${store.t('requests')}
       WHERE kafka_topic = 'ver' GROUP BY version ORDER BY version`,
    );
    const agg = await per(
      `SELECT version, toString(sum(requests)) AS n, toString(sum(escalated)) AS e FROM ${store.t('coverage_5m')}
       WHERE bucket >= '2026-11-24 12:00:00' AND bucket < '2026-11-24 12:00:30' AND agent IN ('a', 'b')
       GROUP BY version ORDER BY version`,
    );
    expect(raw.map((r) => r.version)).toEqual(['', 'v1', 'v2']);
    expect(raw.every((r) => r.n === '10')).toBe(true);
    // the bucket also holds the earlier tests' rows (version ''): compare the named versions exactly
    expect(agg.filter((r) => r.version !== '')).toEqual(raw.filter((r) => r.version !== ''));
  });

  it('tells data errors (a lone surrogate) from outages', async () => {
    const bad = row(500, { kafka_topic: 'bad', query: 'cut \ud83d' });
    const err = await store.insertRequests([bad], 'bad:1').then(
      () => null,
      (e: unknown) => e,
    );
    expect(dataError(err)).toEqual({ code: 25, type: 'CANNOT_PARSE_ESCAPE_SEQUENCE' });
    expect((await totals('bad', 0)).n).toBe('0');
    expect(dataError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBeNull();
    expect(dataError(Object.assign(new Error('Too many parts'), { code: '252' }))).toBeNull();
  });

  it('clamps the TTL so that dates after 2106 cannot wrap to an early expiry', async () => {
    const [t] = await store.query<{ q: string }>(
      `SELECT create_table_query AS q FROM system.tables WHERE database = {db:String} AND name = 'requests'`,
      { db: store.database },
    );
    expect(t.q).toMatch(/TTL toDateTime\(least\(ts/);
  });
});
