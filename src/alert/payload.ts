/**
 * What a receiver gets: the evalgap JSON payload (documented by schemas/alert-payload.schema.json)
 * or a Slack-compatible incoming-webhook body. Both are signed the same way (src/alert/webhook.ts).
 */
import type { Notification } from './alert.js';
import type { VersionComparison } from '../monitor/types.js';

export const PAYLOAD_TYPE = 'evalgap.alert';
export const PAYLOAD_VERSION = 1;

export interface AlertPayload {
  type: typeof PAYLOAD_TYPE;
  version: typeof PAYLOAD_VERSION;
  /** equals the webhook-id header: dedupe on it */
  id: string;
  kind: Notification['kind'];
  alert: {
    id: string;
    status: 'firing' | 'resolved' | 'notice';
    rule: string;
    agent: string;
    cluster: number | null;
    severity: 'info' | 'warning' | 'critical' | 'rollback';
    onset: string;
    window: { start: string; end: string };
    statistic: number;
    threshold: number;
    effect: { name: string; value: number; lo: number; hi: number };
    summary: string;
    clusters: {
      cluster: number;
      label: string | null;
      share_now: number;
      share_reference: number;
      share_eval: number;
      examples: string[];
    }[];
    sql: string;
    model_version: string;
    /** version_regression only: the canary's versions and the segments behind the verdict */
    comparison?: {
      verdict: 'rollback' | 'promote';
      baseline: string;
      candidate: string;
      since: string;
      alpha: number;
      tests: number;
      segments: {
        cluster: number;
        segment: 'cluster' | 'uncovered' | 'all';
        label: string | null;
        share: number;
        outcome: string;
        condition_ratio: number;
        baseline: { units: number; rate: number | null; lo: number; hi: number };
        candidate: { units: number; rate: number | null; lo: number; hi: number };
        difference: { lo: number; hi: number };
        ratio: { lo: number; hi: number | null };
        examples: string[];
      }[];
    };
  };
  group: { key: string; firing: string[] };
  created_at: string;
}

const num = (x: number) => (Number.isFinite(x) ? x : 0);

export function evalgapPayload(n: Notification): AlertPayload {
  const a = n.alert;
  return {
    type: PAYLOAD_TYPE,
    version: PAYLOAD_VERSION,
    id: n.webhookId,
    kind: n.kind,
    alert: {
      id: a.id,
      status: a.status,
      rule: a.rule,
      agent: a.agent,
      cluster: a.cluster,
      severity: a.severity,
      onset: a.onset,
      window: { start: a.windowStart, end: a.windowEnd },
      statistic: num(a.statistic),
      threshold: num(a.threshold),
      effect: { name: a.effect.name, value: num(a.effect.value), lo: num(a.effect.lo), hi: num(a.effect.hi) },
      summary: a.summary,
      clusters: a.clusters.map((c) => ({
        cluster: c.cluster,
        label: c.label ?? null,
        share_now: num(c.shareNow),
        share_reference: num(c.shareReference),
        share_eval: num(c.shareEval),
        examples: c.examples ?? [],
      })),
      sql: a.sql,
      model_version: a.modelVersion,
      ...(a.comparison ? { comparison: comparisonPayload(a.comparison) } : {}),
    },
    group: n.group,
    created_at: n.createdAt,
  };
}

function comparisonPayload(c: VersionComparison): NonNullable<AlertPayload['alert']['comparison']> {
  return {
    verdict: c.verdict,
    baseline: c.baseline,
    candidate: c.candidate,
    since: c.since,
    alpha: c.alpha,
    tests: c.tests,
    segments: c.segments.map((s) => ({
      cluster: s.cluster,
      segment: s.segment,
      label: s.label,
      share: num(s.share),
      outcome: s.outcome,
      condition_ratio: s.conditionRatio,
      baseline: s.baseline,
      candidate: s.candidate,
      difference: s.difference,
      ratio: s.ratio,
      examples: s.examples,
    })),
  };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** A Slack incoming-webhook body (text fallback + Block Kit sections). */
export function slackPayload(n: Notification): Record<string, unknown> {
  const a = n.alert;
  const icon = a.status === 'resolved' ? ':white_check_mark:' : a.status === 'notice' ? ':information_source:' : a.severity === 'critical' || a.severity === 'rollback' ? ':rotating_light:' : ':warning:';
  const head = `${icon} [${a.status.toUpperCase()}${n.kind === 'reminder' ? ' (reminder)' : ''}] evalgap ${a.rule} — agent ${a.agent}${a.cluster === null ? '' : `, cluster ${a.cluster}`}`;
  const versionLines = (a.comparison?.segments ?? []).slice(0, 5).map((s) => {
    const ex = s.examples.slice(0, 2).map((e) => `“${e.slice(0, 120)}”`).join(', ');
    const r = (x: number | null) => (x === null ? '-' : pct(x));
    return `• *${s.segment === 'cluster' ? (s.label ?? `cluster ${s.cluster}`) : s.segment}* ${s.outcome}: ${a.comparison!.candidate} ${r(s.candidate.rate)} vs ${a.comparison!.baseline} ${r(s.baseline.rate)}, ratio ≥ ${s.ratio.lo.toPrecision(3)}${ex ? ` — e.g. ${ex}` : ''}`;
  });
  const lines = a.comparison ? versionLines : a.clusters.slice(0, 5).map((c) => {
    const ex = (c.examples ?? []).slice(0, 2).map((e) => `“${e.slice(0, 120)}”`).join(', ');
    return `• *${c.label ?? `cluster ${c.cluster}`}*: now ${pct(c.shareNow)}, reference ${pct(c.shareReference)}, eval set ${pct(c.shareEval)}${ex ? ` — e.g. ${ex}` : ''}`;
  });
  const text = `${head}\n${a.summary}`;
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: `*${head}*\n${a.summary}` } },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          text: `statistic ${a.statistic.toPrecision(4)} (threshold ${a.threshold.toPrecision(4)}); ${a.effect.name} ${a.effect.value.toPrecision(3)} [${a.effect.lo.toPrecision(3)}, ${a.effect.hi.toPrecision(3)}]; onset ${a.onset}`,
        },
      },
      ...(lines.length ? [{ type: 'section', text: { type: 'mrkdwn', text: lines.join('\n') } }] : []),
      { type: 'context', elements: [{ type: 'mrkdwn', text: `alert ${a.id} · model ${a.modelVersion} · rows: \`${a.sql.slice(0, 500)}\`` }] },
    ],
  };
}

export function renderBody(n: Notification, format: 'evalgap' | 'slack'): string {
  return JSON.stringify(format === 'slack' ? slackPayload(n) : evalgapPayload(n));
}
