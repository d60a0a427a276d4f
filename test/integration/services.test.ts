/** The real services: the broker started by scripts/kafka.sh, kafkajs against it, and the script's lifecycle. */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { freePort, readTopic, testKafka, tmpDir, uniqueName, capMs } from '../helpers/fixtures.js';

const KAFKA_SH = path.join(PACKAGE_ROOT, 'scripts', 'kafka.sh');

/** Two distinct free ports, so two test runs never share a test broker's port. */
async function twoFreePorts(): Promise<[number, number]> {
  const a = await freePort();
  let b = await freePort();
  while (b === a) b = await freePort();
  return [a, b];
}

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

  it('starts, reports health and stops a second broker on other ports', async () => {
    const [port, controller] = await twoFreePorts();
    const env = {
      ...process.env,
      EVALGAP_KAFKA_HOME: tmpDir('evalgap-kafka-'),
      EVALGAP_KAFKA_PORT: String(port),
      EVALGAP_KAFKA_CONTROLLER_PORT: String(controller),
    };
    const run = (cmd: string) => spawnSync('bash', [KAFKA_SH, cmd], { env, encoding: 'utf8', timeout: capMs(150_000) });
    expect(run('status').status).toBe(1);
    try {
      const start = run('start');
      expect(start.status, start.stderr).toBe(0);
      expect(start.stderr).toContain(`Kafka ready on 127.0.0.1:${port}`);
      const status = run('status');
      expect(status.status).toBe(0);
      expect(status.stdout).toContain(`running on 127.0.0.1:${port}`);
      // starting again is a no-op
      expect(run('start').stderr).toContain('already running');
    } finally {
      const stop = run('stop');
      expect(stop.status).toBe(0);
    }
    expect(run('status').stdout.trim()).toBe('stopped');
  });

  it('is shared by test runs through leases: a run that ends leaves it to the others; the last one stops it; a hand-started broker stays', async () => {
    const [port, controller] = await twoFreePorts();
    const env = {
      ...process.env,
      EVALGAP_KAFKA_HOME: tmpDir('evalgap-kafka-lease-'),
      EVALGAP_KAFKA_PORT: String(port),
      EVALGAP_KAFKA_CONTROLLER_PORT: String(controller),
    };
    const run = (...args: string[]) => spawnSync('bash', [KAFKA_SH, ...args], { env, encoding: 'utf8', timeout: capMs(150_000) });
    const running = () => run('status').status === 0;
    // stand-ins for test runs: a live process per running run, and the pid of a run that was
    // killed without releasing (a process that has exited)
    const users = [0, 1].map(() => spawn('sleep', ['600'], { stdio: 'ignore' }));
    const [a, c] = users.map((u) => String(u.pid));
    const b = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim();
    try {
      expect(running()).toBe(false);
      const first = run('acquire', a);
      expect(first.status, first.stderr).toBe(0);
      expect(first.stderr).toContain(`Kafka ready on 127.0.0.1:${port}`);
      expect(run('acquire', c).stderr).toContain('sharing it');
      expect(run('acquire', b).status).toBe(0);
      // run a ends (it started the broker): c still uses it; b's lease is stale
      const rel = run('release', a);
      expect(rel.status, rel.stderr).toBe(0);
      expect(rel.stderr).toContain('1 other run(s) still use it');
      expect(running()).toBe(true);
      // c, the last live user, stops the broker a run started (b's stale lease does not keep it)
      const last = run('release', c);
      expect(last.status, last.stderr).toBe(0);
      expect(last.stderr).toContain('stopping Kafka');
      expect(running()).toBe(false);
      // a broker started by hand is never stopped by a release
      expect(run('start').status).toBe(0);
      expect(run('acquire', a).stderr).toContain('sharing it');
      expect(run('release', a).status).toBe(0);
      expect(running()).toBe(true);
      expect(run('acquire', 'x').status).not.toBe(0);
    } finally {
      for (const u of users) u.kill('SIGKILL');
      run('stop');
    }
    expect(running()).toBe(false);
  });
});
