/**
 * The version_regression rule (src/alert/version-guard.ts): the guard's evaluation over evidence
 * rows as the store's view returns them (a fake reader), and its lifecycle through the monitor's
 * pure pipeline stages (dedup against the notification log): a rollback fires once and names the
 * regressed cluster, resolves when the guard is replaced or removed, a promote notice is sent once,
 * and nothing is repeated after a restart from the JSON the runner checkpoints.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import type { Notification } from '../../src/alert/alert.js';
import { dedup, inhibit, pipeline, type NotificationLog, type NotifyContext } from '../../src/alert/lifecycle.js';
import { parseNotification } from '../../src/alert/outbox.js';
import { evalgapPayload, slackPayload } from '../../src/alert/payload.js';
import { endedFinding, guardCandidates, markSent, VersionGuard, type GuardSlice } from '../../src/alert/version-guard.js';
import { parseMonitorConfig } from '../../src/alert/config.js';
import { GuardConfigSchema, type GuardConfig } from '../../src/compare/guard.js';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import type { StoreReader } from '../../src/store/gaps.js';

const MV = 'cm-000000000001';
type Arm = { units: number; escalated: number; refused: number; failed: number };

/** A fake reader answering the two queries the guard makes: the view's rows and the registered clusters. */
function reader(arms: Record<number, { baseline: Arm; candidate: Arm }>): StoreReader {
  const rows: Record<string, string | number>[] = [];
  const sum = (v: 'baseline' | 'candidate', k: keyof Arm) => Object.entries(arms).reduce((s, [c, a]) => s + (Number(c) >= -1 ? a[v][k] : 0), 0);
  const total = { baseline: sum('baseline', 'units'), candidate: sum('candidate', 'units') };
  const all = { baseline: (['units', 'escalated', 'refused', 'failed'] as const).reduce((o, k) => ({ ...o, [k]: sum('baseline', k) }), {} as Arm), candidate: (['units', 'escalated', 'refused', 'failed'] as const).reduce((o, k) => ({ ...o, [k]: sum('candidate', k) }), {} as Arm) };
  for (const [seg, a] of [...Object.entries(arms), ['-2', all] as const]) {
    const r: Record<string, string | number> = { model_version: MV, segment: Number(seg) };
    for (const v of ['baseline', 'candidate'] as const) {
      const x = a[v];
      Object.assign(r, { [`${v}_units`]: x.units, [`${v}_requests`]: x.units, [`${v}_escalated`]: x.escalated, [`${v}_refused`]: x.refused, [`${v}_failed`]: x.failed, [`${v}_latency_units`]: 0, [`${v}_slow`]: 0, [`${v}_mix`]: Number(seg) === -2 ? total[v] : x.units });
    }
    rows.push(r);
  }
  return {
    location: 'fake',
    t: (x) => `db.${x}`,
    query: async <T,>(sql: string) => {
      if (sql.includes('version_comparison')) return rows as T[];
      if (sql.includes('coverage_clusters')) return [0, 1, 2].map((c) => ({ cluster: c, label: ['refunds', 'shipping', 'login'][c] })) as T[];
      if (sql.includes('request_id, query')) return [{ request_id: 'r1', query: 'I want my refund now' }] as T[];
      return [];
    },
  };
}

const arm = (units: number, esc: number): Arm => ({ units, escalated: units * esc, refused: units * 0.01, failed: units * 0.01 });
/** three clusters and the uncovered traffic; the candidate escalates 3× in cluster 0 only */
const regressed = reader({
  0: { baseline: arm(10_000, 0.1), candidate: arm(1_000, 0.3) },
  1: { baseline: arm(20_000, 0.1), candidate: arm(2_000, 0.1) },
  2: { baseline: arm(20_000, 0.1), candidate: arm(2_000, 0.1) },
  [-1]: { baseline: arm(2_000, 0.2), candidate: arm(200, 0.2) },
});
/** the candidate no worse anywhere, with plenty of evidence */
const same = reader({
  0: { baseline: arm(40_000, 0.1), candidate: arm(40_000, 0.1) },
  1: { baseline: arm(40_000, 0.1), candidate: arm(40_000, 0.1) },
  2: { baseline: arm(40_000, 0.1), candidate: arm(40_000, 0.1) },
  [-1]: { baseline: arm(30_000, 0.2), candidate: arm(30_000, 0.2) },
});

const guardConfig = (over: Record<string, unknown> = {}): GuardConfig =>
  GuardConfigSchema.parse({
    baseline: 'v1',
    candidate: 'v2',
    since: '2026-12-01T00:00:00Z',
    rollback: [
      { outcome: 'escalated', segments: 'clusters', min_share: 0.01, ratio: 1.5 },
      { outcome: 'failed', segments: 'uncovered', ratio: 2 },
    ],
    promote: { ratio: 1.2, difference: 0.02, outcomes: ['escalated'] },
    ...over,
  });

const NOW = new Date('2026-12-02T00:00:00Z');
const notify = pipeline<NotifyContext>(inhibit, dedup);

/** One tick of the runner's guard step, from and to the JSON it checkpoints. */
async function tick(store: StoreReader, cfg: GuardConfig | null, saved: string | null, now = NOW): Promise<{ sent: Notification[]; saved: string }> {
  const prev = saved ? (JSON.parse(saved) as { guard: GuardSlice | null; log: NotificationLog }) : { guard: null, log: {} };
  let findings;
  let promote = null;
  let slice: GuardSlice | null = null;
  if (cfg) {
    const ev = await new VersionGuard(store, cfg, 'evalgap').evaluate(prev.guard, now);
    findings = ev.findings;
    promote = ev.promote;
    slice = ev.slice;
  } else {
    findings = prev.guard ? [endedFinding(prev.guard, now, 'was removed')] : [];
  }
  const ctx: NotifyContext = { windowEnd: now.toISOString(), now, log: prev.log, opts: { repeatIntervalMinutes: 0, inhibit: true }, inhibited: [] };
  const sent = await notify(ctx, guardCandidates(findings, promote, prev.log, { now, modelVersion: MV, sql: () => 'SELECT 1' }));
  return { sent, saved: JSON.stringify({ guard: markSent(slice, sent), log: ctx.log }) };
}

const schema = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'schemas', 'alert-payload.schema.json'), 'utf8'));
const validate = new Ajv({ strict: true, validateFormats: false }).compile(schema);

describe('version_regression: the canary guard in the monitor', () => {
  it('a candidate regressing in one cluster: one firing rollback naming that cluster with rates, intervals and examples; not again after a restart', async () => {
    const cfg = guardConfig();
    const ev = await new VersionGuard(regressed, cfg, 'evalgap').evaluate(null, NOW);
    expect(ev.verdict?.rollback.map((f) => f.cluster)).toEqual([0]);
    const f = ev.findings[0];
    expect(f).toMatchObject({ rule: 'version_regression', firing: true, severity: 'rollback', scope: { agent: '*', cluster: null }, onset: '2026-12-01T00:00:00.000Z' });
    expect(f.clusters.map((c) => c.cluster)).toEqual([0]);
    const seg = f.comparison!.segments[0];
    expect(seg).toMatchObject({ cluster: 0, segment: 'cluster', label: 'refunds', outcome: 'escalated', conditionRatio: 1.5 });
    expect(seg.candidate.lo).toBeGreaterThan(1.5 * seg.baseline.hi);
    expect(seg.ratio.lo).toBeGreaterThan(1.5);
    expect(f.summary).toMatch(/roll back v2: cluster 0 \(refunds\): escalated 30\.0% vs 10\.0%/);
    // the clusters tested are fixed: every registered one and the uncovered traffic
    expect(ev.slice?.clusters).toEqual([0, 1, 2]);

    const first = await tick(regressed, cfg, null);
    expect(first.sent.map((n) => [n.kind, n.alert.severity, n.webhookId.endsWith('.firing')])).toEqual([['firing', 'rollback', true]]);
    // examples: the candidate's queries with the outcome in the segment (the runner's examples stage)
    const withEx = await new VersionGuard(regressed, cfg, 'evalgap').examples(first.sent[0], 3);
    expect(withEx.alert.comparison!.segments[0].examples).toEqual(['I want my refund now']);
    expect(withEx.alert.clusters[0].examples).toEqual(['I want my refund now']);
    // the payload validates against the committed schema; the outbox round-trips the notification
    const p = evalgapPayload(withEx);
    expect(validate(p), JSON.stringify(validate.errors)).toBe(true);
    expect(p.alert.comparison?.segments[0]).toMatchObject({ cluster: 0, condition_ratio: 1.5, examples: ['I want my refund now'] });
    expect(parseNotification(Buffer.from(JSON.stringify(withEx)))).toEqual(withEx);
    expect((slackPayload(withEx) as { text: string }).text).toMatch(/FIRING.*version_regression/);

    // a restart: new objects, the checkpointed JSON only → nothing is sent again
    const again = await tick(regressed, cfg, first.saved, new Date(NOW.getTime() + 60_000));
    expect(again.sent).toEqual([]);
    expect(JSON.parse(again.saved).log).toEqual(JSON.parse(first.saved).log);
  });

  it('the rollback resolves (same alert id) when the guard is replaced by another canary, or removed', async () => {
    const first = await tick(regressed, guardConfig(), null);
    const id = first.sent[0].alert.id;
    // replaced: another canary (a new since); its own evidence does not fire here
    const next = await tick(same, guardConfig({ candidate: 'v3', since: '2026-12-01T12:00:00Z' }), first.saved);
    const resolved = next.sent.filter((n) => n.kind === 'resolved');
    expect(resolved.map((n) => n.alert.id)).toEqual([id]);
    expect(resolved[0].webhookId).toBe(`${id}.resolved`);
    expect(validate(evalgapPayload(resolved[0]))).toBe(true);
    expect(JSON.parse(next.saved).log).toEqual({});
    // removed
    const removed = await tick(regressed, null, first.saved);
    expect(removed.sent.map((n) => [n.kind, n.alert.id])).toEqual([['resolved', id]]);
    expect(JSON.parse(removed.saved).guard).toBeNull();
    // and a resolved canary is not resolved twice
    expect((await tick(regressed, null, removed.saved)).sent).toEqual([]);
  });

  it('promote: a notice once when the candidate is no worse everywhere; never after a restart; no rollback', async () => {
    const cfg = guardConfig();
    const first = await tick(same, cfg, null);
    expect(first.sent.map((n) => [n.kind, n.alert.status, n.alert.severity])).toEqual([['notice', 'notice', 'info']]);
    const n = first.sent[0];
    expect(n.webhookId).toBe(`${n.alert.id}.notice`);
    expect(n.alert.comparison).toMatchObject({ verdict: 'promote', baseline: 'v1', candidate: 'v2', segments: [] });
    expect(n.alert.summary).toMatch(/^promote v2/);
    expect(validate(evalgapPayload(n)), JSON.stringify(validate.errors)).toBe(true);
    expect(parseNotification(Buffer.from(JSON.stringify(n)))).toEqual(n);
    expect(JSON.parse(first.saved).guard.promoted).toBe(true);
    expect(JSON.parse(first.saved).log).toEqual({}); // a notice is not a firing alert
    const again = await tick(same, cfg, first.saved);
    expect(again.sent).toEqual([]);
  });

  it('waits without a finding until both versions have closed sessions', async () => {
    const none = reader({ 0: { baseline: arm(100, 0.1), candidate: arm(0, 0) } });
    const ev = await new VersionGuard(none, guardConfig(), 'evalgap').evaluate(null, NOW);
    expect(ev.waiting).toMatch(/no closed sessions of both versions/);
    expect(ev.findings).toEqual([]);
    expect(ev.slice?.clusters).toBeNull();
  });

  it('the monitor config takes a guard inline or as a file path; a bad guard names the key', () => {
    const g = { baseline: 'v1', candidate: 'v2', since: '2026-12-01T00:00:00Z', rollback: [{ outcome: 'escalated', ratio: 1.5 }] };
    expect(parseMonitorConfig({ guard: g }).guard?.candidate).toBe('v2');
    const dir = fs.mkdtempSync(path.join(PACKAGE_ROOT, '.tmp-guard-'));
    try {
      fs.writeFileSync(path.join(dir, 'canary.json'), JSON.stringify(g));
      expect(parseMonitorConfig({ guard: 'canary.json' }, {}, 'x', dir).guard?.rollback[0].ratio).toBe(1.5);
      expect(() => parseMonitorConfig({ guard: { ...g, since: 'yesterday' } })).toThrow(/invalid guard config .*\n\s+- since: /s);
      expect(() => parseMonitorConfig({ guard: 'missing.json' }, {}, 'x', dir)).toThrow(/cannot read the guard config/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(parseMonitorConfig({}).guard).toBeUndefined();
  });
});
