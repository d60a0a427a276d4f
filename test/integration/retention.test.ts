/** Retention: a changed EVALGAP_RETENTION_DAYS reaches existing tables (own file: one chdb folder per process). */
import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { testConfig, tmpDir } from '../helpers/fixtures.js';

describe('Store retention', () => {
  it('applies a changed retention to the tables at start', async () => {
    const dir = tmpDir();
    const a = await Store.open(testConfig(dir).clickhouse);
    const ttl = async (s: Store) =>
      (await s.query<{ q: string }>(`SELECT create_table_query AS q FROM system.tables WHERE database = 'evalgap' AND name = 'requests'`))[0].q;
    expect(await ttl(a)).toMatch(/TTL .*(INTERVAL 90 DAY|toIntervalDay\(90\))/);
    await a.close();
    const b = await Store.open(testConfig(dir, { EVALGAP_RETENTION_DAYS: '30' }).clickhouse);
    expect(await ttl(b)).toMatch(/TTL .*toIntervalDay\(30\)/);
    await b.close();
  });
});
