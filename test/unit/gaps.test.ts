/** Gap discovery's pure core: HDBSCAN against scikit-learn, grouping, examples, stable ids, priorities, intervals. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CoverageIndex } from '../../src/coverage/index.js';
import { adjustedRandIndex } from '../../src/coverage/metrics.js';
import { normalizeRows, rng } from '../../src/coverage/vec.js';
import {
  DEFAULT_DISCOVERY,
  discover,
  groupDepth,
  inScopeMissShares,
  mergeSimilarGroups,
  novelBands,
  dropShallowGroups,
  bandLogRatios,
  clusterExcess,
  type DiscoveryInput,
  type UncoveredRow,
} from '../../src/gaps/discover.js';
import { hdbscan } from '../../src/gaps/hdbscan.js';
import { discoveryInput } from '../helpers/gaps.js';
import { allocate } from '../../src/gaps/run.js';
import { embeddingsFor, processMessages } from '../../src/ingest/process.js';
import { underTested, wilson } from '../../src/gaps/undertested.js';
import { dequantizeInto, inCoveredSample, quantize } from '../../src/store/embeddings.js';

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'vectors', 'hdbscan.json'), 'utf8')) as {
  cases: { n: number; minClusterSize: number; minSamples: number; points: number[][]; labels: number[] }[];
};

describe('hdbscan', () => {
  it.each(vectors.cases.map((c, i) => [i, c] as const))('gives scikit-learn 1.5.2 HDBSCAN labels on case %i', (_, c) => {
    const n = c.n;
    const dist = new Float32Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let d = 0; d < c.points[i].length; d++) s += (c.points[i][d] - c.points[j][d]) ** 2;
        dist[i * n + j] = Math.sqrt(s);
      }
    }
    const r = hdbscan(dist, n, { minClusterSize: c.minClusterSize, minSamples: c.minSamples, minDistance: 1e-9 });
    expect(r.k).toBe(Math.max(...c.labels) + 1);
    // the same partition (cluster numbering may differ) and the very same noise points
    expect(adjustedRandIndex(r.labels, c.labels)).toBe(1);
    expect(Array.from(r.labels, (l) => l < 0)).toEqual(c.labels.map((l) => l < 0));
  });

  it('leaves everything as noise when there are fewer points than the minimum cluster size', () => {
    const r = hdbscan(new Float32Array(9), 3, { minClusterSize: 5, minSamples: 2 });
    expect(r.k).toBe(0);
    expect(Array.from(r.labels)).toEqual([-1, -1, -1]);
  });
});

// ---------------------------------------------------------------- synthetic traffic on the unit sphere
const DIM = 32;
function unit(r: () => number): Float32Array {
  const v = Float32Array.from({ length: DIM }, () => r() * 2 - 1);
  return normalizeRows(v, DIM);
}
function around(c: Float32Array, spread: number, r: () => number): Float32Array {
  const v = Float32Array.from(c, (x) => x + (r() * 2 - 1) * spread);
  return normalizeRows(v, DIM);
}

interface Topic {
  name: string;
  words: string[];
  n: number;
  escalate: number;
}

function traffic(topics: Topic[], noise: number, seed: number, centres?: Float32Array[]) {
  const r = rng(seed);
  const cs = centres ?? topics.map(() => unit(r));
  const rows: UncoveredRow[] = [];
  const vecs: Float32Array[] = [];
  const truth: string[] = [];
  const t0 = Date.UTC(2026, 10, 20);
  topics.forEach((t, ti) => {
    for (let i = 0; i < t.n; i++) {
      vecs.push(around(cs[ti], 0.15, r));
      truth.push(t.name);
      rows.push({
        request_id: `${t.name}-${seed}-${i}`,
        ts: t0 + Math.floor(r() * 6 * 86_400_000),
        agent: 'bot',
        query: `${t.words[i % t.words.length]} ${t.words[(i + 1) % t.words.length]} question ${i}`,
        query_redacted: 0,
        escalated: r() < t.escalate ? 1 : 0,
        outcome: 'ok',
        cluster: ti,
        coverage: 0.3,
      });
    }
  });
  for (let i = 0; i < noise; i++) {
    vecs.push(unit(r));
    truth.push('noise');
    rows.push({
      request_id: `noise-${seed}-${i}`,
      ts: t0 + Math.floor(r() * 6 * 86_400_000),
      agent: 'bot',
      query: `random thing ${i} zebra${i}`,
      query_redacted: 0,
      escalated: 0,
      outcome: 'ok',
      cluster: 9,
      coverage: 0.2,
    });
  }
  const input = discoveryInput(rows, vecs, DIM, {
    since: t0,
    until: t0 + 7 * 86_400_000,
    clusterLabels: new Map([
      [0, 'cards'],
      [1, 'transfers'],
      [2, 'fees'],
    ]),
  });
  return { input, truth, centres: cs };
}

const TOPICS: Topic[] = [
  { name: 'crypto', words: ['bitcoin', 'crypto', 'wallet', 'ethereum'], n: 60, escalate: 0.5 },
  { name: 'mortgage', words: ['mortgage', 'house', 'loan', 'rate'], n: 40, escalate: 0 },
  { name: 'pets', words: ['dog', 'cat', 'insurance', 'vet'], n: 25, escalate: 0 },
];

describe('discover', () => {
  it('finds each topic as one gap, leaves scattered queries as noise, labels by distinctive terms', () => {
    const { input, truth } = traffic(TOPICS, 40, 1);
    const res = discover(input);
    const open = res.gaps.filter((g) => g.status !== 'closed');
    expect(open).toHaveLength(3);
    // purity: every gap's members come from one topic
    for (let gi = 0; gi < open.length; gi++) {
      const names = truth.filter((_, i) => res.membership[i] === gi);
      expect(new Set(names).size).toBe(1);
      expect(names.length).toBeGreaterThanOrEqual(0.9 * TOPICS.find((t) => t.name === names[0])!.n);
    }
    const noiseKept = truth.filter((t, i) => t === 'noise' && res.membership[i] < 0).length;
    expect(noiseKept).toBe(40);
    // ranked by priority = members × (1 + 4 × bad rate): crypto (60, half escalated) first
    expect(open[0].terms).toEqual(expect.arrayContaining(['bitcoin']));
    expect(open[0].priority).toBeCloseTo(open[0].members * (1 + 4 * open[0].badRate), 6);
    expect(open[0].escalationRate).toBeGreaterThan(0.3);
    expect(open[0].nearestCluster).toBe(0);
    expect(open[0].nearestClusterLabel).toBe('cards');
    expect(open[1].terms.join(' ')).toMatch(/mortgage|house|loan|rate/);
    expect(open[0].share).toBeCloseTo(open[0].members / input.totalRequests, 9);
    expect(res.gaps.map((g) => g.rank)).toEqual([1, 2, 3]);
  });

  it('gives diverse examples: the medoid first, no near-duplicates, no repeated text', () => {
    const { input } = traffic(TOPICS, 0, 2);
    // add exact duplicates of one crypto query
    const dupVec = input.vectors.slice(0, DIM);
    const rows = [...input.rows];
    const vec: number[] = Array.from(input.vectors);
    for (let i = 0; i < 20; i++) {
      rows.push({ ...rows[0], request_id: `dup-${i}` });
      vec.push(...dupVec);
    }
    const res = discover({ ...input, rows, vectors: Float32Array.from(vec) }, { ...DEFAULT_DISCOVERY, examples: 10 });
    const g = res.gaps[0];
    expect(new Set(g.examples.map((e) => e.toLowerCase())).size).toBe(g.examples.length);
    const idx = g.exampleIds.map((id) => rows.findIndex((r) => r.request_id === id));
    const vv = Float32Array.from(vec);
    for (let a = 0; a < idx.length; a++) {
      for (let b = a + 1; b < idx.length; b++) {
        let s = 0;
        for (let d = 0; d < DIM; d++) s += vv[idx[a] * DIM + d] * vv[idx[b] * DIM + d];
        expect(s).toBeLessThan(DEFAULT_DISCOVERY.nearDuplicate);
      }
    }
    // the medoid is the member most similar to the gap centroid
    const members = rows.map((_, i) => i).filter((i) => res.membership[i] === 0);
    const sim = (i: number) => {
      let s = 0;
      for (let d = 0; d < DIM; d++) s += vv[i * DIM + d] * g.centroid[d];
      return s;
    };
    expect(Math.max(...members.map(sim))).toBeCloseTo(sim(idx[0]), 5);
  });

  it('keeps gap ids across runs, closes a gap whose traffic is gone and reopens it when it returns', () => {
    const first = traffic(TOPICS, 20, 3);
    const r1 = discover(first.input);
    expect(r1.gaps.every((g) => g.status === 'new')).toBe(true);
    const prev = r1.gaps.map((g) => ({ gap_id: g.gapId, status: g.status, label: g.label, centroid: g.centroid }));
    // fresh traffic from the same topics (new draws), minus "pets"
    const second = traffic(TOPICS.slice(0, 2), 20, 4, first.centres);
    const r2 = discover({ ...second.input, previous: prev });
    const pets1 = r1.gaps.find((g) => g.terms.includes('dog') || g.terms.includes('cat'))!;
    const crypto1 = r1.gaps.find((g) => g.terms.includes('bitcoin'))!;
    const crypto2 = r2.gaps.find((g) => g.terms.includes('bitcoin'))!;
    expect(crypto2.gapId).toBe(crypto1.gapId);
    expect(crypto2.status).toBe('open');
    const closed = r2.gaps.filter((g) => g.status === 'closed');
    expect(closed.map((g) => g.gapId)).toEqual([pets1.gapId]);
    expect(closed[0].members).toBe(0);
    // pets come back
    const prev2 = r2.gaps.map((g) => ({ gap_id: g.gapId, status: g.status, label: g.label, centroid: g.centroid }));
    const third = traffic(TOPICS, 20, 5, first.centres);
    const r3 = discover({ ...third.input, previous: prev2 });
    expect(r3.gaps.find((g) => g.gapId === pets1.gapId)?.status).toBe('reopened');
    expect(r3.gaps.filter((g) => g.status === 'new')).toHaveLength(0);
  });

  it('labels redacted traffic by its nearest eval cluster, never by the hashes, and shows the hashes as examples', () => {
    const { input } = traffic([TOPICS[0]], 0, 6);
    // a redacted query is stored as the sha256 of its text: distinct texts, distinct hashes
    const rows = input.rows.map((r, i) => ({ ...r, query: i.toString(16).padStart(64, 'ab12'), query_redacted: 1 as const }));
    const res = discover({ ...input, rows });
    expect(res.gaps[0].label).toBe('(redacted text) near cards');
    expect(rows.map((r) => r.query)).toContain(res.gaps[0].examples[0]);
    expect(res.gaps[0].redactedShare).toBe(1);
  });

  it('finds no gap in scattered traffic, and one when it is a single topic plus noise', () => {
    expect(discover(traffic([], 80, 8).input).gaps).toHaveLength(0);
    const t = traffic([TOPICS[1]], 30, 9);
    const one = discover(t.input);
    expect(one.gaps).toHaveLength(1);
    const members = t.truth.filter((_, i) => one.membership[i] === 0);
    expect(members.length).toBeGreaterThanOrEqual(32); // of 40
    expect(new Set(members)).toEqual(new Set(['mortgage']));
  });

  it('merges groups whose centroids are closer than mergeSimilarity, closest first, and renumbers', () => {
    const x = normalizeRows(Float32Array.from([1, 0, 0, 1, 0.1, 0, 0.9, 0.2, 0, 0, 1, 0, 0, 0, 1]), 3);
    const labels = Int32Array.from([0, 1, 2, 3, 4]);
    expect(mergeSimilarGroups(labels, 5, x, 3, 0.95)).toBe(3);
    expect(Array.from(labels)).toEqual([0, 0, 0, 1, 2]);
    const l2 = Int32Array.from([0, 1, -1, 2, 3]);
    expect(mergeSimilarGroups(l2, 4, x, 3, 1)).toBe(4);
    expect(Array.from(l2)).toEqual([0, 1, -1, 2, 3]);
  });

  it('splits a group that holds two topics further apart than mergeSimilarity, which excess of mass kept as one', () => {
    // topics A and B (centre cosine 0.52–0.72, below mergeSimilarity 0.8) a little denser than the
    // gap between them, far from topic C and from scattered noise: excess of mass selects A ∪ B
    for (const seed of [1, 2, 3]) {
      const r = rng(seed);
      const base = unit(r);
      const other = unit(r);
      const mix = (x: Float32Array, y: Float32Array) => normalizeRows(Float32Array.from(x, (v, i) => 0.75 * v + 0.25 * y[i]), DIM);
      const [a, b, c] = [mix(base, other), mix(other, base), unit(r)];
      const centres = [a, b, c];
      const vecs: Float32Array[] = [];
      const truth: string[] = [];
      const rows: UncoveredRow[] = [];
      const add = (name: string, v: Float32Array) => {
        vecs.push(v);
        truth.push(name);
        rows.push({ request_id: `${name}-${rows.length}`, ts: 0, agent: 'bot', query: `${name} question ${rows.length}`, query_redacted: 0, escalated: 0, outcome: 'ok', cluster: 0, coverage: 0.3 });
      };
      ['A', 'B', 'C'].forEach((name, t) => {
        for (let i = 0; i < 30; i++) add(name, around(centres[t], 0.2, r));
      });
      for (let i = 0; i < 40; i++) add('noise', unit(r));
      const input = discoveryInput(rows, vecs, DIM);
      const leads = (res: ReturnType<typeof discover>) =>
        res.gaps.map((_, g) => {
          const names = truth.filter((_, i) => res.membership[i] === g);
          return [...new Set(names)].sort((x, y) => names.filter((t) => t === y).length - names.filter((t) => t === x).length)[0];
        });
      // the code before: A and B in one gap, one of them leads nothing
      const before = discover(input, { ...DEFAULT_DISCOVERY, splitGroups: false });
      expect(before.gaps).toHaveLength(2);
      // now: one gap per topic, each pure, the noise left out
      const now = discover(input);
      expect(now.gaps).toHaveLength(3);
      expect(new Set(leads(now))).toEqual(new Set(['A', 'B', 'C']));
      for (let g = 0; g < 3; g++) {
        const names = truth.filter((_, i) => now.membership[i] === g);
        expect(new Set(names).size).toBe(1);
        expect(names.length).toBeGreaterThanOrEqual(24);
      }
      expect(truth.filter((t, i) => t === 'noise' && now.membership[i] >= 0).length).toBeLessThanOrEqual(2);
    }
  });

  it('does not split one topic (its halves are closer than mergeSimilarity): the same gap as without the split', () => {
    for (const seed of [11, 12, 13]) {
      const t = traffic([{ ...TOPICS[0], n: 80 }], 30, seed);
      const res = discover(t.input);
      expect(res.gaps).toHaveLength(1);
      // the very gap the code before found
      expect(Array.from(res.membership)).toEqual(Array.from(discover(t.input, { ...DEFAULT_DISCOVERY, splitGroups: false }).membership));
    }
  });

  it('estimates more eval cases for a spread-out gap than for a tight one', () => {
    const r = rng(7);
    const c = unit(r);
    const make = (spread: number) => {
      const rows: UncoveredRow[] = [];
      const v = new Float32Array(60 * DIM);
      for (let i = 0; i < 60; i++) {
        v.set(around(c, spread, r), i * DIM);
        rows.push({ request_id: `r${i}`, ts: 0, agent: '', query: `q ${i}`, query_redacted: 0, escalated: 0, outcome: 'ok', cluster: 0, coverage: 0 });
      }
      return discover({ ...traffic([], 0, 1).input, rows, vectors: v, previous: [], threshold: 0.9 }, { ...DEFAULT_DISCOVERY, minClusterSize: 5 });
    };
    const tight = make(0.05).gaps[0];
    const loose = make(0.25).gaps[0];
    expect(tight.casesNeeded).toBe(5);
    expect(loose.casesNeeded).toBeGreaterThan(tight.casesNeeded);
  });
});

// ---------------------------------------------------------------- new topics vs near misses
/** a novel-topic band profile as fits produce it (all 9 bands; most of it below the threshold) */
const NOVEL_PROFILE = [0.058, 0.048, 0.083, 0.068, 0.187, 0.159, 0.214, 0.14, 0.043];

/**
 * Two groups of uncovered traffic: near misses of a tested cluster (12 phrasings, each asked 10
 * times, just below the threshold: bands 3–4) and a new topic (30 phrasings asked 1–2 times each,
 * deep: bands 0–2). The near misses have three times the volume.
 */
function nearMissAndTopic(seed: number) {
  const r = rng(seed);
  const cNear = unit(r);
  const cNovel = unit(r);
  const rows: UncoveredRow[] = [];
  const vecs: Float32Array[] = [];
  const truth: string[] = [];
  const t0 = Date.UTC(2026, 10, 20);
  const push = (name: string, text: string, v: Float32Array, band: number, esc: 0 | 1, cluster: number) => {
    rows.push({
      request_id: `${name}-${rows.length}`,
      ts: t0 + Math.floor(r() * 6 * 86_400_000),
      agent: 'bot',
      query: text,
      query_redacted: 0,
      escalated: esc,
      outcome: 'ok',
      cluster,
      coverage: 0.5,
      band,
    });
    vecs.push(v);
    truth.push(name);
  };
  for (let p = 0; p < 12; p++) {
    const v = around(cNear, 0.12, r);
    const band = p % 4 === 0 ? 3 : 4;
    for (let k = 0; k < 10; k++) push('near', `how do i freeze my card variant ${p}`, v, band, 0, 0);
  }
  for (let p = 0; p < 30; p++) {
    const v = around(cNovel, 0.12, r);
    const band = p % 3;
    for (let k = 0; k < 1 + (p % 2); k++) push('novel', `crypto wallet staking question ${p}`, v, band, 0, 1);
  }
  const input = discoveryInput(rows, vecs, DIM, {
    since: t0,
    until: t0 + 7 * 86_400_000,
    clusterLabels: new Map([
      [0, 'cards'],
      [1, 'transfers'],
    ]),
    novelProfile: NOVEL_PROFILE,
    // every request of the period per eval cluster: cluster 0 (cards) misses 5% like the others;
    // cluster 1 carries the new topic's misses on top
    clusterTraffic: [
      { cluster: 0, requests: 2400, uncovered: 120 },
      { cluster: 1, requests: 300, uncovered: 45 },
      { cluster: 2, requests: 1000, uncovered: 50 },
      { cluster: 3, requests: 1000, uncovered: 60 },
      { cluster: 4, requests: 800, uncovered: 35 },
    ],
  });
  return { input, truth };
}

describe('gap kinds and ranking by depth', () => {
  it('ranks a new topic before thrice its volume of near misses, and keeps the near misses of a cluster that misses as others do apart as thin coverage', () => {
    for (const seed of [1, 2, 3]) {
      const { input, truth } = nearMissAndTopic(seed);
      const res = discover(input);
      const open = res.gaps.filter((g) => g.status !== 'closed');
      expect(open).toHaveLength(2);
      const majority = (gi: number) => {
        const names = truth.filter((_, i) => res.membership[i] === gi);
        return names.sort((a, b) => names.filter((x) => x === b).length - names.filter((x) => x === a).length)[0];
      };
      // the new topic first, although the near misses have three times its requests
      expect(majority(0)).toBe('novel');
      expect(open[0].kind).toBe('topic');
      expect(open[0].depth!).toBeGreaterThan(0);
      expect(open[0].phrasings).toBeGreaterThanOrEqual(27);
      expect(majority(1)).toBe('near');
      expect(open[1].kind).toBe('thin');
      expect(open[1].members).toBeGreaterThan(open[0].members);
      expect(open[1].phrasings).toBeGreaterThanOrEqual(11);
      expect(open[1].depth!).toBeLessThan(0);
      expect(open[1].nearestClusterLabel).toBe('cards');
      // priority = volume × risk × novelty, novelty = 1 / (1 + e^−depth)
      expect(open[1].priority).toBeCloseTo(open[1].members * (1 + 4 * open[1].badRate) / (1 + Math.exp(-open[1].depth!)), 6);
      expect(res.gaps.map((g) => g.rank)).toEqual([1, 2]);
    }
  });

  it('calls no group thin whose cluster misses more than typical, nor one that sits deeper than near misses', () => {
    const { input, truth } = nearMissAndTopic(5);
    const nearOf = (res: ReturnType<typeof discover>) => res.gaps.find((_, gi) => truth.some((t, i) => t === 'near' && res.membership[i] === gi))!;
    // cluster 0 now misses 12%, more than the typical 5%: its group is a topic
    const excess = discover({ ...input, clusterTraffic: input.clusterTraffic!.map((c) => (c.cluster === 0 ? { ...c, uncovered: 290 } : c)) });
    expect(nearOf(excess).kind).toBe('topic');
    // the same group with deep bands (0–2): deeper than near misses, a topic although its cluster misses as others do
    const deep = discover({ ...input, rows: input.rows.map((r) => (r.query.startsWith('how do i freeze') ? { ...r, band: r.request_id.length % 3 } : r)) });
    expect(nearOf(deep).depth!).toBeGreaterThan(0);
    expect(nearOf(deep).kind).toBe('topic');
    // without per-cluster traffic there is no baseline: every group is a topic
    expect(discover({ ...input, clusterTraffic: [] }).gaps.every((g) => g.kind === 'topic')).toBe(true);
  });

  it('ranks thin groups after every topic even when they outweigh them', () => {
    const { input } = nearMissAndTopic(4);
    // the near misses escalate every time: priority far above the topic's, still second
    input.rows.forEach((r) => {
      if (r.query.startsWith('how do i freeze')) r.escalated = 1;
    });
    const open = discover(input).gaps;
    expect(open[0].kind).toBe('topic');
    expect(open[1].kind).toBe('thin');
    expect(open[1].priority).toBeGreaterThan(open[0].priority);
  });

  it('groups distinct phrasings: one phrasing repeated 60 times is not a gap by itself', () => {
    const r = rng(99);
    const { input, truth } = traffic(TOPICS.slice(0, 2), 20, 9);
    const v = unit(r);
    const rows = [...input.rows];
    const vectors = new Float32Array((rows.length + 60) * DIM);
    vectors.set(input.vectors);
    for (let k = 0; k < 60; k++) {
      rows.push({ ...input.rows[0], request_id: `retry-${k}`, query: 'why was I charged twice', cluster: 2 });
      vectors.set(v, (rows.length - 1) * DIM);
      truth.push('retry');
    }
    const withRepeats = { ...input, rows, vectors };
    const res = discover(withRepeats);
    expect(res.gaps).toHaveLength(2);
    expect(truth.filter((t, i) => t === 'retry' && res.membership[i] >= 0)).toHaveLength(0);
    // counted per request, the retried phrasing forms a gap of its own
    const perRequest = discover(withRepeats, { ...DEFAULT_DISCOVERY, distinctPhrasings: false });
    expect(perRequest.gaps).toHaveLength(3);
    expect(truth.filter((t, i) => t === 'retry' && perRequest.membership[i] >= 0)).toHaveLength(60);
  });

  it('calls a cluster’s misses an excess at the stated level: ≤ 1% of clusters missing at the typical rate, every one missing three times as much', () => {
    const r = rng(5);
    const binom = (n: number, p: number) => {
      let k = 0;
      for (let i = 0; i < n; i++) if (r() < p) k++;
      return k;
    };
    let flagged = 0;
    let total = 0;
    for (let rep = 0; rep < 40; rep++) {
      const traffic = Array.from({ length: 50 }, (_, c) => {
        const requests = 100 + Math.floor(r() * 900);
        return { cluster: c, requests, uncovered: binom(requests, 0.05) };
      });
      traffic.push({ cluster: 50, requests: 600, uncovered: binom(600, 0.15) });
      const ex = clusterExcess(traffic, 1, 1, 0.01);
      for (let c = 0; c < 50; c++) if (ex.get(c)) flagged++;
      total += 50;
      expect(ex.get(50)).toBe(true);
    }
    expect(flagged / total).toBeLessThanOrEqual(0.015);
    // repeats are not independent evidence: 10 requests per distinct phrasing shrink the evidence tenfold
    const t = [...Array.from({ length: 9 }, (_, c) => ({ cluster: c, requests: 1000, uncovered: 50 })), { cluster: 9, requests: 1000, uncovered: 80 }];
    expect(clusterExcess(t, 100, 100, 0.01).get(9)).toBe(true);
    expect(clusterExcess(t, 1000, 100, 0.01).get(9)).toBe(false);
    // no cluster with 20 requests: no baseline, no verdict
    expect(clusterExcess([{ cluster: 0, requests: 10, uncovered: 9 }], 9, 9, 0.01).size).toBe(0);
  });

  it('in-scope phrasings that miss fall 5/5/10/20/60% in the bands below the threshold; without the profile the deep share is tested against 40%', () => {
    expect(inScopeMissShares().map((x) => +x.toFixed(6))).toEqual([0.05, 0.05, 0.1, 0.2, 0.6]);
    expect(groupDepth([4, 4, 4, 3, 9, -1], null).deepShare).toBeCloseTo(0.25, 9);
    expect(groupDepth([0, 1, 2, 4], null).depth!).toBeGreaterThan(0);
    expect(groupDepth([4, 4, 4, 4], null).depth!).toBeLessThan(0);
    expect(groupDepth([-1, -1], NOVEL_PROFILE)).toEqual({ depth: null, deepShare: null });
  });
});

/**
 * Diffuse new topics among near misses as sparse as they are: two dense topics, two diffuse new
 * topics (30 phrasings each, asked once, in the deep bands 0–2) and 400 near misses of tested
 * clusters spread everywhere (each asked three times, in the bands just below the threshold: 3–4).
 * `diffuseBand` replaces the diffuse topics' bands (to put them where near misses sit).
 */
function diffuseAmongNearMisses(seed: number, diffuseBand?: number) {
  const r = rng(seed);
  const rows: UncoveredRow[] = [];
  const vecs: Float32Array[] = [];
  const truth: string[] = [];
  // coverage scores as the bands say: the diffuse topics (deep bands) far from the eval set, the near misses just below the threshold
  const push = (name: string, text: string, v: Float32Array, band: number, cluster: number, times = 1) => {
    for (let k = 0; k < times; k++) {
      rows.push({ request_id: `${name}-${rows.length}`, ts: 0, agent: 'bot', query: text, query_redacted: 0, escalated: 0, outcome: 'ok', cluster, coverage: band <= 2 ? 0.2 : 0.75, band });
      vecs.push(v);
      truth.push(name);
    }
  };
  const [cA, cB, cC, cD] = [unit(r), unit(r), unit(r), unit(r)];
  for (let p = 0; p < 40; p++) push('dense-a', `alpha question ${p}`, around(cA, 0.1, r), p % 5, 1);
  for (let p = 0; p < 40; p++) push('dense-b', `beta question ${p}`, around(cB, 0.1, r), p % 5, 2);
  for (let p = 0; p < 30; p++) push('diffuse-c', `gamma question ${p}`, around(cC, 0.6, r), diffuseBand ?? p % 3, 3);
  for (let p = 0; p < 30; p++) push('diffuse-d', `delta question ${p}`, around(cD, 0.6, r), diffuseBand ?? p % 3, 4);
  for (let p = 0; p < 400; p++) push('near', `near miss ${p}`, unit(r), p % 10 === 0 ? 3 : 4, 0, 3);
  const input = discoveryInput(rows, vecs, DIM, {
    novelProfile: NOVEL_PROFILE,
  });
  return { input, truth };
}

describe('second pass over the deep noise', () => {
  it('deep bands are those where a phrasing is more likely on a novel topic than a near miss; never the band just below the threshold', () => {
    // NOVEL_PROFILE, conditioned on being uncovered, against 5/5/10/20/60%: ratios 2.6, 2.2, 1.9, 0.77, 0.70
    const deep = novelBands(NOVEL_PROFILE)!;
    expect([0, 1, 2, 3, 4, 5, 8, -1].map(deep)).toEqual([true, true, true, false, false, false, false, false]);
    // a profile shallower than near misses: no band, not even the one just below the threshold where it is more common
    const shallow = novelBands([0.02, 0.02, 0.05, 0.15, 0.76, 0.2, 0.2, 0.2, 0.2])!;
    expect([0, 1, 2, 3, 4].some(shallow)).toBe(false);
    expect(novelBands(null)).toBeNull();
  });

  it('finds diffuse new topics the first pass leaves as noise among near misses as sparse as they are, without drawing more near misses into them', () => {
    // the deep pass measured as it was added, every request that passes a group's cutoff joining it
    // (nearerThanEvalSet false); `joinRule`: with the join rule of the default options
    let leadNow = 0;
    let leadBefore = 0;
    let leadJoinRule = 0;
    const share = { now: [0, 0], before: [0, 0], joinRule: [0, 0] };
    for (let seed = 1; seed <= 12; seed++) {
      const { input, truth } = diffuseAmongNearMisses(seed);
      for (const [w, res] of [
        ['now', discover(input, { ...DEFAULT_DISCOVERY, nearerThanEvalSet: false })],
        ['before', discover(input, { ...DEFAULT_DISCOVERY, deepPass: false, nearerThanEvalSet: false })],
        ['joinRule', discover(input)],
      ] as const) {
        const majority = res.gaps.map((_, gi) => {
          const m = new Map<string, number>();
          truth.forEach((t, i) => res.membership[i] === gi && m.set(t, (m.get(t) ?? 0) + 1));
          return [...m].sort((a, b) => b[1] - a[1])[0]?.[0];
        });
        const led = ['diffuse-c', 'diffuse-d'].filter((t) => res.gaps.some((g, gi) => majority[gi] === t && g.kind === 'topic')).length;
        if (w === 'now') leadNow += led;
        else if (w === 'before') leadBefore += led;
        else leadJoinRule += led;
        truth.forEach((t, i) => {
          const g = res.membership[i];
          if (g < 0 || !majority[g]?.startsWith('diffuse')) return;
          share[w][1]++;
          if (t === 'near') share[w][0]++;
        });
      }
    }
    // 24 diffuse topics over 12 seeds: the first pass alone leads 8 of them as topics, with the deep pass 12
    expect(leadNow - leadBefore).toBeGreaterThanOrEqual(4);
    // the groups they lead hold more of their rows and a smaller share of near misses (42 of 146 rows against 36 of 90)
    expect(share.now[1]).toBeGreaterThan(share.before[1]);
    expect(share.now[0] / share.now[1]).toBeLessThan(share.before[0] / share.before[1]);
    // near misses just below the threshold are nearer the eval set than the diffuse groups: with the
    // join rule they stay noise, and the diffuse topics lead their groups (19 of 24; 9 near-miss rows of 267)
    expect(leadJoinRule).toBeGreaterThanOrEqual(leadNow);
    expect(share.joinRule[0] / share.joinRule[1]).toBeLessThan(share.now[0] / share.now[1] / 2);
  });

  it('drops a group of the deep pass that, with the requests that joined it, sits no deeper than near misses; leaves the first pass’s groups alone', () => {
    const row = (query: string, band: number) => ({ query, query_redacted: 0 as const, band });
    // group 0: the first pass's, shallow; group 1: deep pass, deep phrasings; group 2: deep pass, its deep
    // seed outnumbered by shallow phrasings (one of them repeated) that joined it; -1: noise
    const rows = [
      ...['a', 'b', 'c'].map((q) => row(q, 4)),
      ...['d', 'e', 'f', 'g'].map((q, i) => row(q, i % 3)),
      row('h', 0),
      row('i', 1),
      ...['j', 'k', 'l', 'm', 'o', 'p'].map((q) => row(q, 4)),
      row('j', 0),
      row('n', 4),
    ];
    const membership = Int32Array.from([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, -1]);
    const lr = bandLogRatios(NOVEL_PROFILE);
    // group 2: one band per distinct phrasing (the repeat of 'j' counts with its first band, 4)
    expect(groupDepth([0, 1, 4, 4, 4, 4, 4, 4], lr).depth!).toBeLessThan(0);
    // counted per request, the repeat of 'j' in band 0 would make it deeper than near misses
    expect(groupDepth([0, 1, 4, 4, 4, 4, 4, 4, 0], lr).depth!).toBeGreaterThan(0);
    expect(dropShallowGroups(membership, rows, 1, 3, lr)).toEqual([2]);
    expect(Array.from(membership)).toEqual([0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]);
  });

  it('changes nothing when the diffuse topics sit where near misses do (the band just below the threshold)', () => {
    for (const seed of [1, 2, 3, 4]) {
      const { input } = diffuseAmongNearMisses(seed, 4);
      const now = discover(input);
      const before = discover(input, { ...DEFAULT_DISCOVERY, deepPass: false });
      expect(Array.from(now.membership)).toEqual(Array.from(before.membership));
      // without the novel-topic profile there are no deep bands: no second pass
      const { input: deepInput } = diffuseAmongNearMisses(seed);
      const noProfile = { ...deepInput, novelProfile: null };
      expect(Array.from(discover(noProfile).membership)).toEqual(Array.from(discover(noProfile, { ...DEFAULT_DISCOVERY, deepPass: false }).membership));
    }
  });
});

/**
 * A loose new topic among the near misses of tested intents around it. The coverage scores are
 * computed as the coverage model does (mean cosine to the 5 nearest eval cases): four tested
 * intents with 20 eval cases each; the topic's 40 phrasings (asked once or twice) spread around a
 * direction of their own; each tested intent has 3 near-miss phrasings (fewer than the minimum
 * cluster size, so they form no group of their own), asked 6 times each, that lean towards the
 * topic but sit nearer their own intent's cases.
 */
function looseTopicAmongNearMisses(seed: number) {
  const r = rng(seed);
  const cT = unit(r);
  // tested intents next to the topic (cosine about 0.7 to its direction)
  const tested = Array.from({ length: 4 }, () => {
    const u = unit(r);
    return normalizeRows(Float32Array.from(cT, (x, d) => x + u[d]), DIM);
  });
  const cases = tested.flatMap((c) => Array.from({ length: 20 }, () => around(c, 0.1, r)));
  const coverage = (v: Float32Array) => {
    const sims = cases.map((e) => e.reduce((a, x, d) => a + x * v[d], 0)).sort((a, b) => b - a);
    return sims.slice(0, 5).reduce((a, b) => a + b, 0) / 5;
  };
  const rows: UncoveredRow[] = [];
  const vecs: Float32Array[] = [];
  const truth: string[] = [];
  const push = (name: string, text: string, v: Float32Array, times: number) => {
    for (let k = 0; k < times; k++) {
      rows.push({ request_id: `${name}-${rows.length}`, ts: 0, agent: 'bot', query: text, query_redacted: 0, escalated: 0, outcome: 'ok', cluster: 0, coverage: coverage(v) });
      vecs.push(v);
      truth.push(name);
    }
  };
  for (let p = 0; p < 40; p++) push('topic', `topic question ${p}`, around(cT, 0.25, r), 1 + (p % 2));
  tested.forEach((c, t) => {
    for (let p = 0; p < 3; p++) {
      const v = normalizeRows(Float32Array.from(c, (x, d) => x + 0.3 * cT[d] + (r() * 2 - 1) * 0.1), DIM);
      push('near', `near miss ${t} ${p}`, v, 6);
    }
  });
  const input = discoveryInput(rows, vecs, DIM);
  return { input, truth };
}

describe('joining a group: only requests nearer the group than the eval set', () => {
  it('keeps the near misses of tested intents out of a loose new topic that draws them by its cutoff, and keeps the topic', () => {
    const tally = { now: { near: 0, topic: 0 }, before: { near: 0, topic: 0 } };
    let topicRows = 0;
    for (let seed = 1; seed <= 8; seed++) {
      const { input, truth } = looseTopicAmongNearMisses(seed);
      topicRows += truth.filter((t) => t === 'topic').length;
      for (const [w, res] of [
        ['now', discover(input)],
        ['before', discover(input, { ...DEFAULT_DISCOVERY, nearerThanEvalSet: false })],
      ] as const) {
        // the topic's group: the one most of its rows joined
        const votes = new Map<number, number>();
        truth.forEach((t, i) => t === 'topic' && res.membership[i] >= 0 && votes.set(res.membership[i], (votes.get(res.membership[i]) ?? 0) + 1));
        const g = [...votes].sort((a, b) => b[1] - a[1])[0]?.[0] ?? -2;
        truth.forEach((t, i) => {
          if (res.membership[i] === g) tally[w][t as 'near' | 'topic']++;
        });
      }
    }
    // before: the topic's group draws more near-miss rows than it has of its own, by its cutoff (372 against 223)
    expect(tally.before.near).toBeGreaterThan(tally.before.topic);
    // now: none of them joins, and the topic keeps ≥ 90% of the rows it had (all 223)
    expect(tally.now.near).toBe(0);
    expect(tally.now.topic).toBeGreaterThanOrEqual(0.9 * tally.before.topic);
    expect(tally.before.topic).toBeGreaterThan(0.4 * topicRows);
  });
});

describe('what gap discovery keeps', () => {
  it('int8 embeddings keep cosine similarities within 0.005', () => {
    const r = rng(11);
    const dim = 384;
    let worst = 0;
    for (let t = 0; t < 200; t++) {
      const a = normalizeRows(Float32Array.from({ length: dim }, () => r() - 0.5), dim);
      const b = normalizeRows(Float32Array.from(a, (x) => x + (r() - 0.5) * 0.05), dim);
      const qa = quantize(a, 0, dim);
      const qb = quantize(b, 0, dim);
      const da = new Float32Array(dim);
      const db = new Float32Array(dim);
      dequantizeInto(qa.scale, qa.q, da, 0);
      dequantizeInto(qb.scale, qb.q, db, 0);
      let s = 0;
      let sq = 0;
      for (let d = 0; d < dim; d++) {
        s += a[d] * b[d];
        sq += da[d] * db[d];
      }
      worst = Math.max(worst, Math.abs(s - sq));
      expect(qa.q.every((x) => Number.isInteger(x) && x >= -127 && x <= 127)).toBe(true);
    }
    expect(worst).toBeLessThan(0.005);
  });

  it('samples covered requests uniformly at 1 in 20, the same way on every delivery', () => {
    let kept = 0;
    for (let i = 0; i < 20_000; i++) if (inCoveredSample(`req-${i}`)) kept++;
    expect(kept / 20_000).toBeGreaterThan(0.045);
    expect(kept / 20_000).toBeLessThan(0.055);
    expect(inCoveredSample('req-7')).toBe(inCoveredSample('req-7'));
  });

  it('processMessages keeps the embedding of every uncovered row and of sampled covered ones, split by insert run', async () => {
    const dim = 8;
    const embedder = {
      modelName: 'fake',
      modelChecksum: 'x',
      dim,
      maxTokens: 16,
      embed: async (texts: readonly string[]) => {
        const v = new Float32Array(texts.length * dim);
        texts.forEach((t, i) => {
          v[i * dim] = t.startsWith('novel') ? -1 : 1;
          v[i * dim + 1 + (i % 7)] = 0.5;
        });
        return { vectors: normalizeRows(v, dim), truncated: new Uint8Array(texts.length) };
      },
    };
    const assigner = {
      version: 'cm-000000000001',
      assign: (v: Float32Array, n: number) => {
        const covered = Uint8Array.from({ length: n }, (_, i) => (v[i * dim] > 0 ? 1 : 0));
        return {
          cluster: new Int32Array(n),
          similarity: new Float32Array(n).fill(0.9),
          coverage: Float32Array.from(covered, (c) => (c ? 0.9 : 0.1)),
          covered,
          runnerUp: new Int32Array(n).fill(3),
          runnerUpSimilarity: new Float32Array(n).fill(0.4),
        };
      },
    };
    const msgs = Array.from({ length: 400 }, (_, i) => ({
      topic: 't',
      partition: 0,
      offset: String(i),
      value: Buffer.from(JSON.stringify({ request_id: `r-${i}`, ts: 1795000000000 + i, query: i % 4 === 0 ? `novel ${i}` : `known ${i}` })),
    }));
    const res = await processMessages(msgs, { embedder: embedder as never, assigner: assigner as never, redactText: false });
    expect(res.rows.every((r) => r.runner_up === 3 && Math.abs(r.runner_up_similarity! - 0.4) < 1e-6)).toBe(true);
    const kept = new Set(res.embeddings.map((e) => e.request_id));
    for (const r of res.rows) expect(kept.has(r.request_id)).toBe(r.covered === 0 || inCoveredSample(r.request_id));
    expect(res.embeddings.filter((e) => e.covered === 0)).toHaveLength(100);
    const e0 = res.embeddings[0];
    expect(e0.embedding).toHaveLength(dim);
    const back = new Float32Array(dim);
    dequantizeInto(e0.scale, e0.embedding, back, 0);
    expect(back[0]).toBeLessThan(-0.8);
    const run = res.rows.slice(100, 200);
    const part = embeddingsFor(res.embeddings, run);
    expect(part.every((e) => Number(e.kafka_offset) >= 100 && Number(e.kafka_offset) < 200)).toBe(true);
    expect(part.length).toBe(res.embeddings.filter((e) => Number(e.kafka_offset) >= 100 && Number(e.kafka_offset) < 200).length);
  });

  it('the assigner returns the runner-up cluster and its similarity', () => {
    const C = normalizeRows(Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]), 3);
    const E = Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]);
    const index = new CoverageIndex(C, 3, E, Int32Array.from([0, 1, 2]), 3, { neighbours: 1, nprobe: 3 });
    const q = normalizeRows(Float32Array.from([0.2, 0.9, 0.5, 1, 0, 0]), 3);
    const r = index.assign(q, 2, 0.5);
    expect(Array.from(r.cluster)).toEqual([1, 0]);
    expect(r.runnerUp[0]).toBe(2);
    expect(r.runnerUpSimilarity[0]).toBeCloseTo(q[2], 5);
    expect(r.runnerUpSimilarity[0]).toBeLessThan(r.similarity[0]);
    expect(r.runnerUp[1]).toBe(1); // ties with cluster 2: the first one found
    const one = new CoverageIndex(Float32Array.from([1, 0, 0]), 1, E.slice(0, 3), Int32Array.from([0]), 3, { neighbours: 1, nprobe: 1 });
    const r1 = one.assign(q, 1, 0.5);
    expect(r1.runnerUp[0]).toBe(-1);
    expect(r1.runnerUpSimilarity[0]).toBe(-1);
  });
});

describe('under-tested clusters and export allocation', () => {
  it('Wilson intervals match the published values', () => {
    // Newcombe (1998), Statistics in Medicine 17, 857–872, table I: 81/263 → 0.2553–0.3662
    const [lo, hi] = wilson(81, 263);
    expect(lo).toBeCloseTo(0.2553, 4);
    expect(hi).toBeCloseTo(0.3662, 4);
    const [l0, h0] = wilson(0, 10);
    expect(l0).toBe(0);
    expect(h0).toBeCloseTo(0.2775, 4);
  });

  it('flags clusters used far beyond their eval share, or escalating far above the rest', () => {
    const base = { model_version: 'cm-x', uncovered: 0, bad: 0 };
    const out = underTested([
      { ...base, cluster: 0, label: 'a', eval_share: 0.05, requests: 400, escalated: 8 },
      { ...base, cluster: 1, label: 'b', eval_share: 0.5, requests: 500, escalated: 10 },
      { ...base, cluster: 2, label: 'c', eval_share: 0.45, requests: 100, escalated: 40, bad: 40 },
      { ...base, cluster: 3, label: 'd', eval_share: 0.0001, requests: 5, escalated: 0 },
    ]);
    const by = new Map(out.map((o) => [o.cluster, o]));
    expect(by.get(0)!.reasons).toEqual(['share']);
    expect(by.get(1)!.reasons).toEqual([]);
    expect(by.get(2)!.reasons).toEqual(['escalation']);
    expect(by.get(3)!.reasons).toEqual([]); // too few requests to judge
    expect(out.slice(0, 2).map((o) => o.cluster).sort()).toEqual([0, 2]);
    expect(by.get(0)!.prodShareLow).toBeLessThan(0.4);
    expect(by.get(0)!.prodShareHigh).toBeGreaterThan(0.4);
  });

  it('allocates the budget by priority, at least one case per gap, within each cap', () => {
    expect(allocate([100, 10, 1], [10, 10, 10], 12)).toEqual([10, 1, 1]);
    expect(allocate([50, 50], [10, 10], 6)).toEqual([3, 3]);
    expect(allocate([100, 10, 1], [10, 10, 10], 2)).toEqual([1, 1, 0]);
    expect(allocate([3, 2, 1], [2, 2, 2], 100)).toEqual([2, 2, 2]);
    const a = allocate([60, 30, 10], [100, 100, 100], 50);
    expect(a.reduce((s, x) => s + x, 0)).toBe(50);
    expect(a[0]).toBeGreaterThan(a[1]);
    expect(a[1]).toBeGreaterThan(a[2]);
  });
});
