/**
 * Gap discovery on Banking77 (npm run bench; prints one JSON object).
 *
 * Per seeded draw: `held` of the 77 intents are held out of the fit; the coverage model is fitted
 * on the train queries of the others (`--fit=half`: a random half of them, the other half joining
 * the traffic: a thinner eval set). Production traffic (`traffic` requests) is
 * drawn like a deployment's: each request is, with probability 0.3, a retry of the previous one
 * (same text), otherwise an intent (a held-out one with probability `novel`, default 7%) and one
 * of its phrasings the fit did not see (test queries; held-out intents: train and test). So in-scope near
 * misses repeat as real ones do and are about as many uncovered rows as the new topics.
 * `--stream=sessions` draws the traffic as conversations instead, as ../shared/tools/sessions_stream.py
 * does: 1 + ⌊Exp(mean 3)⌋ turns (at most 30), each later turn a new intent (0.15), another phrasing
 * of the same intent (0.40) or a retry of the same text; rows carry their session id and turn. Rows are
 * assigned by the coverage model (per-region thresholds, depth bands), stored with their int8
 * embeddings (every uncovered one, the 1-in-20 covered sample) in an embedded ClickHouse, and one
 * `discoverGaps` pass (store read + discovery + write) groups the uncovered ones. Scored:
 *  - heldOutLeadTopic: share of held-out intents that are the majority intent of some topic gap
 *    (heldOutLeadAny: of any gap);
 *  - top10HeldOut: share of the 10 first-ranked gaps whose majority is a held-out intent;
 *  - nearMissInTopics: share of the members of topic gaps that are in-scope intents' queries;
 *  - thinPrecision: share of thin gaps whose majority is an in-scope intent;
 *  - purity, pollution (in-scope share of all gap members), noise (uncovered rows in no gap);
 *  - kmeansReference: plain k-means on the uncovered embeddings (k = the groups discovery found,
 *    and k = √(n/2)): share of held-out intents that lead a k-means group.
 * A sweep over grouping parameters (pure core, same rows) shows the trade-off of the defaults; two
 * of its entries, the defaults and the code before the join rule (`nearerThanEvalSet: false`), are
 * reported per draw and as mean and worst draw (`beforeAndNow`), with the pure core's time of each
 * (same rows, interleaved before, now, now, before; `pureCoreTimeRatioNowOverBefore`) and why each held-out intent
 * that leads no topic gap missed (`missCauses`: unreachable, thin, merged, noise).
 * `--dump=DIR` writes each draw's uncovered rows (with their session ids), vectors and scoring inputs
 * (the session evidence of src/store/gaps.ts readSessionEvidence included); `--replay=DIR` (with
 * `--only=NAME,…` to pick sweep entries by a part of their name) runs the sweep on them without
 * embedding, fitting or the store, for iterating on the pure core.
 * Then the time of one pass over 100,000 uncovered rows synthesised by resampling the real
 * uncovered embeddings with jitter: the pure core, and through the embedded store.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { loadConfig } from '../../src/config/index.js';
import { buildCoverageModel, dedupeCases, evalSetHash, DEFAULT_FIT } from '../../src/coverage/fit.js';
import { clusterEmbeddings } from '../../src/coverage/cluster.js';
import { CoverageAssigner, type Manifest } from '../../src/coverage/model.js';
import { normalizeRows, rng } from '../../src/coverage/vec.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { DEFAULT_DISCOVERY, discover, type DiscoveryInput, type DiscoveryOptions } from '../../src/gaps/discover.js';
import { discoverGaps } from '../../src/gaps/run.js';
import { dequantizeInto, inCoveredSample, quantize, type EmbeddingRow } from '../../src/store/embeddings.js';
import { readSessionEvidence, readUncovered } from '../../src/store/gaps.js';
import { Store, type RequestRow } from '../../src/store/store.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const draws = Number(args.get('draws') ?? 3);
const heldOutCount = Number(args.get('held') ?? 15);
const trafficRows = Number(args.get('traffic') ?? 30_000);
const novelShare = Number(args.get('novel') ?? 0.07);
/** train: fit on every train query of the fitted intents, in-scope traffic = test queries (the set-up); half: fit on half of them, the other half is traffic too */
const fitSplit = (args.get('fit') ?? 'train') as 'train' | 'half';
const bigN = Number(args.get('rows') ?? 100_000);
/** retries: the stream without sessions (each request a retry of the previous one with probability 0.3); sessions: conversations as ../shared/tools/sessions_stream.py draws them */
const streamKind = (args.get('stream') ?? 'retries') as 'retries' | 'sessions';
/** --dump=DIR: write each draw's uncovered rows, vectors and scoring inputs to DIR (draw-N.json, draw-N.f32) for --replay */
const dumpDir = args.get('dump');
/** --replay=DIR: no embedding, fit or store: the sweep (or --only=NAME,… of it) on the rows --dump wrote; prints one JSON object */
const replayDir = args.get('replay');

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

/** Ranking and separation: gaps are numbered in rank order (0 = first), `kinds[g]` their kind. */
function rankScore(labels: Int32Array, intents: string[], held: Set<string>, kinds: string[]) {
  const byGap = new Map<number, Map<string, number>>();
  labels.forEach((g, i) => {
    if (g < 0) return;
    const m = byGap.get(g) ?? new Map<string, number>();
    m.set(intents[i], (m.get(intents[i]) ?? 0) + 1);
    byGap.set(g, m);
  });
  const majority = new Map<number, string>();
  for (const [g, m] of byGap) majority.set(g, [...m.entries()].sort((a, b) => b[1] - a[1])[0][0]);
  const ranked = [...byGap.keys()].sort((a, b) => a - b);
  const top = ranked.slice(0, 10);
  const topicIds = ranked.filter((g) => kinds[g] === 'topic');
  const thinIds = ranked.filter((g) => kinds[g] === 'thin');
  let topicMembers = 0;
  let nearMiss = 0;
  for (const g of topicIds) {
    for (const [intent, c] of byGap.get(g)!) {
      topicMembers += c;
      if (!held.has(intent)) nearMiss += c;
    }
  }
  return {
    topicGaps: topicIds.length,
    thinGaps: thinIds.length,
    heldOutLeadTopic: new Set(topicIds.map((g) => majority.get(g)!).filter((x) => held.has(x))).size / held.size,
    heldOutLeadAny: new Set(ranked.map((g) => majority.get(g)!).filter((x) => held.has(x))).size / held.size,
    top10HeldOut: top.length ? top.filter((g) => held.has(majority.get(g)!)).length / top.length : NaN,
    nearMissInTopics: topicMembers ? nearMiss / topicMembers : NaN,
    thinPrecision: thinIds.length ? thinIds.filter((g) => !held.has(majority.get(g)!)).length / thinIds.length : NaN,
  };
}

/** the sweep entry that is the code before the join rule (a request joins a group only when nearer it than the eval set) */
const BEFORE = 'before: every request that passes a group’s cutoff joins it (nearerThanEvalSet false)';
const TARGET_KEYS = ['heldOutLeadTopic', 'heldOutLeadAny', 'top10HeldOut', 'nearMissInTopics', 'topicGaps', 'thinGaps'] as const;
const pick = (x: ReturnType<typeof rankScore>) => Object.fromEntries(TARGET_KEYS.map((k) => [k, x[k]]));

/** the sweep: grouping parameters tried on the same rows (pure core) */
const CONFIGS: [string, Partial<DiscoveryOptions>][] = [
  ['default (auto: mcs 5-10, minSamples ≤ 5)', {}],
  [BEFORE, { nearerThanEvalSet: false }],
  ['no session test (sessionBayesFactor 0), nearerThanEvalSet false', { sessionBayesFactor: 0, nearerThanEvalSet: false }],
  ['session test, Bayes factor 5', { sessionBayesFactor: 5 }],
  ['session test, Bayes factor 10', { sessionBayesFactor: 10 }],
  ['session test, Bayes factor 100', { sessionBayesFactor: 100 }],
  ['no second pass over the deep noise (deepPass false), no session test, nearerThanEvalSet false', { deepPass: false, sessionBayesFactor: 0, nearerThanEvalSet: false }],
  ['earlier: neither the deep pass nor the split of groups, no session test, nearerThanEvalSet false', { deepPass: false, splitGroups: false, sessionBayesFactor: 0, nearerThanEvalSet: false }],
  ['no second pass over the deep noise (deepPass false)', { deepPass: false }],
  ['requests, not distinct phrasings (distinctPhrasings false)', { distinctPhrasings: false }],
  ['mcs 5, ms 2', { minClusterSize: 5, minSamples: 2 }],
  ['excessAlpha 0.05', { excessAlpha: 0.05 }],
  ['excessAlpha 0.01', { excessAlpha: 0.01 }],
  ['mcs 5, ms 3', { minClusterSize: 5, minSamples: 3 }],
  ['mcs 8, ms 5', { minClusterSize: 8, minSamples: 5 }],
  ['mcs 15, ms 5', { minClusterSize: 15, minSamples: 5 }],
  ['memberQuantile 0.2', { memberQuantile: 0.2 }],
  ['no merging (mergeSimilarity 1)', { mergeSimilarity: 1 }],
  ['mergeSimilarity 0.75', { mergeSimilarity: 0.75 }],
  ['mergeSimilarity 0.7', { mergeSimilarity: 0.7 }],
];

/**
 * Why each held-out intent that leads no topic gap missed (labels: gap index in rank order, or -1):
 * 'unreachable' (fewer uncovered distinct phrasings than the minimum cluster size: no density
 * method can make a group of it), 'thin' (it leads a thin group), 'merged' (most of its grouped rows
 * sit in gaps another intent leads), 'noise' (most of its rows are in no gap).
 */
function missCauses(labels: Int32Array, intents: string[], held: Set<string>, rows: readonly { query: string }[], kinds: string[], mcs: number) {
  const byGap = new Map<number, Map<string, number>>();
  labels.forEach((g, i) => {
    if (g < 0) return;
    const m = byGap.get(g) ?? new Map<string, number>();
    m.set(intents[i], (m.get(intents[i]) ?? 0) + 1);
    byGap.set(g, m);
  });
  const majority = new Map<number, string>();
  for (const [g, m] of byGap) majority.set(g, [...m.entries()].sort((a, b) => b[1] - a[1])[0][0]);
  const out: Record<string, string[]> = { unreachable: [], thin: [], merged: [], noise: [] };
  for (const h of held) {
    if ([...majority].some(([g, x]) => x === h && kinds[g] === 'topic')) continue;
    const idx = intents.map((x, i) => (x === h ? i : -1)).filter((i) => i >= 0);
    const distinct = new Set(idx.map((i) => rows[i].query.toLowerCase().replace(/\s+/g, ' ').trim())).size;
    if (distinct < mcs) out.unreachable.push(h);
    else if ([...majority].some(([g, x]) => x === h && kinds[g] === 'thin')) out.thin.push(h);
    else if (idx.filter((i) => labels[i] >= 0).length * 2 >= idx.length) out.merged.push(h);
    else out.noise.push(h);
  }
  return out;
}

/** Figures of one sweep entry over the draws: mean, worst draw, per draw, and why held-out intents missed. */
function summarise(xs: { scores: ReturnType<typeof rankScore>; missed: Record<string, string[]>; groups: number }[], heldPerDraw: number) {
  const col = (k: 'heldOutLeadTopic' | 'heldOutLeadAny' | 'top10HeldOut' | 'nearMissInTopics' | 'topicGaps' | 'thinGaps') => xs.map((x) => Number(x.scores[k]));
  const avg = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  return {
    mean: Object.fromEntries(TARGET_KEYS.map((k) => [k, avg(col(k))])),
    worstDraw: { heldOutLeadTopic: Math.min(...col('heldOutLeadTopic')), top10HeldOut: Math.min(...col('top10HeldOut')), nearMissInTopics: Math.max(...col('nearMissInTopics')) },
    perDraw: Object.fromEntries((['heldOutLeadTopic', 'top10HeldOut', 'nearMissInTopics'] as const).map((k) => [k, col(k).map((v) => Math.round(v * 1000) / 1000)])),
    heldOutMissedBy: { ...Object.fromEntries(['unreachable', 'thin', 'merged', 'noise'].map((c) => [c, xs.reduce((a, x) => a + x.missed[c].length, 0)])), of: xs.length * heldPerDraw },
  };
}

/** --replay: the sweep on dumped rows (pure core only) */
function replay(dir: string) {
  const only = args.get('only')?.split(',');
  const files = fs.readdirSync(dir).filter((f) => /^draw-\d+\.json$/.test(f)).sort((a, b) => parseInt(a.slice(5)) - parseInt(b.slice(5)));
  const results: Record<string, { scores: ReturnType<typeof rankScore>; missed: Record<string, string[]>; groups: number }[]> = {};
  let heldPerDraw = 0;
  for (const f of files) {
    const dump = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as {
      held: string[];
      intents: string[];
      input: Omit<DiscoveryInput, 'vectors' | 'clusterLabels'>;
    };
    const b = fs.readFileSync(path.join(dir, f.replace(/json$/, 'f32')));
    const vectors = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    const input: DiscoveryInput = { ...dump.input, vectors, clusterLabels: new Map() };
    const held = new Set(dump.held);
    heldPerDraw = held.size;
    for (const [name, o] of CONFIGS) {
      if (only && !only.some((x) => name.includes(x))) continue;
      const r = discover(input, { ...DEFAULT_DISCOVERY, ...o });
      const kinds = r.gaps.filter((g) => g.status !== 'closed').map((g) => g.kind);
      (results[name] ??= []).push({ scores: rankScore(r.membership, dump.intents, held, kinds), missed: missCauses(r.membership, dump.intents, held, input.rows, kinds, r.params.minClusterSize), groups: kinds.length });
    }
    console.error(`replayed ${f}`);
  }
  console.log(JSON.stringify({ bench: 'gaps', replay: dir, draws: files.length, sweep: Object.fromEntries(Object.entries(results).map(([k, xs]) => [k, summarise(xs, heldPerDraw)])) }, null, 2));
}

async function main() {
  if (replayDir) return replay(replayDir);
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
  const emb = { model: embedder.modelName, checksum: embedder.modelChecksum, precision: embedder.precision, dim, maxTokens: embedder.maxTokens };
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
  type Side = { pureCoreMs: number; missed: Record<string, string[]> } & Record<string, unknown>;
  const compare: { draw: number; before: Side; now: Side }[] = [];
  const sweep: Record<string, (ReturnType<typeof score> & ReturnType<typeof rankScore>)[]> = {};
  let lastUncovered: Float32Array | null = null;
  for (let d = 0; d < draws; d++) {
    const held = holdOut(cats, heldOutCount, 1000 + d);
    const r = rng(77 + d);
    const fitIdx: number[] = [];
    const pool = new Map<string, { text: string; v: Float32Array }[]>();
    const add = (intent: string, text: string, v: Float32Array) => {
      const l = pool.get(intent) ?? [];
      l.push({ text, v });
      pool.set(intent, l);
    };
    trainCases.forEach((c, i) => {
      if (!held.has(c.tags[0]) && (fitSplit === 'train' || r() < 0.5)) fitIdx.push(i);
      else add(c.tags[0], c.text, trainVec.subarray(i * dim, i * dim + dim));
    });
    test.forEach((t, i) => add(t.category, t.text, testVec.subarray(i * dim, i * dim + dim)));
    const vec = new Float32Array(fitIdx.length * dim);
    fitIdx.forEach((i, j) => vec.set(trainVec.subarray(i * dim, i * dim + dim), j * dim));
    const cases = fitIdx.map((i) => trainCases[i]);
    const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vec, emb, { ...DEFAULT_FIT, source: 'banking77', textField: 'text' });
    const m = built.draft;
    const assigner = new CoverageAssigner({ manifest: { ...m, files: {} as Manifest['files'] }, ...built.arrays });
    // production traffic: retries, in-scope phrasings the fit did not see, held-out intents
    const fitted = cats.filter((c) => !held.has(c));
    const heldList = [...held];
    const traffic: { text: string; intent: string; v: Float32Array; session: string; turn: number }[] = [];
    const pickIntent = () => {
      const list = r() < novelShare ? heldList : fitted;
      return list[Math.floor(r() * list.length)];
    };
    const phrase = (intent: string) => {
      const p = pool.get(intent)!;
      return p[Math.floor(r() * p.length)];
    };
    if (streamKind === 'sessions') {
      // sessions as ../shared/tools/sessions_stream.py draws them: 1 + ⌊Exp(mean 3)⌋ turns (at most
      // 30); each later turn is, with probability 0.15, a new intent, 0.40 another phrasing of the same
      // intent, else a retry of the same text
      for (let s = 0; traffic.length < trafficRows; s++) {
        let intent = pickIntent();
        let q = phrase(intent);
        const turns = Math.min(30, 1 + Math.floor(-3 * Math.log(1 - r())));
        for (let t = 1; t <= turns && traffic.length < trafficRows; t++) {
          if (t > 1) {
            const u = r();
            if (u < 0.15) {
              intent = pickIntent();
              q = phrase(intent);
            } else if (u < 0.55) q = phrase(intent);
          }
          traffic.push({ text: q.text, intent, v: q.v, session: `s-${d}-${s}`, turn: t });
        }
      }
    } else {
      for (let i = 0; i < trafficRows; i++) {
        if (i > 0 && r() < 0.3) {
          traffic.push(traffic[i - 1]);
          continue;
        }
        const intent = pickIntent();
        const q = phrase(intent);
        traffic.push({ text: q.text, intent, v: q.v, session: '', turn: 0 });
      }
    }
    const tv = new Float32Array(traffic.length * dim);
    traffic.forEach((t, i) => tv.set(t.v, i * dim));
    const a = assigner.assign(tv, traffic.length);
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
        session_id: t.session,
        turn: t.turn,
        query: t.text,
        query_redacted: 0,
        truncated: 0,
        cluster: a.cluster[i],
        similarity: a.similarity[i],
        runner_up: a.runnerUp[i],
        runner_up_similarity: a.runnerUpSimilarity[i],
        coverage: a.coverage[i],
        covered: a.covered[i] ? 1 : 0,
        coverage_band: a.band ? a.band[i] : -1,
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
      if (!row.covered || inCoveredSample(row.request_id)) {
        embRows.push({
          request_id: row.request_id,
          ts: row.ts,
          agent: row.agent,
          model_version: row.model_version,
          covered: row.covered,
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
    const novelProfile = m.calibration.bands?.novel ?? null;
    const promisedRate = m.calibration.expectedRateInterval[1];
    const report = await discoverGaps(store, { now: now + 1000, novelProfile, promisedRate });
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
    const kinds = report.gaps.filter((g) => g.status !== 'closed').map((g) => g.kind);
    if (args.get('debug')) {
      const ct = await store.query<{ cluster: number; n: string; u: string }>(`SELECT cluster, count() AS n, countIf(covered = 0) AS u FROM ${store.t('requests')} GROUP BY cluster`);
      const cm = new Map(ct.map((x) => [Number(x.cluster), `${x.u}/${x.n}`]));
      report.gaps.forEach((g, gi) => {
        const its = intents.filter((_, i) => labels[i] === gi);
        const maj = [...new Set(its)].sort((x, y) => its.filter((t) => t === y).length - its.filter((t) => t === x).length)[0];
        console.error(gi + 1, g.kind, held.has(maj) ? 'HELD' : 'in', maj, g.members, g.phrasings, g.nearestCluster, cm.get(g.nearestCluster), g.depth?.toFixed(2));
      });
      console.error('promised', promisedRate, 'deff', data.rows.length / new Set(data.rows.map((x) => x.query.toLowerCase())).size);
    }
    const rk = rankScore(labels, intents, held, kinds);
    const kmK = [s.gaps, Math.max(2, Math.round(Math.sqrt(data.rows.length / 2)))];
    const kmeansReference = kmK.map((k) => {
      const km = clusterEmbeddings(data.vectors, data.rows.length, dim, Math.min(k, data.rows.length));
      return { k, heldOutLead: score(km.labels, intents, held).intentRecall };
    });
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
      ...rk,
      kmeansReference,
      ms: report.ms,
      topGaps: report.gaps.slice(0, 10).map((g) => ({ label: g.label, kind: g.kind, members: g.members, phrasings: g.phrasings, depth: g.depth })),
    });
    console.error(JSON.stringify(perDraw[perDraw.length - 1]));
    // sweep of the grouping parameters on the same rows (pure core)
    const perCluster = new Map<number, { cluster: number; requests: number; uncovered: number }>();
    for (const row of rows) {
      const c = perCluster.get(row.cluster) ?? { cluster: row.cluster, requests: 0, uncovered: 0 };
      c.requests++;
      c.uncovered += row.covered ? 0 : 1;
      perCluster.set(row.cluster, c);
    }
    const compared: Record<string, { scores: ReturnType<typeof rankScore>; ms: number; misses: Record<string, string[]> }> = {};
    const sweepInput: DiscoveryInput = {
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
      novelProfile,
      clusterTraffic: [...perCluster.values()],
      promisedRate,
      sessionEvidence: await readSessionEvidence(store, { since: now - 7 * 86_400_000, until: now + 1000 }),
    };
    if (dumpDir) {
      fs.mkdirSync(dumpDir, { recursive: true });
      const { vectors, clusterLabels: _labels, ...rest } = sweepInput;
      fs.writeFileSync(path.join(dumpDir, `draw-${d}.json`), JSON.stringify({ draw: d, held: [...held], intents, input: rest }));
      fs.writeFileSync(path.join(dumpDir, `draw-${d}.f32`), Buffer.from(vectors.buffer, vectors.byteOffset, vectors.byteLength));
    }
    for (const [name, o] of CONFIGS) {
      const t0 = performance.now();
      const r = discover(sweepInput, { ...DEFAULT_DISCOVERY, ...o });
      const ms = performance.now() - t0;
      const rks = rankScore(r.membership, intents, held, r.gaps.filter((g) => g.status !== 'closed').map((g) => g.kind));
      (sweep[name] ??= []).push({ ...score(r.membership, intents, held), ...rks });
      if (name === BEFORE || Object.keys(o).length === 0) {
        compared[name === BEFORE ? 'before' : 'now'] = { scores: rks, ms, misses: missCauses(r.membership, intents, held, data.rows, r.gaps.map((g) => g.kind), r.params.minClusterSize) };
      }
    }
    // the pure core's time, before and now, interleaved (before, now, now, before) on the same rows
    const timed = { before: 0, now: 0 };
    for (const w of ['before', 'now', 'now', 'before'] as const) {
      const t0 = performance.now();
      discover(sweepInput, { ...DEFAULT_DISCOVERY, sessionBayesFactor: w === 'now' ? DEFAULT_DISCOVERY.sessionBayesFactor : 0 });
      timed[w] += (performance.now() - t0) / 2;
    }
    compare.push({
      draw: d,
      before: { ...pick(compared.before.scores), pureCoreMs: Math.round(timed.before), missed: compared.before.misses },
      now: { ...pick(compared.now.scores), pureCoreMs: Math.round(timed.now), missed: compared.now.misses },
    });
    lastUncovered = data.vectors;
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const mean = <T extends Record<string, unknown>>(xs: T[], key: keyof T) => xs.reduce((s, x) => s + Number(x[key]), 0) / xs.length;
  const keys = ['heldOutLeadTopic', 'heldOutLeadAny', 'top10HeldOut', 'nearMissInTopics', 'thinPrecision', 'topicGaps', 'thinGaps', 'purity', 'purityWeighted', 'intentRecall', 'queryRecall', 'pollution', 'noise', 'gaps'] as const;

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
  const drawsDone = perDraw;

  console.log(
    JSON.stringify(
      {
        bench: 'gaps',
        data: 'banking77',
        draws,
        heldOutIntents: heldOutCount,
        fit: fitSplit === 'train' ? 'train queries of the fitted intents' : 'a random half of the train queries of the fitted intents',
        stream: streamKind,
        traffic:
          streamKind === 'sessions'
            ? `${trafficRows} requests in sessions of 1 + ⌊Exp(mean 3)⌋ turns (≤ 30): a session starts on an intent (held-out with probability ${novelShare}) and one of its phrasings the fit did not see; each later turn is a new intent (0.15), another phrasing of the same intent (0.40) or a retry of the same text`
            : `${trafficRows} requests: 30% retries of the previous one, else an intent (held-out with probability ${novelShare}) and one of its phrasings the fit did not see`,
        mean: {
          ...Object.fromEntries(keys.map((k) => [k, mean(drawsDone, k)])),
          kmeansReferenceHeldOutLead: Object.fromEntries(
            ['same k as discovery', 'k = √(n/2)'].map((name, j) => [name, drawsDone.reduce((x, p) => x + p.kmeansReference[j].heldOutLead, 0) / drawsDone.length]),
          ),
        },
        targets: { heldOutLeadTopic: '≥ 0.85', top10HeldOut: '≥ 0.80', nearMissInTopics: '≤ 0.05' },
        beforeAndNow: Object.fromEntries(
          (['before', 'now'] as const).map((w) => {
            const xs = compare.map((p) => p[w]);
            const col = (k: string) => xs.map((x) => Number((x as Record<string, unknown>)[k]));
            const causes = ['unreachable', 'thin', 'merged', 'noise'].map((c) => [c, xs.reduce((a, x) => a + x.missed[c].length, 0)]);
            return [
              w,
              {
                what: w === 'before' ? BEFORE : 'now (default options)',
                mean: Object.fromEntries(TARGET_KEYS.map((k) => [k, col(k).reduce((a, v) => a + v, 0) / xs.length])),
                worstDraw: { heldOutLeadTopic: Math.min(...col('heldOutLeadTopic')), top10HeldOut: Math.min(...col('top10HeldOut')), nearMissInTopics: Math.max(...col('nearMissInTopics')) },
                perDraw: Object.fromEntries(['heldOutLeadTopic', 'top10HeldOut', 'nearMissInTopics'].map((k) => [k, col(k).map((v) => Math.round(v * 1000) / 1000)])),
                heldOutMissedBy: { ...Object.fromEntries(causes), of: compare.length * heldOutCount },
                pureCoreMsTotal: xs.reduce((a, x) => a + x.pureCoreMs, 0),
              },
            ];
          }),
        ),
        pureCoreTimeRatioNowOverBefore: compare.reduce((a, p) => a + p.now.pureCoreMs, 0) / compare.reduce((a, p) => a + p.before.pureCoreMs, 0),
        perDrawBeforeAndNow: compare,
        heldOutReachable: 'held-out intents with at least the minimum cluster size of distinct uncovered phrasings: the most any grouping can lead (1 − unreachable / of)',
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
