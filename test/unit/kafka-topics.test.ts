/** ensureTopics: a topic the broker does not know yet right after creating it is retried, not fatal. */
import { describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import { ensureTopics } from '../../src/ingest/kafka.js';

function fakeKafka(failures: Error[]) {
  const calls = { create: 0, connect: 0, disconnect: 0 };
  const topics = new Set<string>();
  const kafka = {
    admin: () => ({
      connect: async () => void calls.connect++,
      disconnect: async () => void calls.disconnect++,
      listTopics: async () => [...topics],
      createTopics: async ({ topics: t }: { topics: { topic: string }[] }) => {
        calls.create++;
        for (const x of t) topics.add(x.topic);
        const f = failures.shift();
        if (f) throw f;
        return true;
      },
    }),
  } as unknown as Kafka;
  return { kafka, calls, topics };
}

const protocolError = (retriable: boolean) => Object.assign(new Error('This server does not host this topic-partition'), { name: 'KafkaJSProtocolError', retriable });

describe('ensureTopics', () => {
  it('retries a retriable error while the new topic settles', async () => {
    const f = fakeKafka([protocolError(true)]);
    await ensureTopics(f.kafka, [{ topic: 't1' }, { topic: 't2' }]);
    expect(f.calls.create).toBe(1); // the second attempt finds both topics created
    expect(f.calls.connect).toBe(2);
    expect(f.calls.disconnect).toBe(2);
    expect([...f.topics].sort()).toEqual(['t1', 't2']);
  });

  it('fails at once on a non-retriable error', async () => {
    const f = fakeKafka([protocolError(false)]);
    await expect(ensureTopics(f.kafka, [{ topic: 't1' }])).rejects.toThrow(/does not host/);
    expect(f.calls.connect).toBe(1);
  });

  it('fails after one attempt when the broker cannot be reached (kafkajs has retried already)', async () => {
    let connects = 0;
    const kafka = {
      admin: () => ({
        connect: async () => {
          connects++;
          throw Object.assign(new Error('Connection error: connect ECONNREFUSED'), { name: 'KafkaJSNumberOfRetriesExceeded', retriable: false });
        },
        disconnect: async () => {},
      }),
    } as unknown as Kafka;
    await expect(ensureTopics(kafka, [{ topic: 't1' }])).rejects.toThrow(/ECONNREFUSED/);
    expect(connects).toBe(1);
  });
});
