/**
 * Session evidence for gap discovery (pure): the other turns of the sessions an uncovered phrasing
 * appears in. A near miss of a tested intent sits in sessions whose other turns are that tested
 * intent's other phrasings: covered, mostly well inside the threshold, like a typical turn. A new
 * topic's sessions hold its other phrasings: they miss, or pass only just (they sit where the
 * fit's novel-topic profile sits). The store keeps every request with its session id, coverage
 * and depth band, so this needs no embedding of the covered turns (src/store/gaps.ts
 * readSessionEvidence).
 *
 * Counting. A session's turns are its distinct texts (normalised as gap discovery keys phrasings:
 * retries of one text count once), each with its depth band (0–8, src/coverage/bands.ts; covered
 * turns are bands 5–8). A phrasing's siblings are, over the sessions it appears in, each session's
 * other distinct turns. A session that changes intent adds typical turns to either kind.
 *
 * The test, per group and phrasing. Two models of the phrasing's sibling bands:
 *  - near miss: each sibling is a typical session turn: the band profile of every distinct session
 *    turn of the window (half a turn added per band);
 *  - part of its group: the siblings look like those of the group's other sessions (the sessions
 *    without this phrasing): a Dirichlet-multinomial whose parameters are those siblings' band
 *    counts plus half a count per band.
 * The Bayes factor B = P(siblings | near miss) / P(siblings | group). While some phrasing of a
 * group has B ≥ `bayesFactor`, the one with the largest B leaves the group (its requests go back
 * to noise) and the others are tested again against the group as it then stands. Under the
 * "part of the group" model E[B] = 1, so by Markov's inequality each test sends a phrasing of the
 * group's own topic away with probability ≤ 1 / bayesFactor (5% at the default 20), whatever its
 * number of siblings; a phrasing without siblings has B = 1 and stays. Simulated in
 * test/unit/gap-sessions.test.ts. The near-miss model ignores that intents differ (an intent
 * with near misses tends to have lower-scoring covered phrasings than the typical turn); that
 * lowers B for real near misses, so it errs towards keeping them, as before the test.
 *
 * The same siblings, over a whole group, can keep it a new topic when the kind rule would call it
 * thin (sessionsSayNewTopic: a mixture of the fit's novel-topic profile and the typical turn
 * against the typical turn alone). Without session ids (every request its own session) nothing
 * changes.
 */
import jstatPkg from 'jstat';
import { BANDS } from '../coverage/bands.js';
import type { SessionEvidence } from '../store/gaps.js';

const { jStat } = jstatPkg as unknown as { jStat: { gammaln(x: number): number } };

/**
 * The near-miss model: the band profile of a typical session turn (distinct session turns per
 * band over the window, each band smoothed by half a turn). Null without any banded session turn.
 */
export function typicalTurnProfile(turnBands: readonly number[]): number[] | null {
  const c = Array.from({ length: BANDS }, (_, b) => turnBands[b] ?? 0);
  const total = c.reduce((s, x) => s + x, 0);
  if (!(total > 0)) return null;
  return c.map((x) => (x + 0.5) / (total + 0.5 * BANDS));
}

export interface SessionTurns {
  /** per session: its distinct uncovered turns (phrasing key → band) */
  uncovered: Map<string, Map<string, number>>;
  /** per session: the bands of its distinct covered turns */
  covered: Map<string, readonly number[]>;
}

export function sessionTurns(rows: readonly { session_id?: string; band?: number }[], keyOf: (i: number) => string, evidence: SessionEvidence): SessionTurns {
  const uncovered = new Map<string, Map<string, number>>();
  rows.forEach((r, i) => {
    if (!r.session_id) return;
    const s = uncovered.get(r.session_id) ?? new Map<string, number>();
    const key = keyOf(i);
    if (!s.has(key)) s.set(key, r.band ?? -1);
    uncovered.set(r.session_id, s);
  });
  return { uncovered, covered: new Map(evidence.coveredTurns.map((x) => [x.session, x.bands])) };
}

/**
 * Sibling turns over `sessions`, per band: each session's distinct turns but one, the first of its
 * uncovered turns that is in `own` (the phrasing itself, or one of a group's phrasings); turns
 * without a band are left out.
 */
export function siblingBands(sessions: Iterable<string>, own: ReadonlySet<string>, st: SessionTurns): number[] {
  const c = new Array<number>(BANDS).fill(0);
  const add = (b: number) => {
    if (b >= 0 && b < BANDS) c[b]++;
  };
  for (const s of sessions) {
    const un = st.uncovered.get(s);
    if (!un) continue;
    let skip: string | null = null;
    for (const k of un.keys()) {
      if (own.has(k)) {
        skip = k;
        break;
      }
    }
    for (const [k, b] of un) if (k !== skip) add(b);
    for (const b of st.covered.get(s) ?? []) add(b);
  }
  return c;
}

/**
 * log of P(sibling bands | near miss) / P(sibling bands | the group's other sessions): a fixed
 * categorical (`typical`) against a Dirichlet-multinomial whose parameters are the other
 * sessions' sibling counts plus half a count per band (sequence probabilities; the multinomial
 * coefficient cancels).
 */
export function logBayesFactor(own: readonly number[], typical: readonly number[], others: readonly number[]): number {
  let near = 0;
  let group = 0;
  let a = 0;
  let n = 0;
  for (let b = 0; b < own.length; b++) {
    const alpha = others[b] + 0.5;
    near += own[b] * Math.log(typical[b]);
    group += jStat.gammaln(alpha + own[b]) - jStat.gammaln(alpha);
    a += alpha;
    n += own[b];
  }
  group += jStat.gammaln(a) - jStat.gammaln(a + n);
  return near - group;
}

/**
 * Phrasings that leave their group because their sessions look like a tested intent's near misses
 * (module comment). `membership` (per row: group or −1) is updated in place; returns whether the
 * test ran (session ids and a typical-turn profile present), the number of rows sent back to
 * noise and the phrasings (keys) that left.
 */
export function pruneNearMissPhrasings(
  membership: Int32Array,
  rows: readonly { session_id?: string; band?: number }[],
  keyOf: (i: number) => string,
  evidence: SessionEvidence | null | undefined,
  bayesFactor: number,
): { used: boolean; rows: number; phrasings: string[] } {
  const none = { used: false, rows: 0, phrasings: [] as string[] };
  if (!evidence || !(bayesFactor > 1) || !Array.isArray(evidence.turnBands)) return none;
  const typical = typicalTurnProfile(evidence.turnBands);
  if (!typical) return none;
  const st = sessionTurns(rows, keyOf, evidence);
  if (st.uncovered.size === 0) return none;
  // per group: its phrasings and the sessions of each
  const groups = new Map<number, Map<string, Set<string>>>();
  rows.forEach((r, i) => {
    const c = membership[i];
    if (c < 0) return;
    const g = groups.get(c) ?? new Map<string, Set<string>>();
    const key = keyOf(i);
    const ss = g.get(key) ?? new Set<string>();
    if (r.session_id) ss.add(r.session_id);
    g.set(key, ss);
    groups.set(c, g);
  });
  const leave = new Map<number, Set<string>>();
  const lb = Math.log(bayesFactor);
  for (const [c, phr] of groups) {
    // one phrasing at a time, the strongest evidence first, each against the group as it stands
    // (a near miss that left no longer makes the group's other sessions look like near misses)
    const gone = new Set<string>();
    for (;;) {
      const all = new Set<string>();
      for (const [key, ss] of phr) if (!gone.has(key)) for (const s of ss) all.add(s);
      const keys = new Set([...phr.keys()].filter((k) => !gone.has(k)));
      let best = lb;
      let pick: string | null = null;
      for (const key of keys) {
        const ss = phr.get(key)!;
        const own = siblingBands(ss, new Set([key]), st);
        if (own.every((x) => x === 0)) continue;
        const others = siblingBands(
          [...all].filter((s) => !ss.has(s)),
          keys,
          st,
        );
        const b = logBayesFactor(own, typical, others);
        if (b >= best) {
          best = b;
          pick = key;
        }
      }
      if (pick === null || keys.size <= 1) break;
      gone.add(pick);
    }
    if (gone.size) leave.set(c, gone);
  }
  let moved = 0;
  const left = new Set<string>();
  for (let i = 0; i < membership.length; i++) {
    const c = membership[i];
    if (c < 0) continue;
    const key = keyOf(i);
    if (leave.get(c)?.has(key)) {
      membership[i] = -1;
      moved++;
      left.add(key);
    }
  }
  return { used: true, rows: moved, phrasings: [...left] };
}

/**
 * log of P(siblings | some of them on a new topic) / P(siblings | near miss) for a whole group's
 * sibling band counts: each sibling is, with probability w, a turn of a new topic (the fit's
 * novel-topic band profile) and otherwise a typical turn, w uniform on [0, 1] (integrated on a
 * 200-point grid), against w = 0. Under the near-miss model (w = 0) its expectation is 1, so it
 * reaches log K with probability ≤ 1/K.
 */
export function newTopicLogBayesFactor(sib: readonly number[], typical: readonly number[], novel: readonly number[]): number {
  const z = novel.reduce((a, x) => a + x, 0);
  const ll = (w: number) => sib.reduce((a, c, b) => (c ? a + c * Math.log((w * novel[b]) / z + (1 - w) * typical[b]) : a), 0);
  const l0 = ll(0);
  const vals = Array.from({ length: 200 }, (_, k) => ll((k + 0.5) / 200));
  const m = Math.max(...vals);
  return m + Math.log(vals.reduce((a, v) => a + Math.exp(v - m), 0) / 200) - l0;
}

/**
 * Whether a group's sessions say "new topic" (newTopicLogBayesFactor ≥ log bayesFactor) over the
 * sibling turns of its sessions (`sessions`; one of the group's phrasings `keys` per session is
 * the phrasing itself). False without session evidence or the novel-topic profile.
 */
export function sessionsSayNewTopic(
  keys: ReadonlySet<string>,
  sessions: Iterable<string>,
  st: SessionTurns | null,
  typical: readonly number[] | null,
  novel: readonly number[] | null | undefined,
  bayesFactor: number,
): boolean {
  if (!st || !typical || !novel || novel.length !== BANDS || !(bayesFactor > 1)) return false;
  const sib = siblingBands(sessions, keys, st);
  if (sib.every((x) => x === 0)) return false;
  return newTopicLogBayesFactor(sib, typical, novel) >= Math.log(bayesFactor);
}
