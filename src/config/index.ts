/**
 * Configuration: every setting comes from an environment variable (EVALGAP_*) or a CLI flag,
 * validated with zod. Secrets (the ClickHouse password, the webhook secret) are never logged:
 * use `redactConfig` before printing a config.
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { z } from 'zod';

/** The package root: two levels up from src/config or dist/config. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const boolish = z
  .union([z.boolean(), z.enum(['1', '0', 'true', 'false', 'yes', 'no', ''])])
  .transform((v) => v === true || v === '1' || v === 'true' || v === 'yes');

const intish = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const ConfigSchema = z.object({
  kafka: z.object({
    brokers: z
      .union([z.string(), z.array(z.string())])
      .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter(Boolean))
      .pipe(z.array(z.string().regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port')).min(1)),
    clientId: z.string().min(1),
    topic: z.string().min(1),
    dlqTopic: z.string().min(1),
    group: z.string().min(1),
  }),
  clickhouse: z
    .object({
      /** http(s)://host:port of a ClickHouse server; when absent the embedded engine (chdb) is used. */
      url: z.string().url().optional(),
      /** Data folder of the embedded engine. */
      path: z.string().min(1),
      database: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a plain identifier'),
      username: z.string().min(1),
      password: z.string(),
      retentionDays: intish(1, 3650),
    })
    .strict(),
  embed: z.object({
    modelsDir: z.string().min(1),
    model: z.string().min(1),
    precision: z.enum(['int8', 'fp32']),
    batchSize: intish(1, 1024),
    threads: intish(0, 64),
    maxTokens: intish(8, 512),
  }),
  ingest: z.object({
    redactText: boolish,
    metricsPort: intish(0, 65535),
    maxBatchMessages: intish(1, 100000),
  }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
});

export type Config = z.infer<typeof ConfigSchema>;
type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
export type ConfigOverrides = DeepPartial<z.input<typeof ConfigSchema>>;

type Env = Record<string, string | undefined>;

/** Build the config from environment variables, then apply overrides (e.g. CLI flags). */
export function loadConfig(env: Env = process.env, overrides: ConfigOverrides = {}): Config {
  const e = (k: string) => (env[k] === undefined || env[k] === '' ? undefined : env[k]);
  const base = {
    kafka: {
      brokers: e('EVALGAP_KAFKA_BROKERS') ?? '127.0.0.1:9092',
      clientId: e('EVALGAP_KAFKA_CLIENT_ID') ?? 'evalgap',
      topic: e('EVALGAP_TOPIC') ?? 'evalgap.requests',
      dlqTopic: e('EVALGAP_DLQ_TOPIC') ?? 'evalgap.requests.dlq',
      group: e('EVALGAP_GROUP') ?? 'evalgap',
    },
    clickhouse: {
      url: e('EVALGAP_CLICKHOUSE_URL'),
      path: e('EVALGAP_DATA_DIR') ?? path.join(PACKAGE_ROOT, '.evalgap', 'chdb'),
      database: e('EVALGAP_CLICKHOUSE_DATABASE') ?? 'evalgap',
      username: e('EVALGAP_CLICKHOUSE_USER') ?? 'default',
      password: e('EVALGAP_CLICKHOUSE_PASSWORD') ?? '',
      retentionDays: e('EVALGAP_RETENTION_DAYS') ?? 90,
    },
    embed: {
      modelsDir: e('EVALGAP_MODELS_DIR') ?? path.join(PACKAGE_ROOT, 'models'),
      model: e('EVALGAP_EMBED_MODEL') ?? 'all-MiniLM-L6-v2',
      precision: e('EVALGAP_EMBED_PRECISION') ?? 'int8',
      batchSize: e('EVALGAP_EMBED_BATCH') ?? 1,
      threads: e('EVALGAP_EMBED_THREADS') ?? 0,
      maxTokens: e('EVALGAP_EMBED_MAX_TOKENS') ?? 256,
    },
    ingest: {
      redactText: e('EVALGAP_REDACT_TEXT') ?? false,
      metricsPort: e('EVALGAP_METRICS_PORT') ?? 9464,
      maxBatchMessages: e('EVALGAP_MAX_BATCH') ?? 2000,
    },
    logLevel: e('EVALGAP_LOG_LEVEL') ?? 'info',
  };
  const merged = deepMerge(base, overrides as Record<string, unknown>);
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) throw new ConfigError(parsed.error);
  return parsed.data;
}

export class ConfigError extends Error {
  constructor(readonly zodError: z.ZodError) {
    super(
      'invalid configuration:\n' +
        zodError.issues.map((i) => `  - ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'),
    );
    this.name = 'ConfigError';
  }
}

/** A copy safe to print: secrets replaced. */
export function redactConfig(c: Config): Config {
  return { ...c, clickhouse: { ...c.clickhouse, password: c.clickhouse.password ? '[redacted]' : '' } };
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
        ? deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}
