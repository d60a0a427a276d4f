/**
 * Configuration: every setting comes from an environment variable (EVALGAP_*) or a CLI flag,
 * validated with zod. Secrets (the ClickHouse password, the webhook secret) are never logged:
 * use `redactConfig` before printing a config.
 */
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/** The package root: two levels up from src/config or dist/config. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const BOOL_WORDS = ['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off', ''];
const boolish = z.preprocess(
  (v) => (typeof v === 'string' && BOOL_WORDS.includes(v.trim().toLowerCase()) ? ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase()) : v),
  z.boolean({ invalid_type_error: 'expected one of true, false, 1, 0, yes, no, on, off (any case)' }),
);

/**
 * An integer setting: a number, or a string of decimal digits (blanks around it allowed). Not
 * `z.coerce.number`, which reads a blank value as 0 and "0x10" as 16.
 */
const intish = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\s*[-+]?\d+\s*$/.test(v) ? Number(v) : v),
    z.number({ invalid_type_error: 'expected a whole number in decimal digits' }).int().min(min).max(max),
  );

export const ConfigSchema = z.object({
  kafka: z.object({
    brokers: z
      .union([z.string(), z.array(z.string())])
      .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter(Boolean))
      .pipe(
        z
          .array(
            z
              .string()
              .regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port')
              // (only of what has the shape: "nohost" gets one error, not two)
              .refine((b) => !/^[^\s:]+:\d{1,5}$/.test(b) || (Number(b.split(':')[1]) >= 1 && Number(b.split(':')[1]) <= 65535), 'port must be 1-65535'),
          )
          .min(1),
      ),
    clientId: z.string().min(1),
    topic: z.string().min(1),
    dlqTopic: z.string().min(1),
    group: z.string().min(1),
    /** TLS to the brokers; `ca` is a PEM bundle read from EVALGAP_KAFKA_SSL_CA_FILE */
    ssl: boolish,
    sslCa: z.string().optional(),
    sasl: z
      .object({
        mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
        username: z.string().min(1),
        password: z.string(),
      })
      .optional(),
  })
    // a CA bundle without TLS would change nothing: refused rather than ignored
    .refine((k) => !k.sslCa || k.ssl, {
      message: 'EVALGAP_KAFKA_SSL_CA_FILE is set but TLS to the brokers is off: set EVALGAP_KAFKA_SSL=true as well (or drop the CA file)',
      path: ['sslCa'],
    }),
  clickhouse: z
    .object({
      /** http(s)://host:port of a ClickHouse server; when absent the embedded engine (chdb) is used. */
      url: z
        .string()
        .url()
        .refine((u) => /^https?:\/\//i.test(u), 'expected an http:// or https:// URL')
        .refine((u) => {
          try {
            const p = new URL(u).port;
            return p === '' || (Number(p) >= 1 && Number(p) <= 65535);
          } catch {
            return true; // reported by .url()
          }
        }, 'port must be 1-65535')
        .optional(),
      /** Data folder of the embedded engine. */
      path: z.string().min(1),
      database: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a plain identifier'),
      username: z.string().min(1),
      password: z.string(),
      retentionDays: intish(1, 3650),
      /** PEM files for TLS to a server (EVALGAP_CLICKHOUSE_CA_FILE, _CERT_FILE, _KEY_FILE) */
      caCert: z.string().optional(),
      cert: z.string().optional(),
      key: z.string().optional(),
    })
    .strict()
    // TLS files change nothing unless they are used: refused rather than ignored
    .refine((c) => !c.cert === !c.key, {
      message: 'a client certificate needs its key and a key its certificate: set EVALGAP_CLICKHOUSE_CERT_FILE and EVALGAP_CLICKHOUSE_KEY_FILE together',
      path: ['cert'],
    })
    .refine((c) => !(c.caCert || c.cert || c.key) || /^https:\/\//i.test(c.url ?? ''), {
      message: 'EVALGAP_CLICKHOUSE_CA_FILE, _CERT_FILE and _KEY_FILE are for TLS to a server: they need an https:// EVALGAP_CLICKHOUSE_URL',
      path: ['caCert'],
    }),
  embed: z.object({
    modelsDir: z.string().min(1),
    model: z.string().min(1),
    precision: z.enum(['int8', 'fp32']),
    batchSize: intish(1, 1024),
    threads: intish(0, 64),
    maxTokens: intish(8, 512),
  }),
  ingest: z
    .object({
      redactText: boolish,
      /** HMAC key of --redact-text (EVALGAP_REDACT_KEY or EVALGAP_REDACT_KEY_FILE) */
      redactKey: z.string().min(32, 'the redaction key must have at least 32 characters').optional(),
      metricsPort: intish(0, 65535),
      maxBatchMessages: intish(1, 100000),
      /** larger messages are dead-lettered unread */
      maxMessageBytes: intish(1024, 64 * 1_048_576),
      /** deeper JSON nesting is dead-lettered unparsed */
      maxDepth: intish(2, 1000),
      /** ts further ahead of the clock than this is dead-lettered */
      maxFutureHours: intish(0, 24 * 365),
      /** a consumer with waiting messages and no progress for this long is not ready */
      stallSeconds: intish(5, 86_400),
      /** how often lag is read from the broker's high watermarks */
      lagIntervalSeconds: intish(1, 3600),
      /** consumer-group session timeout: how soon a dead member's partitions move (broker minimum 6000) */
      sessionTimeoutMs: intish(6000, 300_000),
    })
    .refine((i) => !i.redactText || i.redactKey, {
      message: '--redact-text needs a key: set EVALGAP_REDACT_KEY or EVALGAP_REDACT_KEY_FILE (at least 32 characters)',
      path: ['redactKey'],
    }),
  /** OpenTelemetry traces in (`evalgap run --input otlp`): src/ingest/otlp-bridge.ts */
  otlp: z.object({
    /** the Collector Kafka exporter's trace topic */
    topic: z.string().min(1),
    encoding: z.enum(['auto', 'otlp_proto', 'otlp_json']),
    /** a trace waits this long (event time) after its root span ends for late child spans */
    graceMs: intish(0, 3_600_000),
    /** a trace whose root never arrives is dead-lettered this long after its last span */
    maxHoldMs: intish(1000, 86_400_000),
    /** a partition quiet this long is flushed */
    idleMs: intish(100, 3_600_000),
    /** span attribute that marks an escalated turn (true or "true") */
    escalatedAttribute: z.string().min(1).max(256),
  }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** limits of read-only SQL from outside (POST /query, evalgap sql): docs/security.md */
  query: z.object({
    /** max_execution_time of one query, seconds */
    timeoutSeconds: intish(1, 86_400),
    /** max_memory_usage of one query, bytes */
    maxMemoryBytes: intish(16 * 1_048_576, 2 ** 40),
    /** max_result_rows and max_result_bytes of one query (also checked on subqueries) */
    maxResultRows: intish(1, 1_000_000_000),
    maxResultBytes: intish(1024, 2 ** 36),
    /** POST /query runs one query at a time; this many more wait, any beyond are refused (429) */
    queue: intish(0, 64),
  }),
});

export type Config = z.infer<typeof ConfigSchema>;
type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
export type ConfigOverrides = DeepPartial<z.input<typeof ConfigSchema>>;

type Env = Record<string, string | undefined>;

/**
 * The environment variable behind each setting: loadConfig reads each setting from its variable here,
 * and error messages name it. A `_FILE` variable names a file whose content is the value.
 */
const VARIABLES = {
  'kafka.brokers': 'EVALGAP_KAFKA_BROKERS',
  'kafka.clientId': 'EVALGAP_KAFKA_CLIENT_ID',
  'kafka.topic': 'EVALGAP_TOPIC',
  'kafka.dlqTopic': 'EVALGAP_DLQ_TOPIC',
  'kafka.group': 'EVALGAP_GROUP',
  'kafka.ssl': 'EVALGAP_KAFKA_SSL',
  'kafka.sslCa': 'EVALGAP_KAFKA_SSL_CA_FILE',
  'kafka.sasl.mechanism': 'EVALGAP_KAFKA_SASL_MECHANISM',
  'kafka.sasl.username': 'EVALGAP_KAFKA_SASL_USERNAME',
  'kafka.sasl.password': 'EVALGAP_KAFKA_SASL_PASSWORD',
  'clickhouse.url': 'EVALGAP_CLICKHOUSE_URL',
  'clickhouse.path': 'EVALGAP_DATA_DIR',
  'clickhouse.database': 'EVALGAP_CLICKHOUSE_DATABASE',
  'clickhouse.username': 'EVALGAP_CLICKHOUSE_USER',
  'clickhouse.password': 'EVALGAP_CLICKHOUSE_PASSWORD',
  'clickhouse.retentionDays': 'EVALGAP_RETENTION_DAYS',
  'clickhouse.caCert': 'EVALGAP_CLICKHOUSE_CA_FILE',
  'clickhouse.cert': 'EVALGAP_CLICKHOUSE_CERT_FILE',
  'clickhouse.key': 'EVALGAP_CLICKHOUSE_KEY_FILE',
  'embed.modelsDir': 'EVALGAP_MODELS_DIR',
  'embed.model': 'EVALGAP_EMBED_MODEL',
  'embed.precision': 'EVALGAP_EMBED_PRECISION',
  'embed.batchSize': 'EVALGAP_EMBED_BATCH',
  'embed.threads': 'EVALGAP_EMBED_THREADS',
  'embed.maxTokens': 'EVALGAP_EMBED_MAX_TOKENS',
  'ingest.redactText': 'EVALGAP_REDACT_TEXT',
  'ingest.metricsPort': 'EVALGAP_METRICS_PORT',
  'ingest.maxBatchMessages': 'EVALGAP_MAX_BATCH',
  'ingest.redactKey': 'EVALGAP_REDACT_KEY',
  'ingest.maxMessageBytes': 'EVALGAP_MAX_MESSAGE_BYTES',
  'ingest.maxDepth': 'EVALGAP_MAX_DEPTH',
  'ingest.maxFutureHours': 'EVALGAP_MAX_FUTURE_HOURS',
  'ingest.stallSeconds': 'EVALGAP_STALL_SECONDS',
  'ingest.lagIntervalSeconds': 'EVALGAP_LAG_INTERVAL_SECONDS',
  'ingest.sessionTimeoutMs': 'EVALGAP_SESSION_TIMEOUT_MS',
  'otlp.topic': 'EVALGAP_OTLP_TOPIC',
  'otlp.encoding': 'EVALGAP_OTLP_ENCODING',
  'otlp.graceMs': 'EVALGAP_OTLP_GRACE_MS',
  'otlp.maxHoldMs': 'EVALGAP_OTLP_MAX_HOLD_MS',
  'otlp.idleMs': 'EVALGAP_OTLP_IDLE_MS',
  'otlp.escalatedAttribute': 'EVALGAP_OTLP_ESCALATED_ATTRIBUTE',
  'logLevel': 'EVALGAP_LOG_LEVEL',
  'query.timeoutSeconds': 'EVALGAP_QUERY_TIMEOUT_SECONDS',
  'query.maxMemoryBytes': 'EVALGAP_QUERY_MAX_MEMORY_BYTES',
  'query.maxResultRows': 'EVALGAP_QUERY_MAX_RESULT_ROWS',
  'query.maxResultBytes': 'EVALGAP_QUERY_MAX_RESULT_BYTES',
  'query.queue': 'EVALGAP_QUERY_QUEUE',
} as const;
export const VARIABLE_OF: Readonly<Record<string, string>> = VARIABLES;

/** Build the config from environment variables, then apply overrides (e.g. CLI flags). */
export function loadConfig(env: Env = process.env, overrides: ConfigOverrides = {}): Config {
  const plain = (k: string) => (env[k] === undefined || env[k] === '' ? undefined : env[k]);
  /** the variables whose value came from the file their `_FILE` twin names (an error then names that one) */
  const viaFile = new Set<string>();
  /** KEY, or the content of the file named by KEY_FILE (trailing newline dropped) */
  const fromFile = (k: string, trim = true) => {
    const f = plain(`${k}_FILE`);
    if (f === undefined) return undefined;
    try {
      const v = fs.readFileSync(f, 'utf8');
      viaFile.add(k);
      return trim ? v.replace(/\r?\n$/, '') : v;
    } catch (err) {
      throw new ConfigError(
        new z.ZodError([{ code: 'custom', path: [`${k}_FILE`], message: `cannot read ${f}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]),
      );
    }
  };
  /** the setting at path p from its variable (VARIABLES), or the file its `_FILE` twin names */
  const v = (p: keyof typeof VARIABLES) => plain(VARIABLES[p]) ?? fromFile(VARIABLES[p]);
  /** the content of the file its `_FILE` variable names, as it is (PEM) */
  const pem = (p: keyof typeof VARIABLES) => fromFile(VARIABLES[p].replace(/_FILE$/, ''), false);
  const saslUser = v('kafka.sasl.username');
  const base = {
    kafka: {
      brokers: v('kafka.brokers') ?? '127.0.0.1:9092',
      clientId: v('kafka.clientId') ?? 'evalgap',
      topic: v('kafka.topic') ?? 'evalgap.requests',
      dlqTopic: v('kafka.dlqTopic') ?? 'evalgap.requests.dlq',
      group: v('kafka.group') ?? 'evalgap',
      ssl: v('kafka.ssl') ?? false,
      sslCa: pem('kafka.sslCa'),
      sasl: saslUser
        ? {
            mechanism: v('kafka.sasl.mechanism') ?? 'scram-sha-512',
            username: saslUser,
            password: v('kafka.sasl.password') ?? '',
          }
        : undefined,
    },
    clickhouse: {
      url: v('clickhouse.url'),
      path: v('clickhouse.path') ?? path.join(PACKAGE_ROOT, '.evalgap', 'chdb'),
      database: v('clickhouse.database') ?? 'evalgap',
      username: v('clickhouse.username') ?? 'default',
      password: v('clickhouse.password') ?? '',
      retentionDays: v('clickhouse.retentionDays') ?? 90,
      caCert: pem('clickhouse.caCert'),
      cert: pem('clickhouse.cert'),
      key: pem('clickhouse.key'),
    },
    embed: {
      modelsDir: v('embed.modelsDir') ?? path.join(PACKAGE_ROOT, 'models'),
      model: v('embed.model') ?? 'all-MiniLM-L6-v2',
      precision: v('embed.precision') ?? 'int8',
      batchSize: v('embed.batchSize') ?? 8,
      threads: v('embed.threads') ?? 0,
      maxTokens: v('embed.maxTokens') ?? 256,
    },
    ingest: {
      redactText: v('ingest.redactText') ?? false,
      metricsPort: v('ingest.metricsPort') ?? 9464,
      maxBatchMessages: v('ingest.maxBatchMessages') ?? 2000,
      redactKey: v('ingest.redactKey'),
      maxMessageBytes: v('ingest.maxMessageBytes') ?? 1_048_576,
      maxDepth: v('ingest.maxDepth') ?? 32,
      maxFutureHours: v('ingest.maxFutureHours') ?? 24,
      stallSeconds: v('ingest.stallSeconds') ?? 120,
      lagIntervalSeconds: v('ingest.lagIntervalSeconds') ?? 10,
      sessionTimeoutMs: v('ingest.sessionTimeoutMs') ?? 30_000,
    },
    otlp: {
      topic: v('otlp.topic') ?? 'otlp_spans',
      encoding: v('otlp.encoding') ?? 'auto',
      graceMs: v('otlp.graceMs') ?? 5000,
      maxHoldMs: v('otlp.maxHoldMs') ?? 300_000,
      idleMs: v('otlp.idleMs') ?? 5000,
      escalatedAttribute: v('otlp.escalatedAttribute') ?? 'evalgap.escalated',
    },
    logLevel: v('logLevel') ?? 'info',
    query: {
      timeoutSeconds: v('query.timeoutSeconds') ?? 30,
      maxMemoryBytes: v('query.maxMemoryBytes') ?? 1024 * 1_048_576,
      maxResultRows: v('query.maxResultRows') ?? 1_000_000,
      maxResultBytes: v('query.maxResultBytes') ?? 256 * 1_048_576,
      queue: v('query.queue') ?? 4,
    },
  };
  const merged = deepMerge(base, overrides as Record<string, unknown>);
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) throw new ConfigError(parsed.error, viaFile);
  return parsed.data;
}


/** The variable that sets a config path (an array element's is its array's), if any. */
export function variableOf(p: readonly (string | number)[]): string | undefined {
  for (let n = p.length; n > 0; n--) {
    const v = VARIABLE_OF[p.slice(0, n).join('.')];
    if (v) return v;
  }
  return undefined;
}

export class ConfigError extends Error {
  /** `viaFile`: variables whose value was read from the file their `_FILE` twin names */
  constructor(readonly zodError: z.ZodError, viaFile: ReadonlySet<string> = new Set()) {
    super(
      'invalid configuration:\n' +
        zodError.issues
          .map((i) => {
            const named = variableOf(i.path);
            const v = named && viaFile.has(named) ? `${named}_FILE` : named;
            return `  - ${i.path.join('.') || '(root)'}: ${i.message}${v && !i.message.includes(v) ? ` (set by ${v}, or the command's flag for it)` : ''}`;
          })
          .join('\n'),
    );
    this.name = 'ConfigError';
  }
}

/** A URL safe to print: user and password inside it replaced. Unparseable input is hidden whole. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username) u.username = '***';
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '[unparseable URL]';
  }
}

/** A copy safe to print: secrets replaced, credentials in URLs masked, key material left out. */
export function redactConfig(c: Config): Config {
  const r = (v: string | undefined) => (v ? '[redacted]' : v);
  return {
    ...c,
    kafka: { ...c.kafka, sslCa: c.kafka.sslCa ? '[pem]' : undefined, sasl: c.kafka.sasl ? { ...c.kafka.sasl, password: '[redacted]' } : undefined },
    clickhouse: {
      ...c.clickhouse,
      url: c.clickhouse.url ? maskUrl(c.clickhouse.url) : undefined,
      password: c.clickhouse.password ? '[redacted]' : '',
      caCert: c.clickhouse.caCert ? '[pem]' : undefined,
      cert: c.clickhouse.cert ? '[pem]' : undefined,
      key: r(c.clickhouse.key),
    },
    ingest: { ...c.ingest, redactKey: r(c.ingest.redactKey) },
  };
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
