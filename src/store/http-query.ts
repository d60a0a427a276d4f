/**
 * Read-only SQL over HTTP, so that `evalgap sql`, `evalgap gaps` and `evalgap export-gaps` work
 * while a running `evalgap run` holds the embedded engine's data folder (one process per folder).
 *
 * Server side: `POST /query` on the metrics port (bound to 127.0.0.1), body
 * `{"query": "SELECT …", "params": {"name": value}}` (zod-validated, ≤ 1 MiB), answered with
 * `{"rows": [...]}` or `{"error": "..."}`. Queries run on a connection of their own with
 * `readonly = 1`: ClickHouse refuses anything that writes or changes settings. (chdb applies
 * per-query settings to its session, so `readonly` must never be set on the connection that
 * ingests.) The running instance advertises its port in `<data folder>/evalgap-run.json`.
 *
 * Client side: `RemoteReader` is a `StoreReader` that sends queries there.
 */
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { z } from 'zod';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Config } from '../config/index.js';
import { createStoreClient } from './client.js';
import type { StoreReader } from './gaps.js';

const Body = z.object({
  query: z.string().min(1).max(1_000_000),
  params: z.record(z.unknown()).default({}),
});

const RunFile = z.object({ pid: z.number().int(), port: z.number().int().min(1).max(65535), database: z.string(), startedAt: z.string() });
export type RunInfo = z.infer<typeof RunFile>;

export const RUN_FILE = 'evalgap-run.json';

export interface QueryEndpoint {
  /** Handle the request if it is `POST /query`; returns false for other routes. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean>;
  close(): Promise<void>;
}

export function queryEndpoint(cfg: Config['clickhouse']): QueryEndpoint {
  let client: Promise<ClickHouseClient> | null = null;
  const reply = (res: http.ServerResponse, status: number, body: unknown) => {
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(body));
  };
  return {
    async handle(req, res) {
      if ((req.url ?? '').split('?')[0] !== '/query') return false;
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST');
        reply(res, 405, { error: 'POST a JSON body {"query": "...", "params": {...}}' });
        return true;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req) {
        size += (c as Buffer).length;
        if (size > 1_048_576) {
          reply(res, 413, { error: 'body larger than 1 MiB' });
          return true;
        }
        chunks.push(c as Buffer);
      }
      let body: z.infer<typeof Body>;
      try {
        body = Body.parse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (e) {
        reply(res, 400, { error: `bad request: ${e instanceof z.ZodError ? e.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : (e as Error).message}` });
        return true;
      }
      try {
        client ??= createStoreClient(cfg).then((s) => s.client);
        const c = await client;
        const rs = await c.query({
          query: body.query,
          query_params: body.params,
          format: 'JSONEachRow',
          clickhouse_settings: { readonly: '1' },
        });
        reply(res, 200, { rows: await rs.json() });
      } catch (e) {
        reply(res, 400, { error: (e as Error).message });
      }
      return true;
    },
    async close() {
      if (client) await (await client).close().catch(() => undefined);
    },
  };
}

/** Write `<data folder>/evalgap-run.json` naming this process and port; returns its remover. */
export function advertiseQueryEndpoint(cfg: Config['clickhouse'], port: number): () => void {
  if (cfg.url || port <= 0) return () => undefined;
  const file = path.join(cfg.path, RUN_FILE);
  const info: RunInfo = { pid: process.pid, port, database: cfg.database, startedAt: new Date().toISOString() };
  fs.writeFileSync(file, JSON.stringify(info) + '\n');
  return () => {
    try {
      const cur = RunFile.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
      if (cur.pid === process.pid) fs.unlinkSync(file);
    } catch {
      /* already gone */
    }
  };
}

/** The running instance advertised in a data folder, if its process is alive. */
export function findRunningInstance(dataDir: string): RunInfo | null {
  try {
    const info = RunFile.parse(JSON.parse(fs.readFileSync(path.join(dataDir, RUN_FILE), 'utf8')));
    process.kill(info.pid, 0);
    return info;
  } catch {
    return null;
  }
}

export class RemoteQueryError extends Error {}

/** A read-only `StoreReader` over a running instance's `POST /query`. */
export class RemoteReader implements StoreReader {
  readonly url: string;
  readonly location: string;
  constructor(
    readonly port: number,
    readonly database: string,
    readonly pid?: number,
  ) {
    this.url = `http://127.0.0.1:${port}/query`;
    this.location = `evalgap run${pid ? ` (pid ${pid})` : ''} at ${this.url}`;
  }
  t(table: string): string {
    return `${this.database}.${table}`;
  }
  async query<T>(sql: string, params: Record<string, unknown> = {}): Promise<T[]> {
    let res: Response;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: sql, params }),
      });
    } catch (e) {
      throw new RemoteQueryError(`could not reach ${this.location}: ${(e as Error).message}`);
    }
    const body = (await res.json().catch(() => ({}))) as { rows?: T[]; error?: string };
    if (!res.ok || !body.rows) throw new RemoteQueryError(body.error ?? `${this.url} answered ${res.status}`);
    return body.rows;
  }
}
