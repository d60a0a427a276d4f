/** Gap discovery's session evidence (src/gaps/sessions.ts): the Bayes factor's false rate, its power, and discover's use of it. */
import { describe, expect, it } from 'vitest';
import { normalizeRows, rng } from '../../src/coverage/vec.js';
import { BANDS } from '../../src/coverage/bands.js';
import { DEFAULT_DISCOVERY, discover, type DiscoveryInput, type UncoveredRow } from '../../src/gaps/discover.js';
import { discoveryInput } from '../helpers/gaps.js';
import { logBayesFactor, newTopicLogBayesFactor, pruneNearMissPhrasings, siblingBands, sessionTurns, typicalTurnProfile } from '../../src/gaps/sessions.js';

/** Marsaglia–Tsang gamma variate (shape a, scale 1) from a seeded uniform source */
function gamma(a: number, r: () => number): number {
  if (a < 1) return gamma(a + 1, r) * r() ** (1 / a);
  const d = a - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      // Box–Muller normal
      x = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = r();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}
function dirichlet(alpha: readonly number[], r: () => number): number[] {
  const g = alpha.map((a) => gamma(a, r));
  const s = g.reduce((a, b) => a + b, 0);
  return g.map((x) => x / s);
}
function multinomial(n: number, p: readonly number[], r: () => number): number[] {
  const c = new Array<number>(p.length).fill(0);
  for (let i = 0; i < n; i++) {
    let u = r();
    let b = 0;
    while (b < p.length - 1 && u >= p[b]) u -= p[b++];
    c[b]++;
  }
  return c;
}

/** a typical turn: in-scope traffic, mostly well covered (bands 0–8, deepest first) */
const TYPICAL_COUNTS = [3, 3, 6, 12, 40, 60, 110, 220, 650];
/** a new topic's session turns: most just covered or just missed */
const NOVEL = [0.06, 0.05, 0.08, 0.1, 0.2, 0.25, 0.16, 0.07, 0.03];

describe('session evidence: the Bayes factor of "near miss" against "the group’s other sessions"', () => {
  const typical = typicalTurnProfile(TYPICAL_COUNTS)!;

  it('sends a phrasing of the group’s own topic away with probability ≤ 1/20 at Bayes factor 20, whatever its number of siblings (simulated)', () => {
    const r = rng(11);
    for (const n of [1, 2, 4, 8, 16, 40]) {
      let out = 0;
      const trials = 4000;
      for (let t = 0; t < trials; t++) {
        // the group's other sessions: 20–200 sibling turns of a new topic; the phrasing's own siblings drawn from the same model
        const others = multinomial(20 + Math.floor(r() * 180), NOVEL, r);
        const own = multinomial(n, dirichlet(others.map((x) => x + 0.5), r), r);
        if (logBayesFactor(own, typical, others) >= Math.log(20)) out++;
      }
      expect(out / trials).toBeLessThanOrEqual(0.05);
    }
  });

  it('sends away most near misses once their sessions have a handful of siblings, and none on one or two siblings of a typical kind', () => {
    const r = rng(12);
    const others = multinomial(150, NOVEL, r);
    let out = 0;
    for (let t = 0; t < 2000; t++) if (logBayesFactor(multinomial(10, typical, r), typical, others) >= Math.log(20)) out++;
    expect(out / 2000).toBeGreaterThan(0.8);
    // no sibling: no evidence either way
    expect(logBayesFactor(new Array(BANDS).fill(0), typical, others)).toBe(0);
  });

  it('counts a session’s distinct turns once, leaves the phrasing itself out, and skips turns without a band', () => {
    const rows = [
      { session_id: 's1', band: 2 },
      { session_id: 's1', band: 2 },
      { session_id: 's1', band: 3 },
      { session_id: '', band: 1 },
    ];
    const keys = ['a', 'a', 'b', 'c'];
    const st = sessionTurns(rows, (i) => keys[i], { coveredTurns: [{ session: 's1', bands: [8, 8, -1] }], turnBands: [] });
    const own = siblingBands(['s1'], new Set(['a']), st);
    expect(own).toEqual([0, 0, 0, 1, 0, 0, 0, 0, 2]);
  });
});

// ---------------------------------------------------------------- discover with sessions
const DIM = 24;
const unit = (r: () => number) => normalizeRows(Float32Array.from({ length: DIM }, () => r() * 2 - 1), DIM);
const around = (c: Float32Array, s: number, r: () => number) => normalizeRows(Float32Array.from(c, (x) => x + (r() * 2 - 1) * s), DIM);

/**
 * A new topic (60 phrasings, each in its own session with another phrasing of it and covered turns
 * that only just pass) and, among its phrasings, 8 near misses of a tested intent, each asked in 3
 * sessions whose 4 other turns are well covered.
 */
function world(withSessions: boolean) {
  const r = rng(5);
  const centre = unit(r);
  const rows: UncoveredRow[] = [];
  const vecs: Float32Array[] = [];
  const truth: string[] = [];
  const covered: { session: string; bands: number[] }[] = [];
  const t0 = Date.UTC(2026, 11, 1);
  const push = (q: string, v: Float32Array, session: string, band: number, what: string) => {
    rows.push({ request_id: `r${rows.length}`, ts: t0 + rows.length * 1000, agent: 'bot', query: q, query_redacted: 0, escalated: 0, outcome: 'ok', cluster: 1, coverage: 0.4, band, session_id: withSessions ? session : '' });
    vecs.push(v);
    truth.push(what);
  };
  for (let s = 0; s < 30; s++) {
    for (let j = 0; j < 2; j++) push(`topic phrasing ${s} ${j} crypto wallet`, around(centre, 0.15, r), `t${s}`, [1, 2, 3, 4][(s + j) % 4], 'topic');
    covered.push({ session: `t${s}`, bands: [5, 5, 6] });
  }
  for (let p = 0; p < 8; p++) {
    const v = around(centre, 0.15, r);
    for (let s = 0; s < 3; s++) {
      push(`near miss ${p} card limit`, v, `n${p}-${s}`, 4, 'near');
      covered.push({ session: `n${p}-${s}`, bands: [8, 8, 7, 8] });
    }
  }
  for (let i = 0; i < 40; i++) push(`scattered ${i} zebra${i}`, unit(r), `z${i}`, 4, 'noise');
  const input = discoveryInput(rows, vecs, DIM, {
    totalRequests: rows.length * 20,
    since: t0,
    until: t0 + 7 * 86_400_000,
    clusterLabels: new Map([[1, 'cards']]),
    sessionEvidence: withSessions ? { coveredTurns: covered, turnBands: TYPICAL_COUNTS } : { coveredTurns: [], turnBands: [] },
  });
  return { input, truth };
}

describe('discover with session evidence', () => {
  it('sends the near misses inside a new topic’s group back to noise, and keeps the topic’s own phrasings', () => {
    const { input, truth } = world(true);
    const off = discover(input, { ...DEFAULT_DISCOVERY, sessionBayesFactor: 0 });
    const on = discover(input);
    const inGroups = (m: Int32Array, what: string) => truth.filter((t, i) => t === what && m[i] >= 0).length;
    // without the session test the near misses are in the topic's group (24 rows)
    expect(inGroups(off.membership, 'near')).toBeGreaterThan(12);
    expect(inGroups(on.membership, 'near')).toBe(0);
    expect(inGroups(on.membership, 'topic')).toBe(inGroups(off.membership, 'topic'));
    expect(on.gaps.filter((g) => g.members > 0).length).toBe(off.gaps.filter((g) => g.members > 0).length);
    expect(on.sessions).toEqual({ used: true, phrasings: 8, requests: 24 });
    expect(off.sessions.used).toBe(false);
  });

  it('without session ids changes nothing: the same groups as with the session test off', () => {
    const { input } = world(false);
    const off = discover(input, { ...DEFAULT_DISCOVERY, sessionBayesFactor: 0 });
    const on = discover(input);
    expect(Array.from(on.membership)).toEqual(Array.from(off.membership));
    expect(on.sessions).toEqual({ used: false, phrasings: 0, requests: 0 });
    expect(on.gaps.map((g) => [g.members, g.kind, g.priority])).toEqual(off.gaps.map((g) => [g.members, g.kind, g.priority]));
  });

  it('prunes nothing without the typical-turn profile or with the test off', () => {
    const { input } = world(true);
    const m = new Int32Array(input.rows.length).fill(0);
    const key = (i: number) => input.rows[i].query;
    expect(pruneNearMissPhrasings(m.slice(), input.rows, key, { ...input.sessionEvidence!, turnBands: [] }, 20).rows).toBe(0);
    expect(pruneNearMissPhrasings(m.slice(), input.rows, key, input.sessionEvidence, 0).rows).toBe(0);
    expect(pruneNearMissPhrasings(m.slice(), input.rows, key, input.sessionEvidence, 20).rows).toBe(24);
  });
});

describe('a group the kind rule calls thin, whose sessions say "new topic"', () => {
  const typical = typicalTurnProfile(TYPICAL_COUNTS)!;

  it('says "new topic" about near misses’ sessions with probability ≤ 1/20 (simulated), and about a new topic’s sessions once they have a few siblings', () => {
    const r = rng(21);
    for (const n of [1, 3, 10, 30, 100]) {
      let wrong = 0;
      for (let t = 0; t < 2000; t++) if (newTopicLogBayesFactor(multinomial(n, typical, r), typical, NOVEL) >= Math.log(20)) wrong++;
      expect(wrong / 2000).toBeLessThanOrEqual(0.05);
    }
    let found = 0;
    for (let t = 0; t < 500; t++) if (newTopicLogBayesFactor(multinomial(30, NOVEL, r), typical, NOVEL) >= Math.log(20)) found++;
    expect(found / 500).toBeGreaterThan(0.95);
  });

  it('keeps such a group among the new topics; without session ids it is thin, as before', () => {
    const build = (withSessions: boolean) => {
      const r = rng(8);
      const centre = unit(r);
      const rows: UncoveredRow[] = [];
      const vecs: Float32Array[] = [];
      const covered: { session: string; bands: number[] }[] = [];
      const t0 = Date.UTC(2026, 11, 1);
      for (let s = 0; s < 40; s++) {
        // a new topic next to tested cluster 1: just below the threshold (band 4), its sessions' other turns only just covered
        rows.push({ request_id: `r${s}`, ts: t0 + s * 1000, agent: 'bot', query: `gift card balance zero ${s}`, query_redacted: 0, escalated: 0, outcome: 'ok', cluster: 1, coverage: 0.4, band: 4, session_id: withSessions ? `t${s}` : '' });
        vecs.push(around(centre, 0.12, r));
        covered.push({ session: `t${s}`, bands: [5, 5, 6] });
      }
      const input = discoveryInput(rows, vecs, DIM, {
        totalRequests: 4000,
        since: t0,
        until: t0 + 7 * 86_400_000,
        clusterLabels: new Map([[1, 'cards']]),
        novelProfile: NOVEL,
        // cluster 1 misses no more than the others: no excess
        clusterTraffic: [1, 2, 3, 4, 5].map((c) => ({ cluster: c, requests: 1000, uncovered: c === 1 ? 40 : 45 })),
        sessionEvidence: withSessions ? { coveredTurns: covered, turnBands: TYPICAL_COUNTS } : { coveredTurns: [], turnBands: [] },
      });
      return input;
    };
    const plain = discover(build(false)).gaps.filter((g) => g.members > 0);
    expect(plain.map((g) => g.kind)).toEqual(['thin']);
    const sess = discover(build(true)).gaps.filter((g) => g.members > 0);
    expect(sess.map((g) => g.kind)).toEqual(['topic']);
    expect(discover(build(true), { ...DEFAULT_DISCOVERY, sessionBayesFactor: 0 }).gaps.filter((g) => g.members > 0).map((g) => g.kind)).toEqual(['thin']);
  });
});

describe('evalgap gaps says whether session evidence was used', () => {
  it('prints what the session test sent back to noise, or that there were no session ids', async () => {
    const { formatGapReport } = await import('../../src/cli/gaps.js');
    const base = {
      scope: '', since: 0, until: 0, modelVersion: null, totals: { requests: 6, uncovered: 3, coverage: 0.5, riskCoverage: 1 },
      grouped: 3, noise: 3, missingEmbeddings: 0, stored: false, underTested: [], byAgent: [], gaps: [],
    };
    expect(formatGapReport({ ...base, sessions: { used: true, phrasings: 2, requests: 7 } } as never)).toContain(
      "sessions: 2 phrasing(s) (7 requests) whose sessions read as a tested intent's near misses went back to noise",
    );
    expect(formatGapReport({ ...base, sessions: { used: false, phrasings: 0, requests: 0 } } as never)).toContain(
      'sessions: no session evidence (no session ids or no depth bands in this traffic, or the test is off): groups as without it',
    );
  });
});
