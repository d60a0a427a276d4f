/**
 * Periodic gap discovery with several `evalgap run` instances of one consumer group, against the
 * real broker: exactly one instance runs it (elected through Kafka), and when it stops another
 * takes over. (The schedule's own skip rules, standby and a fresh stored discovery, are tested
 * against the real engine in gaps.test.ts.)
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { startRun, type Running } from '../../src/cli/run.js';
import { fitSampleModel, testConfig, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

let dir: string;
const running: Running[] = [];

beforeAll(async () => {
  dir = tmpDir();
  await fitSampleModel(path.join(dir, 'model'));
});
afterAll(async () => {
  await Promise.all(running.map((r) => r.stop().catch(() => {})));
});

describe('periodic gap discovery across instances', () => {
  it('one instance of the group runs it; when that one stops, another takes over', async () => {
    const topic = uniqueName('evalgap.test.gapselect');
    const group = uniqueName('g');
    // one consumer group; in one process the instances share the embedded engine (one data folder per process)
    const cfgFor = (): Config => {
      const c = testConfig(path.join(dir, 'chdb'));
      return { ...c, kafka: { ...c.kafka, topic, dlqTopic: `${topic}.dlq`, group }, ingest: { ...c.ingest, metricsPort: -1 } };
    };
    // an interval long enough that no pass starts during the test: only the election is looked at
    for (let i = 0; i < 2; i++) running.push(await startRun(cfgFor(), path.join(dir, 'model'), createLogger('silent'), {}, { gapsEveryMs: 86_400_000 }));
    const leaders = () => running.filter((r) => r.gapsLeader?.()).length;
    expect(running.every((r) => typeof r.gapsLeader === 'function')).toBe(true);
    await waitFor(async () => leaders() === 1, 60_000, 'one instance to be elected for gap discovery');
    // and it stays one (a rebalance settling could hand it back and forth, never to both)
    await new Promise((r) => setTimeout(r, 2_000));
    expect(leaders()).toBe(1);
    const leader = running.find((r) => r.gapsLeader!())!;
    const other = running.find((r) => r !== leader)!;
    await leader.stop();
    running.splice(running.indexOf(leader), 1);
    await waitFor(async () => other.gapsLeader!(), 60_000, 'the other instance to take over gap discovery');
  });

  it('without periodic discovery there is no election', async () => {
    const c = testConfig(path.join(dir, 'chdb'));
    const topic = uniqueName('evalgap.test.gapsoff');
    const r = await startRun({ ...c, kafka: { ...c.kafka, topic, dlqTopic: `${topic}.dlq`, group: uniqueName('g') }, ingest: { ...c.ingest, metricsPort: -1 } }, path.join(dir, 'model'), createLogger('silent'));
    running.push(r);
    expect(r.gaps).toBeUndefined();
    expect(r.gapsLeader).toBeUndefined();
  });
});
