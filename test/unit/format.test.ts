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
