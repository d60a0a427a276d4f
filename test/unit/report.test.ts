/** The report's pure parts: HTML rendering (escaping, redaction, alerts states), PCA map, --since parsing. */
import { describe, expect, it } from 'vitest';
import { renderReport } from '../../src/report/html.js';
import { pcaMap } from '../../src/report/pca.js';
import type { ReportData } from '../../src/report/types.js';
import { parseSince } from '../../src/cli/report.js';
import { parseSince as parseSinceEstimate } from '../../src/cli/estimate-commands.js';
import { parsePeriod } from '../../src/cli/gaps.js';

function data(over: Partial<ReportData> = {}): ReportData {
  return {
    title: 'evalgap report',
    generatedAt: '2026-01-01 00:00:00',
    period: { since: '7d', first: '2026-01-01 00:00:00', last: '2026-01-01 01:00:00', split: '2026-01-01 00:45:00' },
    totals: { requests: 10, uncovered: 2, escalated: 1, redacted: 1 },
    model: { version: 'cm-000000000001', k: 2, cases: 20, threshold: 0.5, targetRate: 0.05 },
    series: { stepSeconds: 300, labels: ['01-01 00:00'], requests: [10], escalationRate: [0.1], uncoveredShare: [{ version: 'cm-000000000001', values: [0.2] }] },
    clusters: [{ label: 'a / b', evalShare: 0.5, referenceShare: 0.4, recentShare: 0.3, escalationRate: 0.1, requests: 8 }],
    map: { eval: [[0, 1]], covered: [[1, 0]], uncovered: [[2, 2]], note: 'map' },
    gaps: [
      {
        rank: 1, id: 'g1', status: 'new', kind: 'topic', label: '<img src=x onerror=alert(1)>', requests: 2, share: 0.2, escalationRate: 0.5, firstSeen: 'a', lastSeen: 'b', nearest: 'a / b', priority: 30,
        examples: [
          { text: 'plain </script><script>alert(1)</script>', redacted: false },
          { text: 'ab'.repeat(32), redacted: true },
        ],
      },
    ],
    gapsNote: 'note',
    alerts: { exists: false, columns: [], rows: [] },
    agent: null,
    ...over,
  };
}

describe('renderReport', () => {
  it('shows the versions compared cluster by cluster, with verdicts and intervals, only when the period holds two or more', () => {
    const v = {
      baseline: 'v1',
      candidate: '<b>v2</b>',
      modelVersion: 'cm-000000000001',
      alpha: 0.05,
      tests: 12,
      units: { baseline: 900, candidate: 100 },
      mixDiffers: false,
      rows: [
        { segment: 'all traffic', label: '', outcome: 'escalated', baseline: 0.1, candidate: 0.12, lo: -0.03, hi: 0.08, verdict: 'no evidence yet' as const },
        { segment: 'cluster 3', label: 'refunds', outcome: 'escalated', baseline: 0.1, candidate: 0.4, lo: 0.12, hi: 0.45, verdict: 'worse' as const },
      ],
      worse: ['cluster 3'],
      better: [],
    };
    const html = renderReport(data({ versions: [v] }), '');
    expect(html).toContain('id="versions"');
    expect(html).toContain('&lt;b&gt;v2&lt;/b&gt; against v1');
    expect(html).toMatch(/<td>cluster 3<\/td><td>refunds<\/td><td>escalated<\/td><td class="num">10\.0%<\/td><td class="num">40\.0%<\/td><td class="num">\+12\.0 to \+45\.0<\/td><td><b>worse<\/b><\/td>/);
    expect(html).toContain('Worse: cluster 3; better: none');
    expect(html).toContain('-3.0 to +8.0');
    expect(renderReport(data({ versions: [] }), '')).not.toContain('id="versions"');
    expect(renderReport(data(), '')).not.toContain('id="versions"');
  });

  it('escapes text, shows redacted text as a hash prefix, inlines the library and the data', () => {
    const html = renderReport(data(), 'window.Chart = function(){}; /* </script> inside the library */\n//# sourceMappingURL=chart.umd.min.js.map');
    expect(html).not.toContain('<img src=x');
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain(`hmac:${'ab'.repeat(8)}…`);
    expect(html).not.toContain('ab'.repeat(32) + '</');
    // no way out of a script element: not from the data, not from the library
    const scripts = html.split('<script').length - 1;
    expect(html.split('</script>').length - 1).toBe(scripts);
    expect(scripts).toBe(3);
    expect(html).not.toContain('sourceMappingURL');
    expect(html).toContain('No alerts table yet');
  });
  it('names each gap’s kind: a new topic, or near misses of the eval cluster whose coverage is thin', () => {
    const base = data().gaps[0];
    const html = renderReport(
      data({
        gaps: [
          { ...base, rank: 1, id: 'g1', status: 'new', kind: 'topic', label: 'crypto / wallet', nearest: 'cards' },
          { ...base, rank: 2, id: 'g2', status: 'new', kind: 'thin', label: 'freeze / card', nearest: 'card freeze' },
        ],
      }),
      '',
    );
    expect(html).toContain('<th>kind</th>');
    expect(html).toMatch(/crypto \/ wallet<\/b><div class="muted">g1 · nearest eval cluster: cards<\/div><\/td>\s*<td class="kind">new topic<\/td>/);
    expect(html).toMatch(/freeze \/ card<\/b><div class="muted">g2 · thin coverage of eval cluster: card freeze<\/div><\/td>\s*<td class="kind">near misses<\/td>/);
  });
  it('lists alerts when the table exists, and says when it is empty', () => {
    expect(renderReport(data({ alerts: { exists: true, columns: ['at'], rows: [] } }), '')).toContain('No alerts.');
    const html = renderReport(data({ alerts: { exists: true, columns: ['at', 'rule'], rows: [{ at: '2026', rule: 'shift & <b>' }] } }), '');
    expect(html).toContain('<td>shift &amp; &lt;b&gt;</td>');
  });
});

describe('the conversations and tool chains section', () => {
  it('is absent without agent data, and shows depth, untested chains (escaped) and sessions with it', () => {
    expect(renderReport(data(), '')).not.toContain('id="agent-coverage"');
    const html = renderReport(data({ agent: {
      depth: [
        { band: '1', requests: 40, share: 0.4, uncoveredShare: 0.1, evalShare: 0.8 },
        { band: '2-3', requests: 20, share: 0.2, uncoveredShare: 0.2, evalShare: 0.2 },
        { band: '4-7', requests: 30, share: 0.3, uncoveredShare: 0.3, evalShare: 0 },
        { band: '8+', requests: 10, share: 0.1, uncoveredShare: 0.4, evalShare: 0 },
      ],
      evalCases: 25, withTurn: 100, total: 120,
      chainVerdicts: { exact: 50, untested: 12, none: 38 },
      untestedChains: [{ chain: 'search → <script>', requests: 12, failureRate: 0.25, missingBigram: 'search→<script>', example: 'where is <b>it</b>' }],
      sessions: { sessions: 30, leftCoverage: 9, firstUncoveredByBand: [2, 3, 3, 1], deepestTurn: 11 },
    } }), '');
    expect(html).toContain('id="agent-coverage"');
    expect(html).toContain('No eval case that gives its depth (25 give `turn` or `turns`; cases without either are not counted) is at turn 4-7, 8+: 40.0% of production traffic is there.</b>');
    expect(html).toContain('search → &lt;script&gt;');
    expect(html).not.toContain('search → <script>');
    expect(html).toContain('Tool chains: exact 50, untested 12');
    expect(html).toContain('Sessions: 30, 9 (30.0%) with an uncovered turn');
  });
});

describe('pcaMap', () => {
  it('projects eval and production vectors with one PCA; the direction of most variance comes first', () => {
    const dim = 3;
    // points spread along x (large), y (small), nothing on z
    const ev = new Float32Array([-2, 0.1, 0, -1, -0.1, 0, 0, 0.2, 0, 1, -0.2, 0]);
    const pr = new Float32Array([2, 0, 0, 3, 0.1, 0]);
    const m = pcaMap({ dim, eval: ev, production: pr });
    expect(m.eval).toHaveLength(4);
    expect(m.production).toHaveLength(2);
    const xs = [...m.eval, ...m.production].map((p) => p[0]);
    const ys = [...m.eval, ...m.production].map((p) => p[1]);
    const spread = (a: number[]) => Math.max(...a) - Math.min(...a);
    expect(spread(xs)).toBeGreaterThan(10 * spread(ys));
    // order along PC 1 follows x (up to sign)
    const sign = Math.sign(m.production[1][0] - m.eval[0][0]);
    expect(sign * (m.production[1][0] - m.production[0][0])).toBeGreaterThan(0);
  });
});

describe('parseSince', () => {
  const now = new Date('2026-01-10T00:00:00Z');
  it('reads durations and dates', () => {
    expect(parseSince('7d', now).toISOString()).toBe('2026-01-03T00:00:00.000Z');
    expect(parseSince('12h', now).toISOString()).toBe('2026-01-09T12:00:00.000Z');
    expect(parseSince('30m', now).toISOString()).toBe('2026-01-09T23:30:00.000Z');
    expect(parseSince('2026-01-01', now).toISOString()).toBe('2026-01-01T00:00:00.000Z');
    expect(() => parseSince('soon', now)).toThrow(/--since expects a duration back from now/);
  });
  it('is the one parser of every period flag: seconds too, and a date-time without a zone is UTC whatever the machine\'s zone', () => {
    expect(parseSince('45s', now).toISOString()).toBe('2026-01-09T23:59:15.000Z');
    expect(parseSince('2026-01-01T12:00', now).toISOString()).toBe('2026-01-01T12:00:00.000Z');
    expect(parseSince('2026-01-01T12:00+02:00', now).toISOString()).toBe('2026-01-01T10:00:00.000Z');
    expect(parseSinceEstimate('2026-01-01T12:00', now).toISOString()).toBe('2026-01-01T12:00:00.000Z');
    expect(parsePeriod('45s', undefined, now).since.toISOString()).toBe('2026-01-09T23:59:15.000Z');
    // a free-form date Date() would read in the local zone is refused
    expect(() => parseSince('Jan 1 2026', now)).toThrow(/ISO-8601/);
  });
});
