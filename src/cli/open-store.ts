/**
 * Opening the store for a command that needs the data folder itself (it writes, or keeps the
 * engine open): the embedded engine binds one folder to one process, so when another process
 * holds it the user gets one line saying who, not the engine's lock error and a stack trace.
 */
import type { Config } from '../config/index.js';
import { findRunningInstance } from '../store/http-query.js';
import { Store } from '../store/store.js';

const LOCKED = /Cannot lock file|Failed to create connection for path|only one active data directory/i;

/**
 * Why the embedded data folder cannot be opened here, if that is the reason (null otherwise): a
 * running evalgap run that advertises itself there (before anything is tried: the engine prints
 * its raw lock error on stderr), or the engine's own lock error `e`.
 */
export function folderHeldMessage(cfg: Pick<Config, 'clickhouse'>, e?: unknown): string | null {
  if (cfg.clickhouse.url) return null;
  const run = findRunningInstance(cfg.clickhouse.path);
  const text = e === undefined ? '' : `${String((e as Error)?.message)} ${String((e as { cause?: Error })?.cause?.message ?? '')}`;
  if (!run && !LOCKED.test(text)) return null;
  const who = run ? `a running evalgap run (pid ${run.pid})` : 'another process (a running evalgap run?)';
  return (
    `the data folder ${cfg.clickhouse.path} is held by ${who}: the embedded engine serves one process per folder; ` +
    `stop it, or give every process the same ClickHouse server (EVALGAP_CLICKHOUSE_URL)`
  );
}

/** Store.open, with a held folder said in one line by `wrap` (the command's error class). */
export async function openOwnStore(cfg: Pick<Config, 'clickhouse'>, wrap: (message: string, cause?: unknown) => Error, opts: { migrate?: boolean } = {}): Promise<Store> {
  const held = folderHeldMessage(cfg);
  if (held) throw wrap(held);
  return Store.open(cfg.clickhouse, opts).catch((e: unknown) => {
    const m = folderHeldMessage(cfg, e);
    throw m ? wrap(m, e) : e;
  });
}
