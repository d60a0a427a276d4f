/**
 * `evalgap run` as a real process, stopped with SIGTERM while its group rebalances (issue 18,
 * defect 5: the process used to abort with "terminate called after throwing an instance of
 * 'Napi::Error'" and linger until SIGKILL). A second member joining the group starts the
 * rebalance; SIGTERM arrives as soon as the instance logs that it is re-joining, with a batch of up
 * to 2,000 messages (the default EVALGAP_MAX_BATCH) in hand. It must exit 0 by
 * itself (before its own 60 s last-resort exit, which exits 1), print no native abort, and a
 * restart must then store every message exactly once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { Store } from '../../src/store/store.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { capMs, fitSampleModel, groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

interface Proc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startRun(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [CLI, 'run', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    try {
      lines.push(JSON.parse(line));
    } catch {
      /* not a log line (a native abort prints plain text) */
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return { child, lines, stderr, exited };
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name + '{') || l.startsWith(name + ' '))
    .reduce((a, l) => a + Number(l.split(' ').pop()), 0);
}

describe('evalgap run stopped during a rebalance', () => {
  it('exits 0 on SIGTERM while re-joining its group, with no native abort, and loses nothing', async () => {
    const dir = tmpDir();
    const modelDir = path.join(dir, 'model');
    await fitSampleModel(modelDir);
    const topic = uniqueName('evalgap.test.sigterm');
    const group = uniqueName('g');
    const N = 5000;
    const kafka = testKafka();
    await ensureTopics(kafka, [{ topic, numPartitions: 2 }]);
    const p = kafka.producer();
    await p.connect();
    await produceJson(p, topic, sampleTraffic(N, { seed: 31, idPrefix: topic }), (_, i) => `k${i % 13}`);
    await p.disconnect();
    const env = {
      EVALGAP_DATA_DIR: path.join(dir, 'chdb'),
      EVALGAP_TOPIC: topic,
      EVALGAP_DLQ_TOPIC: `${topic}.dlq`,
      EVALGAP_GROUP: group,
      EVALGAP_MAX_BATCH: '2000',
      EVALGAP_LOG_LEVEL: 'info',
    };
    const args = ['--model', modelDir, '--metrics-port', '0', '--gaps-every', 'off'];

    const first = startRun(args, env);
    const port = await waitFor(async () => first.lines.find((l) => l.msg === 'evalgap run started')?.metricsPort as number | undefined, 60_000, 'the first instance to start');
    await waitFor(async () => (await metric(port, 'evalgap_rows_stored_total')) >= 100, 120_000, 'the first instance to store rows');

    // a second member joins: the group rebalances. It holds whatever it is given without
    // committing anything, so every message is left for the restart below.
    const intruder = kafka.consumer({ groupId: group, sessionTimeout: 30_000, rebalanceTimeout: 30_000 });
    await intruder.connect();
    await intruder.subscribe({ topic, fromBeginning: true });
    await intruder.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch: async ({ pause }) => void pause() });
    const rejoining = (l: Record<string, unknown>) => /rebalancing/i.test(String(l.msg));
    await waitFor(async () => first.lines.some(rejoining), 60_000, 'the first instance to see the rebalance');
    first.child.kill('SIGTERM');
    const exit = await Promise.race([first.exited, new Promise<null>((r) => setTimeout(() => r(null), capMs(90_000)))]);
    await intruder.disconnect();
    if (exit === null) first.child.kill('SIGKILL'); // what the old code needed
    if (process.env.EVALGAP_TEST_DUMP) (await import('node:fs')).writeFileSync(process.env.EVALGAP_TEST_DUMP, first.stderr.join('\n'));
    expect(exit, 'the instance did not exit by itself').not.toBeNull();
    expect(first.stderr.filter((l) => /terminate called|Napi::Error|Aborted/.test(l))).toEqual([]);
    expect(first.lines.filter((l) => l.msg === 'did not stop within 60 s; exiting')).toEqual([]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(first.lines.some((l) => l.msg === 'stopped')).toBe(true);

    // a restart stores the rest: every message exactly once, aggregates equal to the rows
    const second = startRun(args, env);
    await waitFor(async () => second.lines.some((l) => l.msg === 'evalgap run started'), 60_000, 'the restart');
    await waitFor(() => groupCaughtUp(kafka, group, topic), 180_000, 'the restarted instance to commit every offset');
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
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
  }, capMs(420_000));
});
