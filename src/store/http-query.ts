/**
 * Read-only SQL over HTTP, so that `evalgap sql`, `evalgap gaps` and `evalgap export-gaps` work
 * while a running `evalgap run` holds the embedded engine's data folder (one process per folder).
 * Only for the embedded engine: with a ClickHouse server every reader connects to the server.
 *
 * Server side: `POST /query` on the metrics port (bound to 127.0.0.1), body
 * `{"query": "SELECT …", "params": {"name": value}}` (zod-validated, ≤ 1 MiB), answered with
 * `{"rows": [...]}` or `{"error": "..."}`. A request is served only when
 * - its `Host` is the address and port the socket is bound to (a DNS-rebinding page sends its own
 *   name), it has no `Origin` header and no `Sec-Fetch-Site` other than `none` (browsers send
 *   these; evalgap's own client does not);
 * - it carries `Authorization: Bearer <token>`, the per-instance secret written at start to
 *   `<data folder>/evalgap-query.token` (mode 0600), compared in constant time;
 * - its `Content-Type` is `application/json` (a page cannot send that without a CORS preflight,
 *   which is never answered).
 * The query is then checked and limited by src/store/read-only.ts; one runs at a time, up to
 * EVALGAP_QUERY_QUEUE more wait, further ones get 429. A query whose client goes away is killed.
 * The running instance advertises its port in `<data folder>/evalgap-run.json`.
 *
 * Client side: `RemoteReader` is a `StoreReader` that sends queries there with the token.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { z } from 'zod';
import { browserRefusal } from '../config/http-guard.js';
import type { Config } from '../config/index.js';
import type { StoreReader } from './gaps.js';
import { ReadOnlyQueries, type QueryLimits, type RunningQuery } from './read-only.js';

const Body = z.object({
  query: z.string().min(1).max(1_000_000),
  params: z.record(z.unknown()).default({}),
});

const RunFile = z.object({ pid: z.number().int(), port: z.number().int().min(1).max(65535), database: z.string(), startedAt: z.string() });
export type RunInfo = z.infer<typeof RunFile>;

export const RUN_FILE = 'evalgap-run.json';
export const TOKEN_FILE = 'evalgap-query.token';

export interface QueryEndpoint {
  /** Handle the request if it is `/query`; returns false for other routes. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean>;
  /** the bearer token clients must send (written to the data folder by advertiseQueryEndpoint) */
  readonly token: string;
  /** Refuse new requests, cancel the running and waiting ones, close the connections. */
  close(): Promise<void>;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export function queryEndpoint(cfg: Config['clickhouse'], limits: QueryLimits): QueryEndpoint {
  const token = randomBytes(32).toString('base64url');
  const want = digest(token);
  let queries: Promise<ReadOnlyQueries> | null = null;
  let closed = false;
  /** a request holds the one query slot (from its turn until its answer) */
  let busy = false;
  let running: RunningQuery<unknown> | null = null;
  const waiting: { go: () => void; stop: (why: string) => void }[] = [];
  const inFlight = new Set<http.ServerResponse>();
  /** answer once (a response already sent or a client gone is left alone); true: the request is handled */
  const reply = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): true => {
    if (res.headersSent || res.destroyed) return true;
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.setHeader('cache-control', 'no-store');
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    res.end(JSON.stringify(body));
    return true;
  };
  /** one query at a time; resolves when it is this request's turn, rejects when refused */
  const acquire = (res: http.ServerResponse): Promise<void> => {
    if (!busy) {
      busy = true;
      return Promise.resolve();
    }
    if (waiting.length >= limits.queue) return Promise.reject(new Busy());
    return new Promise((resolve, reject) => {
      const w = { go: resolve, stop: (why: string) => reject(new Error(why)) };
      waiting.push(w);
      res.once('close', () => {
        const i = waiting.indexOf(w);
        if (i >= 0) {
          waiting.splice(i, 1);
          reject(new Error('client went away'));
        }
      });
    });
  };
  /** the turn passes to the next waiting request (the slot stays taken), or the slot is freed */
  const release = () => {
    running = null;
    const next = waiting.shift();
    if (next) next.go();
    else busy = false;
  };
  return {
    token,
    async handle(req, res) {
      if (cfg.url || (req.url ?? '').split('?')[0] !== '/query') return false;
      if (closed) return reply(res, 503, { error: 'evalgap run is stopping' });
      // browsers and DNS-rebinding pages: refused before anything else is read
      const refused = browserRefusal(req);
      if (refused) return reply(res, 403, { error: refused });
      if (req.method !== 'POST') {
        return reply(res, 405, { error: 'POST a JSON body {"query": "...", "params": {...}}' }, { allow: 'POST' });
      }
      const auth = /^Bearer (\S+)$/i.exec(req.headers.authorization ?? '');
      if (!auth || !timingSafeEqual(digest(auth[1]), want)) {
        return reply(res, 401, { error: `a bearer token is required: the content of ${path.join(cfg.path, TOKEN_FILE)}` }, { 'www-authenticate': 'Bearer realm="evalgap"' });
      }
      const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      if (type !== 'application/json') return reply(res, 415, { error: 'the body must be JSON (Content-Type: application/json)' });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req) {
        size += (c as Buffer).length;
        if (size > 1_048_576) return reply(res, 413, { error: 'body larger than 1 MiB' });
        chunks.push(c as Buffer);
      }
      let body: z.infer<typeof Body>;
      try {
        body = Body.parse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (e) {
        const msg = e instanceof z.ZodError ? e.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : (e as Error).message;
        return reply(res, 400, { error: `bad request: ${msg}` });
      }
      try {
        await acquire(res);
      } catch (e) {
        if (e instanceof Busy) {
          reply(res, 429, { error: `busy: one query runs and ${limits.queue} wait (EVALGAP_QUERY_QUEUE); try again` }, { 'retry-after': '1' });
        } else reply(res, 503, { error: (e as Error).message });
        return true;
      }
      if (closed || res.destroyed) {
        release();
        return reply(res, 503, { error: 'evalgap run is stopping' });
      }
      inFlight.add(res);
      try {
        queries ??= ReadOnlyQueries.open(cfg, limits).catch((e) => {
          queries = null;
          throw e;
        });
        const q = (await queries).start<unknown>(body.query, body.params);
        running = q;
        // the client went away before the answer: the query is killed, not left to run
        const onClose = () => {
          if (!res.writableFinished) void q.cancel();
        };
        res.once('close', onClose);
        if (res.destroyed) onClose();
        const rows = await q.rows;
        res.off('close', onClose);
        reply(res, 200, { rows });
      } catch (e) {
        reply(res, closed ? 503 : 400, { error: closed ? 'evalgap run is stopping' : (e as Error).message });
      } finally {
        inFlight.delete(res);
        release();
      }
      return true;
    },
    async close() {
      closed = true;
      for (const w of waiting.splice(0)) w.stop('evalgap run is stopping');
      const r = running as RunningQuery<unknown> | null;
      // KILL QUERY lands within a block; the stop deadline is not left to a query in any case
      if (r) await Promise.race([r.cancel(), new Promise((t) => setTimeout(t, 5000).unref())]);
      for (const res of inFlight) reply(res, 503, { error: 'evalgap run is stopping' });
      if (queries) await (await queries).close();
    },
  };
}

class Busy extends Error {}

/**
 * Write `<data folder>/evalgap-run.json` naming this process and port, and the endpoint's token to
 * `<data folder>/evalgap-query.token` (mode 0600, readable by this user only); returns their remover.
 */
export function advertiseQueryEndpoint(cfg: Config['clickhouse'], port: number, token: string): () => void {
  if (cfg.url || port <= 0) return () => undefined;
  const file = path.join(cfg.path, RUN_FILE);
  const tokenFile = path.join(cfg.path, TOKEN_FILE);
  const info: RunInfo = { pid: process.pid, port, database: cfg.database, startedAt: new Date().toISOString() };
  writePrivate(tokenFile, token + '\n');
  fs.writeFileSync(file, JSON.stringify(info) + '\n');
  return () => {
    try {
      const cur = RunFile.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
      if (cur.pid === process.pid) fs.unlinkSync(file);
    } catch {
      /* already gone */
    }
    try {
      if (fs.readFileSync(tokenFile, 'utf8').trim() === token) fs.unlinkSync(tokenFile);
    } catch {
      /* already gone */
    }
  };
}

/** Create `file` with mode 0600 through a fresh name (never following a planted file or link), then rename it into place. */
function writePrivate(file: string, content: string): void {
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}`;
  try {
    fs.writeFileSync(tmp, content, { mode: 0o600, flag: 'wx' });
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** The token of the instance running on a data folder (UserError-worthy message when unreadable). */
export function readQueryToken(dataDir: string): string {
  const f = path.join(dataDir, TOKEN_FILE);
  try {
    return fs.readFileSync(f, 'utf8').trim();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new RemoteQueryError(
      code === 'EACCES'
        ? `cannot read the query token ${f}: run this as the user that runs evalgap run`
        : `cannot read the query token ${f} (${code ?? (e as Error).message}): evalgap run writes it at start`,
    );
  }
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
    private readonly token: string,
    readonly pid?: number,
  ) {
    this.url = `http://127.0.0.1:${port}/query`;
    this.location = `evalgap run${pid ? ` (pid ${pid})` : ''} at ${this.url}`;
  }
  t(table: string): string {
    return `${this.database}.${table}`;
  }
  /** the endpoint runs one query at a time: this client sends its own one after another */
  private tail: Promise<unknown> = Promise.resolve();
  query<T>(sql: string, params: Record<string, unknown> = {}): Promise<T[]> {
    const next = this.tail.then(() => this.send<T>(sql, params));
    this.tail = next.catch(() => undefined);
    return next;
  }
  private async send<T>(sql: string, params: Record<string, unknown>): Promise<T[]> {
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        res = await fetch(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
          body: JSON.stringify({ query: sql, params }),
        });
      } catch (e) {
        throw new RemoteQueryError(`could not reach ${this.location}: ${(e as Error).message}`);
      }
      const body = (await res.json().catch(() => ({}))) as { rows?: T[]; error?: string };
      // busy with other clients' queries: wait for a turn, a while
      if (res.status === 429 && attempt < 30) {
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * attempt)));
        continue;
      }
      if (!res.ok || !body.rows) throw new RemoteQueryError(body.error ?? `${this.url} answered ${res.status}`);
      return body.rows;
    }
  }
}
