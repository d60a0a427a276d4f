/**
 * The embedded engine keeps a query's settings in its session. An insert without a deduplication
 * token made after one with a token must not inherit it (it would be silently dropped).
 */
import path from 'node:path';
import { expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { testConfig, tmpDir } from '../helpers/fixtures.js';

it('an insert without a token after one with a token is stored', async () => {
  const store = await Store.open(testConfig(path.join(tmpDir(), 'chdb')).clickhouse);
  try {
    const c = store.client;
    await c.command({ query: `CREATE TABLE ${store.t('tok_test')} (x UInt32) ENGINE = MergeTree ORDER BY x SETTINGS non_replicated_deduplication_window = 100` });
    await c.insert({ table: store.t('tok_test'), values: [{ x: 1 }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'tok' } });
    await c.insert({ table: store.t('tok_test'), values: [{ x: 2 }], format: 'JSONEachRow' });
    await c.insert({ table: store.t('tok_test'), values: [{ x: 3 }], format: 'JSONEachRow' });
    // the same token again is still a no-op
    await c.insert({ table: store.t('tok_test'), values: [{ x: 1 }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'tok' } });
    const rows = await store.query<{ x: number }>(`SELECT x FROM ${store.t('tok_test')} ORDER BY x`);
    expect(rows.map((r) => Number(r.x))).toEqual([1, 2, 3]);
  } finally {
    await store.close();
  }
});
