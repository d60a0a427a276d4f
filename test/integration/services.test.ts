/** The real services: the broker started by scripts/kafka.sh, kafkajs against it, and the script's lifecycle. */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { readTopic, testKafka, tmpDir, uniqueName, capMs } from '../helpers/fixtures.js';

const KAFKA_SH = path.join(PACKAGE_ROOT, 'scripts', 'kafka.sh');

describe('Kafka broker (KRaft, from Maven Central jars)', () => {
  it('is running and reports healthy', () => {
    const out = execFileSync('bash', [KAFKA_SH, 'status'], { encoding: 'utf8' });
    const port = process.env.EVALGAP_KAFKA_PORT ?? '9092';
    expect(out.startsWith(`running on 127.0.0.1:${port}`)).toBe(true);
  });

  it('round-trips messages through a real topic with kafkajs', async () => {
    const kafka = testKafka();
    const topic = uniqueName('evalgap.test.roundtrip');
    await ensureTopics(kafka, [{ topic, numPartitions: 2 }]);
    const producer = kafka.producer();
    await producer.connect();
    const values = Array.from({ length: 25 }, (_, i) => ({ n: i, text: `message ${i}` }));
    await produceJson(producer, topic, values, (_, i) => `k${i % 5}`);
    await producer.disconnect();
    const got = await readTopic(kafka, topic, 25);
    const ns = got.map((m) => JSON.parse(m.value!.toString()).n).sort((a, b) => a - b);
    expect(ns).toEqual(values.map((v) => v.n));
    expect(new Set(got.map((m) => m.partition)).size).toBe(2);
  });

  it('starts, reports health and stops a second broker on other ports', () => {
    const env = {
      ...process.env,
      EVALGAP_KAFKA_HOME: tmpDir('evalgap-kafka-'),
      EVALGAP_KAFKA_PORT: '19092',
      EVALGAP_KAFKA_CONTROLLER_PORT: '19093',
    };
    const run = (cmd: string) => spawnSync('bash', [KAFKA_SH, cmd], { env, encoding: 'utf8', timeout: capMs(150_000) });
    expect(run('status').status).toBe(1);
    try {
      const start = run('start');
      expect(start.status, start.stderr).toBe(0);
      expect(start.stderr).toContain('Kafka ready on 127.0.0.1:19092');
      const status = run('status');
      expect(status.status).toBe(0);
      expect(status.stdout).toContain('running on 127.0.0.1:19092');
      // starting again is a no-op
      expect(run('start').stderr).toContain('already running');
    } finally {
      const stop = run('stop');
      expect(stop.status).toBe(0);
    }
    expect(run('status').stdout.trim()).toBe('stopped');
  });
});
