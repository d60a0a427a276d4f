/**
 * A test evaluator: a fixed-threshold rule on the uncovered share per agent and overall, with
 * hysteresis (fires at `threshold`, clears below `threshold × clearRatio`), deterministic and with
 * no statistical claim. The in-process monitor tests use it through dependency injection so that
 * their verdicts do not depend on the real detectors (src/monitor), which have their own tests.
 */
import type { ClusterShare, EvaluateWindow, Finding, MonitorContext, MonitorEvaluation, MonitorState, TrendRow, WindowCounts } from '../../src/monitor/types.js';
import { wilson } from '../../src/monitor/stats.js';

interface PlaceholderRules {
  uncovered_share?: { threshold?: number; minRequests?: number; clearRatio?: number };
}

interface ScopeState {
  firing: boolean;
  onset?: string;
  /** running mean of the uncovered share over windows that did not fire (the "reference") */
  refShares: Record<string, number>;
  refN: number;
}

type PState = MonitorState & { scopes: Record<string, ScopeState> };


export function createEvaluator(rules: unknown): EvaluateWindow {
  const r = ((rules ?? {}) as PlaceholderRules).uncovered_share ?? {};
  const threshold = r.threshold ?? 0.3;
  const minRequests = r.minRequests ?? 30;
  const clearRatio = r.clearRatio ?? 0.8;

  return (prev: MonitorState | null, windows: WindowCounts[], ctx: MonitorContext): MonitorEvaluation => {
    const notices: string[] = [];
    let state: PState;
    if (!prev || prev.modelVersion !== ctx.modelVersion) {
      if (prev) notices.push(`coverage model changed from ${prev.modelVersion} to ${ctx.modelVersion}: references restart`);
      state = { version: 1, modelVersion: ctx.modelVersion, scopes: {} };
    } else {
      state = structuredClone(prev) as PState;
    }
    const mine = windows.filter((w) => w.modelVersion === ctx.modelVersion);
    const findings: Finding[] = [];
    const trends: TrendRow[] = [];
    if (mine.length === 0) return { state, findings, trends, notices };
    const start = mine[0].start;
    const end = mine[0].end;
    const byScope = new Map<string, WindowCounts['clusters']>();
    for (const w of mine) {
      byScope.set(w.agent, [...(byScope.get(w.agent) ?? []), ...w.clusters]);
      byScope.set('*', [...(byScope.get('*') ?? []), ...w.clusters]);
    }
    for (const [agent, cs] of byScope) {
      const requests = cs.reduce((a, c) => a + c.requests, 0);
      const uncovered = cs.reduce((a, c) => a + c.uncovered, 0);
      const escalated = cs.reduce((a, c) => a + c.escalated, 0);
      const share = requests ? uncovered / requests : 0;
      const s: ScopeState = state.scopes[agent] ?? { firing: false, refShares: {}, refN: 0 };
      const perCluster = new Map<number, { requests: number; uncovered: number }>();
      for (const c of cs) {
        const p = perCluster.get(c.cluster) ?? { requests: 0, uncovered: 0 };
        p.requests += c.requests;
        p.uncovered += c.uncovered;
        perCluster.set(c.cluster, p);
      }
      const refTotal = s.refShares['u'] ?? 0;
      if (requests >= minRequests) {
        if (!s.firing && share >= threshold) {
          s.firing = true;
          s.onset = start;
        } else if (s.firing && share < threshold * clearRatio) {
          s.firing = false;
          s.onset = undefined;
        }
      }
      const clusters: ClusterShare[] = [...perCluster.entries()]
        .sort((a, b) => b[1].uncovered - a[1].uncovered || a[0] - b[0])
        .slice(0, 3)
        .filter(([, p]) => p.uncovered > 0)
        .map(([cluster, p]) => ({
          cluster,
          label: ctx.labels?.[cluster],
          shareNow: requests ? p.requests / requests : 0,
          shareReference: s.refShares[String(cluster)] ?? 0,
          shareEval: ctx.evalShares[cluster] ?? 0,
        }));
      const [lo, hi] = wilson(uncovered, requests);
      const f: Finding = {
        rule: 'uncovered_share',
        scope: { agent, cluster: null },
        firing: s.firing,
        severity: share >= 2 * threshold ? 'critical' : 'warning',
        onset: s.firing ? s.onset : undefined,
        windowStart: start,
        windowEnd: end,
        statistic: share,
        threshold,
        effect: { name: 'uncovered_share', value: share, lo, hi },
        summary: `${(100 * share).toFixed(1)}% of ${agent === '*' ? 'all' : agent} traffic (${uncovered} of ${requests} requests) is outside what the eval set covers (placeholder rule: alert at ${(100 * threshold).toFixed(0)}%).`,
        clusters,
      };
      findings.push(f);
      trends.push({
        windowStart: start,
        windowEnd: end,
        rule: 'uncovered_share',
        agent,
        cluster: null,
        modelVersion: ctx.modelVersion,
        shareNow: share,
        shareReference: refTotal,
        shareEval: ctx.calibratedRate,
        escalationRate: requests ? escalated / requests : 0,
        statistic: share,
        threshold,
      });
      if (!s.firing && requests >= minRequests) {
        s.refN += 1;
        const w = 1 / s.refN;
        s.refShares['u'] = refTotal + w * (share - refTotal);
        for (const [c, p] of perCluster) {
          const k = String(c);
          s.refShares[k] = (s.refShares[k] ?? 0) + w * (p.requests / requests - (s.refShares[k] ?? 0));
        }
      }
      state.scopes[agent] = s;
    }
    return { state, findings, trends, notices };
  };
}
