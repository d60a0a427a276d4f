/** kafkajs wiring shared by the consumer, the producer helpers and the CLI. */
import kafkajs, { Kafka, logLevel, type Admin, type LogEntry, type Producer } from 'kafkajs';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';

/**
 * kafkajs logs through pino. kafkajs reports retried, transient conditions (a new topic without a
 * leader yet, a coordinator still loading) at ERROR; they are logged one level lower here, since
 * kafkajs raises the real failures to the caller anyway.
 */
function kafkaLogCreator(logger?: Logger) {
  return () => (entry: LogEntry) => {
    if (!logger) return;
    const { message, ...extra } = entry.log;
    const fields = { ...extra, kafkajs: entry.namespace };
    if (entry.level === logLevel.ERROR) logger.warn(fields, message);
    else if (entry.level === logLevel.WARN) logger.info(fields, message);
    else logger.debug(fields, message);
  };
}

export function createKafka(cfg: Config['kafka'], clientId = cfg.clientId, logger?: Logger): Kafka {
  return new Kafka({
    clientId,
    brokers: cfg.brokers,
    ssl: cfg.ssl ? (cfg.sslCa ? { ca: [cfg.sslCa] } : true) : undefined,
    sasl: cfg.sasl ? ({ mechanism: cfg.sasl.mechanism, username: cfg.sasl.username, password: cfg.sasl.password } as never) : undefined,
    logLevel: logLevel.WARN,
    logCreator: kafkaLogCreator(logger),
    // about 10 s of retries before a broker is declared unreachable (start-up fails with one line;
    // mid-stream the consumer's own retries and kafkajs restarts take over)
    retry: { initialRetryTime: 300, retries: 5 },
    connectionTimeout: 5000,
  });
}

/**
 * Create topics that do not exist yet (no-op for existing ones). A topic just created can still be
 * unknown to the broker's metadata for a moment (kafkajs' wait for leaders then fails with a
 * retriable "does not host this topic-partition"): the broker's retriable answers are retried with
 * backoff; an unreachable broker still fails after kafkajs' own retries.
 */
export async function ensureTopics(
  kafka: Kafka,
  topics: { topic: string; numPartitions?: number; configEntries?: { name: string; value: string }[] }[],
): Promise<void> {
  await pRetry(
    async () => {
      const admin: Admin = kafka.admin();
      await admin.connect();
      try {
        const existing = new Set(await admin.listTopics());
        const missing = topics.filter((t) => !existing.has(t.topic));
        if (missing.length) {
          await admin.createTopics({
            waitForLeaders: true,
            topics: missing.map((t) => ({
              topic: t.topic,
              numPartitions: t.numPartitions ?? 1,
              replicationFactor: 1,
              ...(t.configEntries ? { configEntries: t.configEntries } : {}),
            })),
          });
        }
      } finally {
        await admin.disconnect();
      }
    },
    {
      retries: 5,
      minTimeout: 200,
      maxTimeout: 2000,
      // only the broker's own retriable answers (a topic or leader not known yet); an unreachable
      // broker has had kafkajs' retries already and fails at once
      shouldRetry: (e) => e.name === 'KafkaJSProtocolError' && (e as { retriable?: boolean }).retriable === true,
    },
  );
}

/**
 * The largest record batch a topic accepts (its max.message.bytes, else the broker's
 * message.max.bytes), or null when the broker does not say.
 */
export async function topicMaxMessageBytes(kafka: Kafka, topic: string): Promise<number | null> {
  const admin: Admin = kafka.admin();
  await admin.connect();
  try {
    const r = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }],
    });
    const v = r.resources[0]?.configEntries.find((c) => c.configName === 'max.message.bytes')?.configValue;
    return v ? Number(v) : null;
  } finally {
    await admin.disconnect();
  }
}

/** Produce JSON values in chunks; keys (when given) pick the partition. */
export async function produceJson(
  producer: Producer,
  topic: string,
  values: unknown[],
  key?: (v: unknown, i: number) => string | undefined,
  chunk = 500,
): Promise<void> {
  for (let i = 0; i < values.length; i += chunk) {
    await producer.send({
      topic,
      messages: values.slice(i, i + chunk).map((v, j) => ({
        key: key ? (key(v, i + j) ?? null) : null,
        value: typeof v === 'string' || Buffer.isBuffer(v) ? (v as string | Buffer) : JSON.stringify(v),
      })),
    });
  }
}
