/** Shared set-up for integration tests: the real model, the real broker, temp folders. */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { loadConfig, type Config } from '../../src/config/index.js';
import { DEFAULT_FIT, fitCoverageModel } from '../../src/coverage/fit.js';
import { saveCoverageModel, type Manifest } from '../../src/coverage/model.js';
import { loadEmbedder, type Embedder } from '../../src/embed/embedder.js';
import { sampleEvalSet } from '../../src/cli/sample-data.js';

export const BROKERS = (process.env.EVALGAP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');

/** A TCP port nothing on 127.0.0.1 listens on now (the kernel's choice for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export function tmpDir(prefix = 'evalgap-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function uniqueName(prefix: string): string {
  return `${prefix}.${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

export function testConfig(dataDir: string, over: Record<string, string> = {}): Config {
  return loadConfig({ ...process.env, EVALGAP_DATA_DIR: dataDir, EVALGAP_LOG_LEVEL: 'warn', ...over });
}

let embedder: Promise<Embedder> | null = null;
export function realEmbedder(): Promise<Embedder> {
  embedder ??= loadEmbedder(loadConfig().embed);
  return embedder;
}

/** Fit the bundled sample eval set with the real model and save it in `dir`. */
export async function fitSampleModel(dir: string): Promise<Manifest> {
  const e = await realEmbedder();
  const cases = sampleEvalSet(30).map((c) => ({ id: c.id, text: c.query, tags: c.tags }));
  const out = await fitCoverageModel(cases, e, { ...DEFAULT_FIT, source: 'sample', textField: 'query' });
  return saveCoverageModel(dir, out.draft, out.arrays);
}

/**
 * Tests wait for conditions, never for a guessed time; their caps (waitFor, per-test timeouts,
 * child-process timeouts) only bound how long a broken run takes to fail. They are written for a
 * 2-core machine and multiplied by this factor so that a machine several times slower still passes:
 * EVALGAP_TEST_TIME_FACTOR, default 4. test/vitest.config.ts applies the same factor to vitest's
 * default timeouts.
 */
export const TIME_FACTOR = Math.max(1, Number(process.env.EVALGAP_TEST_TIME_FACTOR) || 4);

/** A cap of `ms` on the reference machine, scaled by TIME_FACTOR. */
export function capMs(ms: number): number {
  return Math.round(ms * TIME_FACTOR);
}

export function testKafka(): Kafka {
  return new Kafka({ clientId: 'evalgap-test', brokers: BROKERS, logLevel: logLevel.NOTHING });
}

/** Poll `fn` until it returns a truthy value; `timeoutMs` is a cap (scaled by TIME_FACTOR), not an expectation. */
export async function waitFor<T>(fn: () => Promise<T | false | null | undefined>, timeoutMs: number, what: string): Promise<T> {
  timeoutMs = capMs(timeoutMs);
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** True when the group's committed offsets reach the end of every partition of the topic. */
export async function groupCaughtUp(kafka: Kafka, group: string, topic: string): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(topic);
    const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    return ends.every((e) => {
      const c = committed.partitions.find((p) => p.partition === e.partition);
      return c !== undefined && BigInt(c.offset) >= BigInt(e.high);
    });
  } finally {
    await admin.disconnect();
  }
}

/** Read every message of a topic (from the beginning) until `count` have arrived. */
export async function readTopic(kafka: Kafka, topic: string, count: number, cap = 30_000) {
  const consumer = kafka.consumer({ groupId: uniqueName('reader') });
  const got: { value: Buffer | null; headers: Record<string, string>; offset: string; partition: number }[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message, partition }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
      got.push({ value: message.value, headers, offset: message.offset, partition });
    },
  });
  try {
    await waitFor(async () => got.length >= count, cap, `${count} messages on ${topic}`);
  } finally {
    await consumer.disconnect();
  }
  return got;
}
