/**
 * Gap discovery on Banking77 (npm run bench; prints one JSON object).
 *
 * Per seeded draw: a coverage model is fitted on the train queries of 60 of the 77 intents (the
 * other 17 held out). Production traffic = the test queries of all 77 intents plus the train
 * queries of the 17 held-out ones (novel traffic). Each is assigned by the coverage index, the
 * rows and int8 embeddings are written to an embedded ClickHouse, and one `discoverGaps` pass
 * (store read + discovery + write) groups the uncovered ones. Scored:
 *  - purity: share of a gap's members from its majority intent (mean over gaps, and member-weighted);
 *  - intentRecall: share of held-out intents that are the majority intent of some gap;
 *  - queryRecall: share of held-out intents' uncovered queries that land in a gap whose majority
 *    is their own intent;
 *  - pollution: share of gap members that are queries of fitted (in-scope) intents;
 *  - noise: share of uncovered rows left in no gap.
 * A sweep over minClusterSize/minSamples (pure core, same rows) shows the trade-off of the defaults.
 * Then the time of one pass over 100,000 uncovered rows synthesised by resampling the real
 * uncovered embeddings with jitter: the pure core, and through the embedded store.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { loadConfig } from '../../src/config/index.js';
import { buildCoverageModel, dedupeCases, evalSetHash, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { CoverageIndex } from '../../src/coverage/index.js';
import { normalizeRows, rng } from '../../src/coverage/vec.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { DEFAULT_DISCOVERY, discover, type DiscoveryOptions } from '../../src/gaps/discover.js';
import { discoverGaps } from '../../src/gaps/run.js';
import { dequantizeInto, quantize, type EmbeddingRow } from '../../src/store/embeddings.js';
import { readUncovered } from '../../src/store/gaps.js';
import { Store, type RequestRow } from '../../src/store/store.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 3);
const heldOutCount = Number(args.get('held') ?? 17);
const bigN = Number(args.get('rows') ?? 100_000);

function score(labels: Int32Array, intents: string[], held: Set<string>) {
  const byGap = new Map<number, Map<string, number>>();
  labels.forEach((g, i) => {
    if (g < 0) return;
    const m = byGap.get(g) ?? new Map<string, number>();
    m.set(intents[i], (m.get(intents[i]) ?? 0) + 1);
    byGap.set(g, m);
  });
  const majority = new Map<number, string>();
  let puritySum = 0;
  let members = 0;
  let majorityMembers = 0;
  let polluted = 0;
  for (const [g, m] of byGap) {
    const [name, c] = [...m.entries()].sort((a, b) => b[1] - a[1])[0];
    const n = [...m.values()].reduce((s, x) => s + x, 0);
    majority.set(g, name);
    puritySum += c / n;
    members += n;
    majorityMembers += c;
    for (const [intent, x] of m) if (!held.has(intent)) polluted += x;
  }
  const heldFound = new Set([...majority.values()].filter((x) => held.has(x)));
  let heldUncovered = 0;
  let heldInOwnGap = 0;
  intents.forEach((t, i) => {
    if (!held.has(t)) return;
    heldUncovered++;
    if (labels[i] >= 0 && majority.get(labels[i]) === t) heldInOwnGap++;
  });
  const noise = Array.from(labels).filter((g) => g < 0).length;
  return {
    gaps: byGap.size,
    gapsOfHeldOutIntents: [...majority.values()].filter((x) => held.has(x)).length,
    purity: byGap.size ? puritySum / byGap.size : NaN,
    purityWeighted: members ? majorityMembers / members : NaN,
    intentRecall: heldFound.size / held.size,
    queryRecall: heldUncovered ? heldInOwnGap / heldUncovered : NaN,
    pollution: members ? polluted / members : NaN,
    noise: labels.length ? noise / labels.length : NaN,
  };
}

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'gaps', skipped: BANKING77_MISSING }));
    return;
  }
  const cfg = loadConfig();
  const embedder = await loadEmbedder(cfg.embed);
  const dim = embedder.dim;
  const train = loadBanking77('train');
  const test = loadBanking77('test');
  const cats = categories(train);
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, dim, maxTokens: embedder.maxTokens };
  const trainCases = dedupeCases(train.map((r, i) => ({ id: `train-${i}`, text: r.text, tags: [r.category] }))).unique;
  // embeddings cached in the temp folder by model and texts (re-runs skip ~40 s of embedding)
  const embedAll = async (texts: string[]): Promise<Float32Array> => {
    const key = createHash('sha256').update(embedder.modelChecksum).update(texts.join('\n')).digest('hex').slice(0, 16);
    const file = path.join(os.tmpdir(), `evalgap-bench-emb-${key}.f32`);
    if (fs.existsSync(file)) {
      const b = fs.readFileSync(file);
      return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
    console.error(`embedding ${texts.length} queries…`);
    const v = (await embedder.embed(texts)).vectors;
    fs.writeFileSync(file, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    return v;
  };
  const trainVec = await embedAll(trainCases.map((c) => c.text));
  const testVec = await embedAll(test.map((r) => r.text));

  const perDraw = [];
  const sweep: Record<string, ReturnType<typeof score>[]> = {};
  let lastUncovered: Float32Array | null = null;
  for (let d = 0; d < draws; d++) {
    const held = holdOut(cats, heldOutCount, 1000 + d);
    const fitRows = trainCases.map((c, i) => [c, i] as const).filter(([c]) => !held.has(c.tags[0]));
    const vec = new Float32Array(fitRows.length * dim);
    fitRows.forEach(([, i], j) => vec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
    const cases = fitRows.map(([c]) => c);
    const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vec, emb, { ...DEFAULT_FIT, source: 'banking77', textField: 'text' });
    const m = built.draft;
    const index = new CoverageIndex(built.arrays.centroids, m.params.k, vec, built.arrays.labels, dim, m.params);
    // production traffic: all test queries, plus the train queries of held-out intents
    const traffic: { text: string; intent: string; v: Float32Array }[] = [];
    test.forEach((r, i) => traffic.push({ text: r.text, intent: r.category, v: testVec.subarray(i * dim, i * dim + dim) }));
    trainCases.forEach((c, i) => {
      if (held.has(c.tags[0])) traffic.push({ text: c.text, intent: c.tags[0], v: trainVec.subarray(i * dim, i * dim + dim) });
    });
    const tv = new Float32Array(traffic.length * dim);
    traffic.forEach((t, i) => tv.set(t.v, i * dim));
    const a = index.assign(tv, traffic.length, m.calibration.threshold);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-bench-gaps-'));
    const store = await Store.open({ ...cfg.clickhouse, url: undefined, path: path.join(dir, 'chdb') });
    const now = Date.now();
    const rows: RequestRow[] = [];
    const embRows: EmbeddingRow[] = [];
    traffic.forEach((t, i) => {
      const row: RequestRow = {
        request_id: `b-${d}-${i}`,
        ts: new Date(now - 6 * 86_400_000 + Math.floor((i / traffic.length) * 6 * 86_400_000)).toISOString(),
        agent: 'banking-bot',
        session_id: '',
        turn: 0,
        query: t.text,
        query_redacted: 0,
        truncated: 0,
        cluster: a.cluster[i],
        similarity: a.similarity[i],
        runner_up: a.runnerUp[i],
        runner_up_similarity: a.runnerUpSimilarity[i],
        coverage: a.coverage[i],
        covered: a.covered[i] ? 1 : 0,
        escalated: 0,
        outcome: 'ok',
        latency_ms: null,
        cost_usd: null,
        tools: [],
        metadata: '{}',
        model_version: m.version,
        kafka_topic: 'bench',
        kafka_partition: 0,
        kafka_offset: String(i),
      };
      rows.push(row);
      if (!row.covered) {
        embRows.push({
          request_id: row.request_id,
          ts: row.ts,
          agent: row.agent,
          model_version: row.model_version,
          covered: 0,
          kafka_topic: 'bench',
          kafka_partition: 0,
          kafka_offset: row.kafka_offset,
          ...(({ scale, q }) => ({ scale, embedding: q }))(quantize(tv, i * dim, dim)),
        });
      }
    });
    await store.registerClusters(m.clusters.map((c) => ({ model_version: m.version, cluster: c.id, label: c.label, size: c.size, share: c.share, examples: c.examples })));
    for (let i = 0; i < rows.length; i += 5000) await store.insertRequests(rows.slice(i, i + 5000), `bench-${d}-${i}`);
    await store.insertEmbeddings(embRows, `bench-emb-${d}`);
    const report = await discoverGaps(store, { now: now + 1000 });
    const intentOf = new Map(rows.map((r, i) => [r.request_id, traffic[i].intent]));
    const data = await readUncovered(store, { since: now - 7 * 86_400_000, until: now + 1000 });
    const members = await store.query<{ request_id: string; gap_id: string }>(
      `SELECT request_id, gap_id FROM ${store.t('gap_members')} FINAL WHERE scope = ''`,
    );
    const gapIndex = new Map(report.gaps.map((g, i) => [g.gapId, i]));
    const memberOf = new Map(members.map((x) => [x.request_id, x.gap_id ? gapIndex.get(x.gap_id)! : -1]));
    const labels = Int32Array.from(data.rows, (r) => memberOf.get(r.request_id) ?? -1);
    const intents = data.rows.map((r) => intentOf.get(r.request_id)!);
    const s = score(labels, intents, held);
    const heldTraffic = traffic.filter((t) => held.has(t.intent)).length;
    const heldUncovered = intents.filter((t) => held.has(t)).length;
    perDraw.push({
      draw: d,
      k: m.params.k,
      traffic: traffic.length,
      uncovered: data.rows.length,
      heldOutQueries: heldTraffic,
      heldOutUncoveredShare: heldUncovered / heldTraffic,
      inScopeUncoveredShare: (data.rows.length - heldUncovered) / (traffic.length - heldTraffic),
      ...s,
      ms: report.ms,
      topGaps: report.gaps.slice(0, 5).map((g) => ({ label: g.label, members: g.members })),
    });
    console.error(JSON.stringify(perDraw[perDraw.length - 1]));
    // sweep of the grouping parameters on the same rows (pure core)
    const configs: [string, Partial<DiscoveryOptions>][] = [
      ['default (auto: mcs 5-10, minSamples ≤ 5)', {}],
      ['mcs 5, ms 3', { minClusterSize: 5, minSamples: 3 }],
      ['mcs 8, ms 5', { minClusterSize: 8, minSamples: 5 }],
      ['mcs 15, ms 5', { minClusterSize: 15, minSamples: 5 }],
      ['memberQuantile 0.2', { memberQuantile: 0.2 }],
      ['no merging (mergeSimilarity 1)', { mergeSimilarity: 1 }],
      ['mergeSimilarity 0.75', { mergeSimilarity: 0.75 }],
      ['mergeSimilarity 0.7', { mergeSimilarity: 0.7 }],
    ];
    for (const [name, o] of configs) {
      const r = discover(
        {
          scope: '',
          rows: data.rows,
          vectors: data.vectors,
          dim,
          totalRequests: traffic.length,
          since: now - 7 * 86_400_000,
          until: now,
          previous: [],
          clusterLabels: new Map(),
          threshold: m.calibration.threshold,
          neighbours: 5,
        },
        { ...DEFAULT_DISCOVERY, ...o },
      );
      (sweep[name] ??= []).push(score(r.membership, intents, held));
    }
    lastUncovered = data.vectors;
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const mean = <T extends Record<string, unknown>>(xs: T[], key: keyof T) => xs.reduce((s, x) => s + Number(x[key]), 0) / xs.length;
  const keys = ['purity', 'purityWeighted', 'intentRecall', 'queryRecall', 'pollution', 'noise', 'gaps'] as const;

  // one pass over 100,000 uncovered rows: real uncovered embeddings resampled with jitter
  const src = lastUncovered!;
  const srcN = src.length / dim;
  const r = rng(5);
  const big = new Float32Array(bigN * dim);
  for (let i = 0; i < bigN; i++) {
    const j = Math.floor(r() * srcN);
    for (let d2 = 0; d2 < dim; d2++) big[i * dim + d2] = src[j * dim + d2] + (r() - 0.5) * 0.02;
  }
  normalizeRows(big, dim);
  const now = Date.now();
  const bigRows = Array.from({ length: bigN }, (_, i) => ({
    request_id: `x-${i}`,
    ts: now - 6 * 86_400_000 + Math.floor((i / bigN) * 6 * 86_400_000),
    agent: 'banking-bot',
    query: `synthetic ${i % 997}`,
    query_redacted: 0 as const,
    escalated: 0 as const,
    outcome: 'ok',
    cluster: 0,
    coverage: 0.3,
  }));
  const t = performance.now();
  const pure = discover({
    scope: '',
    rows: bigRows,
    vectors: big,
    dim,
    totalRequests: bigN * 3,
    since: now - 7 * 86_400_000,
    until: now,
    previous: [],
    clusterLabels: new Map(),
    threshold: 0.5,
    neighbours: 5,
  });
  const pureMs = performance.now() - t;
  // the same rows through the embedded store: read + discover + write
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-bench-gaps-'));
  const store = await Store.open({ ...cfg.clickhouse, url: undefined, path: path.join(dir, 'chdb') });
  for (let i = 0; i < bigN; i += 10_000) {
    const part = bigRows.slice(i, i + 10_000);
    await store.insertRequests(
      part.map((x, j) => ({
        request_id: x.request_id,
        ts: new Date(x.ts).toISOString(),
        agent: x.agent,
        session_id: '',
        turn: 0,
        query: x.query,
        query_redacted: 0,
        truncated: 0,
        cluster: 0,
        similarity: 0.5,
        coverage: 0.3,
        covered: 0,
        escalated: 0,
        outcome: 'ok',
        latency_ms: null,
        cost_usd: null,
        tools: [],
        metadata: '{}',
        model_version: 'cm-000000000000',
        kafka_topic: 'bench',
        kafka_partition: 0,
        kafka_offset: String(i + j),
      })),
      `big-${i}`,
    );
    await store.insertEmbeddings(
      part.map((x, j) => {
        const q = quantize(big, (i + j) * dim, dim);
        return {
          request_id: x.request_id,
          ts: new Date(x.ts).toISOString(),
          agent: x.agent,
          model_version: 'cm-000000000000',
          covered: 0,
          kafka_topic: 'bench',
          kafka_partition: 0,
          kafka_offset: String(i + j),
          scale: q.scale,
          embedding: q.q,
        };
      }),
      `big-emb-${i}`,
    );
  }
  const [bytes] = await store.query<{ b: string; rows: string }>(
    `SELECT sum(data_compressed_bytes) AS b, sum(rows) AS rows FROM system.parts WHERE database = {db:String} AND table = 'request_embeddings' AND active`,
    { db: store.database },
  );
  const t2 = performance.now();
  const viaStore = await discoverGaps(store, { now: now + 1000 });
  const storeMs = performance.now() - t2;
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
  // a check that the dequantised vectors are what discovery used
  const check = new Float32Array(dim);
  const q0 = quantize(big, 0, dim);
  dequantizeInto(q0.scale, q0.q, check, 0);

  console.log(
    JSON.stringify(
      {
        bench: 'gaps',
        data: 'banking77',
        draws,
        heldOutIntents: heldOutCount,
        traffic: 'test queries of all 77 intents + train queries of the held-out intents',
        mean: Object.fromEntries(keys.map((k) => [k, mean(perDraw, k)])),
        perDraw,
        sweep: Object.fromEntries(Object.entries(sweep).map(([name, xs]) => [name, Object.fromEntries(keys.map((k) => [k, mean(xs, k)]))])),
        pass100k: {
          rows: bigN,
          synthesis: 'uniform resampling of the last draw’s real uncovered embeddings, ±0.01 uniform jitter per component, re-normalised',
          pureCoreMs: Math.round(pureMs),
          pureCoreGaps: pure.gaps.length,
          viaEmbeddedStoreMs: Math.round(storeMs),
          pureCoreTimings: pure.timings,
          viaEmbeddedStore: viaStore.ms,
          embeddingsCompressedBytesPerRow: Number(bytes.b) / Number(bytes.rows),
        },
      },
      null,
      2,
    ),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
