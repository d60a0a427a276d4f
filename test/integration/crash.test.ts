/**
 * `evalgap run` as a real process: SIGKILL mid-stream, restart, and every valid message is stored
 * exactly once; SIGTERM finishes the batch, commits, leaves the group and exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { Store } from '../../src/store/store.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { fitSampleModel, groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

interface Proc {
  child: ChildProcess;
  port: Promise<number>;
  exited: Promise<number | null>;
}

function startRun(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [CLI, 'run', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const port = new Promise<number>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stderr! });
    rl.on('line', (line) => {
      try {
        const j = JSON.parse(line);
        if (j.msg === 'evalgap run started') resolve(j.metricsPort);
      } catch {
        /* not a log line */
      }
    });
    child.once('exit', (code) => reject(new Error(`evalgap run exited early (${code})`)));
  });
  port.catch(() => {});
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, port, exited };
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name + '{') || l.startsWith(name + ' '))
    .reduce((a, l) => a + Number(l.split(' ').pop()), 0);
}

describe('evalgap run process', () => {
  it('stores every message exactly once across a SIGKILL and a restart, and stops cleanly on SIGTERM', async () => {
    const dir = tmpDir();
    const modelDir = path.join(dir, 'model');
    await fitSampleModel(modelDir);
    const topic = uniqueName('evalgap.test.crash');
    const group = uniqueName('g');
    const N = 1200;
    const kafka = testKafka();
    await ensureTopics(kafka, [{ topic, numPartitions: 2 }]);
    const p = kafka.producer();
    await p.connect();
    await produceJson(p, topic, sampleTraffic(N, { seed: 21, idPrefix: topic }), (_, i) => `k${i % 13}`);
    await p.disconnect();

    const env = {
      EVALGAP_DATA_DIR: path.join(dir, 'chdb'),
      EVALGAP_TOPIC: topic,
      EVALGAP_DLQ_TOPIC: `${topic}.dlq`,
      EVALGAP_GROUP: group,
      EVALGAP_MAX_BATCH: '50',
      EVALGAP_LOG_LEVEL: 'info',
    };
    const args = ['--model', modelDir, '--metrics-port', '0'];

    const first = startRun(args, env);
    const port1 = await first.port;
    // kill it hard somewhere in the middle of the stream
    const storedAtKill = await waitFor(
      async () => {
        const s = await metric(port1, 'evalgap_rows_stored_total');
        return s >= N / 4 ? s : false;
      },
      120_000,
      'the first instance to store a quarter of the stream',
    );
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe(null);
    expect(storedAtKill).toBeLessThan(N);

    const second = startRun(args, env);
    const port2 = await second.port;
    expect((await fetch(`http://127.0.0.1:${port2}/healthz`)).status).toBe(200);
    await waitFor(() => groupCaughtUp(kafka, group, topic), 180_000, 'the restarted instance to commit every offset');
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    const store = await Store.open(testConfig(env.EVALGAP_DATA_DIR).clickhouse);
    try {
      const [r] = await store.query<{ n: string; ids: string; offsets: string }>(
        `SELECT count() AS n, uniqExact(request_id) AS ids, uniqExact(kafka_partition, kafka_offset) AS offsets
         FROM ${store.t('requests')} WHERE kafka_topic = {t:String}`,
        { t: topic },
      );
      expect(r).toEqual({ n: String(N), ids: String(N), offsets: String(N) });
      const [a] = await store.query<{ n: string }>(`SELECT sum(requests) AS n FROM ${store.t('coverage_5m')}`);
      expect(a.n).toBe(String(N));
    } finally {
      await store.close();
    }
  });
});
