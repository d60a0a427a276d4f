import { describe, expect, it } from 'vitest';
import { escapeControl, table } from '../../src/cli/format.js';

describe('terminal output of stored text', () => {
  it('table() shows control characters (C0, DEL, C1) visibly instead of sending them to the terminal', () => {
    const hostile = 'refund\x1b[2J\x1b]0;pwned\x07 please\r\nnext\tcol\x7f\x9b31m\u0085end';
    const out = table(['label', 'n'], [[hostile, 3]], 200);
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/); // only the table's own newlines remain
    expect(out.split('\n')).toHaveLength(3);
    expect(out).toContain('refund\\x1b[2J\\x1b]0;pwned\\x07 please\\r\\nnext\\tcol\\x7f\\x9b31m\\x85end');
    // widths are those of the visible text
    const [head, rule, row] = out.split('\n');
    expect(rule.split('  ')[0].length).toBe(row.split('  ')[0].length);
    expect(head.startsWith('label')).toBe(true);
  });

  it('escapeControl leaves ordinary text, including non-ASCII, unchanged', () => {
    expect(escapeControl('ünïcödé – “quotes” 日本 \u2028 ok')).toBe('ünïcödé – “quotes” 日本 \u2028 ok');
    expect(escapeControl('\u0000\u001f')).toBe('\\x00\\x1f');
  });
});

describe('gap reports print stored production text escaped', () => {
  it('labels and examples outside the table keep no control character', async () => {
    const { formatGapReport } = await import('../../src/cli/gaps.js');
    const gap = {
      rank: 1, gapId: 'g-1', status: 'new', kind: 'topic', depth: 1, deepShare: 1, phrasings: 3, label: 'refund\x1b]0;title\x07', members: 3, share: 0.5, escalationRate: 0, trend: 'new',
      nearestCluster: 0, nearestClusterLabel: 'x\x9b2J', casesNeeded: 2, priority: 3, firstSeen: 0, lastSeen: 0,
      examples: ['please\x1b[2J wipe', 'ok'],
    };
    const r = {
      scope: '', since: 0, until: 0, modelVersion: null, totals: { requests: 6, uncovered: 3, coverage: 0.5, riskCoverage: 1 },
      grouped: 3, noise: 0, missingEmbeddings: 0, stored: false, underTested: [], byAgent: [],
      gaps: [gap, { ...gap, gapId: 'g-2', status: 'closed', label: 'gone\x1b[31m' }],
    };
    const out = formatGapReport(r as never);
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(out).toContain('please\\x1b[2J wipe');
    expect(out).toContain('refund\\x1b]0;title\\x07');
    expect(out).toContain('gone\\x1b[31m');
  });
});
