/**
 * Read-only SQL from outside (`POST /query`, `evalgap sql`): checked, limited and cancellable.
 *
 * Every query is first checked by the engine's parser (src/store/query-guard.ts), then runs on a
 * connection of its own whose every statement carries the limits and `readonly` (last, so that
 * nothing after it may change a setting; the embedded engine keeps settings in its session, so the
 * ingesting connection never sees them):
 * - `max_execution_time` (EVALGAP_QUERY_TIMEOUT_SECONDS), `max_memory_usage`
 *   (EVALGAP_QUERY_MAX_MEMORY_BYTES), `max_result_rows` / `max_result_bytes`
 *   (EVALGAP_QUERY_MAX_RESULT_ROWS / _BYTES), each with overflow mode `throw`;
 * - `readonly = 1` on the embedded engine; `readonly = 2` on a server, whose HTTP interface takes
 *   the client's settings with each request (the check refuses SET and SETTINGS, so the limits
 *   cannot be changed from a query either way).
 *
 * Cancellation. The embedded engine cannot interrupt a running call from the calling side (an
 * abort only settles the promise early while the engine keeps computing), so each query carries a
 * marker comment and `cancel()` finds it in `system.processes` and runs `KILL QUERY … ASYNC` on a
 * second connection, again until the query has ended. On a server the query has a `query_id`, the
 * request is aborted and the server cancels it (`cancel_http_readonly_queries_on_client_close`).
 */
import { randomUUID } from 'node:crypto';
import type { ClickHouseClient, ClickHouseSettings } from '@clickhouse/client';
import type { Config } from '../config/index.js';
import { createStoreClient, type StoreKind } from './client.js';
import { checkReadOnly } from './query-guard.js';

export type QueryLimits = Config['query'];

export function readOnlySettings(limits: QueryLimits, kind: StoreKind): ClickHouseSettings {
  return {
    max_execution_time: limits.timeoutSeconds,
    timeout_overflow_mode: 'throw',
    max_memory_usage: String(limits.maxMemoryBytes),
    max_result_rows: String(limits.maxResultRows),
    max_result_bytes: String(limits.maxResultBytes),
    result_overflow_mode: 'throw',
    ...(kind === 'server' ? { cancel_http_readonly_queries_on_client_close: 1, readonly: '2' } : { readonly: '1' }),
  };
}

/** One query in flight: its rows, and how to stop it. */
export interface RunningQuery<T> {
  rows: Promise<T[]>;
  /** stop it (KILL QUERY on the embedded engine); resolves when it has ended */
  cancel(): Promise<void>;
}

export class ReadOnlyQueries {
  private constructor(
    private readonly exec: ClickHouseClient,
    /** the embedded engine's second connection, for KILL QUERY (null on a server) */
    private readonly control: ClickHouseClient | null,
    readonly location: string,
  ) {}

  static async open(cfg: Config['clickhouse'], limits: QueryLimits): Promise<ReadOnlyQueries> {
    const kind: StoreKind = cfg.url ? 'server' : 'embedded';
    const exec = await createStoreClient(cfg, readOnlySettings(limits, kind));
    const control = kind === 'embedded' ? (await createStoreClient(cfg)).client : null;
    return new ReadOnlyQueries(exec.client, control, exec.location);
  }

  /** Check `sql` (QueryRefused when it is not one read-only SELECT), then run it. */
  start<T>(sql: string, params: Record<string, unknown> = {}): RunningQuery<T> {
    const id = randomUUID();
    const abort = new AbortController();
    let settled = false;
    const rows = (async () => {
      // parsing only: on the embedded engine's second connection, free of the result limits
      const canonical = await checkReadOnly(this.control ?? this.exec, sql, params);
      if (abort.signal.aborted) throw new Error('query cancelled');
      const rs = await this.exec.query({
        // the marker finds this query in system.processes (chdb has no query_id of its own)
        query: `/* evalgap-query:${id} */ ${canonical}`,
        query_params: params,
        query_id: id,
        format: 'JSONEachRow',
        // a server cancels a read-only query whose request goes away; the embedded engine is
        // interrupted by KILL QUERY instead (an abort there would only stop waiting for it)
        ...(this.control ? {} : { abort_signal: abort.signal }),
      });
      return rs.json<T>();
    })().finally(() => {
      settled = true;
    });
    const cancel = async () => {
      abort.abort();
      if (!this.control) return void (await rows.catch(() => undefined));
      // the query may not be registered yet, or the kill may land between two blocks: repeat
      while (!settled) {
        await this.kill(id).catch(() => undefined);
        await Promise.race([rows.catch(() => undefined), new Promise((r) => setTimeout(r, 200))]);
      }
    };
    return { rows, cancel };
  }

  /** Run to the end (for callers that never cancel). */
  query<T>(sql: string, params: Record<string, unknown> = {}): Promise<T[]> {
    return this.start<T>(sql, params).rows;
  }

  private async kill(id: string): Promise<void> {
    const c = this.control!;
    // no query parameters here: the engine runs parameterized queries one at a time, and the
    // query to be killed may be one of them
    const rs = await c.query({
      query: `SELECT query_id FROM system.processes WHERE position(query, 'evalgap-query:${id}') > 0 AND query_id != queryID()`,
      format: 'JSONEachRow',
    });
    const ids = (await rs.json<{ query_id: string }>()).map((r) => r.query_id).filter((q) => /^[\w-]{1,100}$/.test(q));
    if (!ids.length) return;
    await c.command({ query: `KILL QUERY WHERE query_id IN (${ids.map((q) => `'${q}'`).join(', ')}) ASYNC` });
  }

  async close(): Promise<void> {
    await this.exec.close().catch(() => undefined);
    await this.control?.close().catch(() => undefined);
  }
}
