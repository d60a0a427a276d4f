/**
 * One ClickHouse client API for both deployments: a server over HTTP when a URL is configured,
 * otherwise the embedded engine (chdb) through @clickhouse/client's `connection` option.
 * Settings whose defaults differ between chdb and a server are set explicitly here, so the
 * same SQL returns the same shapes from both.
 */
import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings } from '@clickhouse/client';
import fs from 'node:fs';
import tls from 'node:tls';
import type { Config } from '../config/index.js';

export const CLICKHOUSE_SETTINGS: ClickHouseSettings = {
  date_time_input_format: 'best_effort',
  date_time_output_format: 'simple',
  output_format_json_quote_64bit_integers: 1,
  output_format_json_quote_64bit_floats: 0,
  input_format_skip_unknown_fields: 0,
  deduplicate_blocks_in_dependent_materialized_views: 1,
  async_insert: 0,
  // The embedded engine keeps a query's settings in its session: without this default, an insert
  // made after one with a deduplication token would reuse that token and be silently dropped.
  insert_deduplication_token: '',
};

export type StoreKind = 'server' | 'embedded';

export interface StoreClient {
  client: ClickHouseClient;
  kind: StoreKind;
  /** Where the data lives: the server URL (without credentials) or the embedded data folder. */
  location: string;
}

/**
 * The client's TLS options from the PEM files (config validation makes sure they come with an
 * https:// URL, and a certificate with its key). A client certificate without a CA file: the
 * server's certificate is checked against Node's bundled root CAs, as https:// does without any
 * TLS option (the client takes a CA whenever it takes a certificate).
 */
export function tlsOptions(cfg: Pick<Config['clickhouse'], 'caCert' | 'cert' | 'key'>): { tls?: { ca_cert: Buffer; cert?: Buffer; key?: Buffer } } {
  if (cfg.cert && cfg.key) return { tls: { ca_cert: Buffer.from(cfg.caCert ?? tls.rootCertificates.join('\n')), cert: Buffer.from(cfg.cert), key: Buffer.from(cfg.key) } };
  if (cfg.caCert) return { tls: { ca_cert: Buffer.from(cfg.caCert) } };
  return {};
}

/** `extra`: settings every query of this client carries, after the common ones (e.g. read-only limits). */
export async function createStoreClient(cfg: Config['clickhouse'], extra: ClickHouseSettings = {}): Promise<StoreClient> {
  if (cfg.url) {
    const client = createClient({
      url: cfg.url,
      username: cfg.username,
      password: cfg.password,
      clickhouse_settings: { ...CLICKHOUSE_SETTINGS, ...extra },
      request_timeout: 60_000,
      // a failed request reaches the caller as an error, with its cause; the client's own warning
      // dump of it (stack and connection ids on stderr) would only repeat it
      log: { level: ClickHouseLogLevel.ERROR },
      ...tlsOptions(cfg),
    });
    const u = new URL(cfg.url);
    u.username = '';
    u.password = '';
    return { client, kind: 'server', location: u.toString() };
  }
  fs.mkdirSync(cfg.path, { recursive: true });
  const { createChdbConnection } = await import('chdb/connection');
  const client = createClient({
    connection: createChdbConnection({ path: cfg.path }) as never,
    clickhouse_settings: { ...CLICKHOUSE_SETTINGS, ...extra },
  });
  return { client, kind: 'embedded', location: cfg.path };
}
