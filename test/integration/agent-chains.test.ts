/**
 * An untested tool chain whose requests fall in clusters with different first missing steps: the
 * reported step is the one most of its requests miss, read through the real engine's view
 * (tool_chain_coverage) and `toolChains` (what `evalgap agent-coverage` and the report print).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAgentProfile, toolChains } from '../../src/store/agent.js';
import { Store, type RequestRow } from '../../src/store/store.js';
import { testConfig, tmpDir } from '../helpers/fixtures.js';

const MODEL = 'cm-0000000000aa';
const CHAIN = ['search_kb', 'escalate_human', 'create_ticket'];
let store: Store;
const t0 = Date.parse('2026-12-01T10:00:00Z');

function request(i: number, cluster: number): RequestRow {
  return {
    request_id: `chain-${i}`,
    ts: new Date(t0 + i * 1000).toISOString(),
    agent: 'a',
    session_id: `s-${i}`,
    turn: 1,
    query: `question ${i}`,
    query_redacted: 0,
    truncated: 0,
    cluster,
    similarity: 0.8,
    coverage: 0.8,
    covered: 1,
    escalated: 0,
    outcome: i === 0 ? 'failed' : 'ok',
    latency_ms: null,
    cost_usd: null,
    tools: CHAIN,
    metadata: '{}',
    model_version: MODEL,
    kafka_topic: 'chains',
    kafka_partition: 0,
    kafka_offset: String(i),
  };
}

beforeAll(async () => {
  store = await Store.open(testConfig(path.join(tmpDir(), 'chdb')).clickhouse);
  // cluster 1's cases call search_kb first; cluster 2's cases take another chain
  await registerAgentProfile(store, {
    modelVersion: MODEL,
    depth: { cases: 0, shares: [0, 0, 0, 0], maxTurn: 0 },
    tools: { cases: 20, chains: [{ cluster: 1, tools: ['search_kb'], cases: 10 }, { cluster: 2, tools: ['order_lookup'], cases: 10 }] },
  });
  // one request in cluster 1 (missing search_kb→escalate_human) written first, then three in cluster 2
  // (missing the chain's start, ^→search_kb)
  await store.insertRequests([request(0, 1), request(1, 2), request(2, 2), request(3, 2)]);
}, 120_000);

afterAll(async () => {
  await store?.close();
});

describe('an untested chain across clusters', () => {
  it('reports the first missing step most of its requests miss, with every request counted', async () => {
    const perRequest = await store.query<{ cluster: number; missing_bigram: string }>(
      `SELECT cluster, missing_bigram FROM ${store.t('tool_chain_coverage')} ORDER BY request_id`,
    );
    expect(perRequest.map((r) => r.missing_bigram)).toEqual(['search_kb→escalate_human', '^→search_kb', '^→search_kb', '^→search_kb']);
    const out = await toolChains(store, { since: t0 - 1000, until: t0 + 60_000 });
    expect(out.verdicts).toEqual({ untested: 4 });
    expect(out.untested).toHaveLength(1);
    const c = out.untested[0]!;
    expect(c.chain).toBe(CHAIN.join(' → '));
    expect(c.missingBigram).toBe('^→search_kb');
    expect(c.requests).toBe(4);
    expect(c.failed).toBe(1);
    expect(c.failureRate).toBeCloseTo(0.25, 9);
    expect(c.examples.length).toBeGreaterThan(0);
    expect(c.examples.length).toBeLessThanOrEqual(3);
  });
});
