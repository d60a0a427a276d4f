import { describe, expect, it } from 'vitest';
import { RequestLogSchema, decodeRequest, type DecodeResult } from '../../src/schema/request.js';

const buf = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v), 'utf8');
const ok = (r: DecodeResult) => {
  if (!r.ok) throw new Error(`expected ok, got: ${r.reason}`);
  return r.value;
};
const reason = (r: DecodeResult) => {
  if (r.ok) throw new Error(`expected a failure, got ${JSON.stringify(r.value)}`);
  return r.reason;
};

const TS = Date.UTC(2024, 4, 6, 12, 30, 0);

describe('decodeRequest: valid messages', () => {
  it('fills defaults for a minimal message', () => {
    const v = ok(decodeRequest(buf({ request_id: 'r1', ts: TS, query: 'how do I reset my card?' })));
    expect(v).toEqual({
      request_id: 'r1',
      ts: TS,
      query: 'how do I reset my card?',
      agent: '',
      version: '',
      session_id: '',
      turn: 0,
      escalated: false,
      outcome: 'ok',
      latency_ms: null,
      cost_usd: null,
      tools: [],
      metadata: {},
    });
  });

  it('keeps every known field', () => {
    const full = {
      request_id: 'r2',
      ts: TS,
      query: 'q',
      agent: 'support',
      version: 'prompt-v7',
      session_id: 's',
      turn: 3,
      escalated: true,
      outcome: 'resolved',
      latency_ms: 12.5,
      cost_usd: 0.002,
      tools: ['search', 'refund'],
      metadata: { tier: 'gold' },
    };
    expect(ok(decodeRequest(buf(full)))).toEqual(full);
  });

  it('reads version as a string (a number as its decimal form) and refuses other types or an overlong one', () => {
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', version: 'v2' }))).version).toBe('v2');
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', version: 3 }))).version).toBe('3');
    const v = ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', version: 'v2' })));
    expect(v.metadata).toEqual({}); // a known field, no longer kept in metadata
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', version: true })))).toMatch(/^version: expected a string of at most 128/);
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', version: 'x'.repeat(129) })))).toMatch(/^version: /);
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', version: 'x'.repeat(128) }))).version).toHaveLength(128);
  });

  it('accepts epoch milliseconds, rounding fractions', () => {
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: 1_700_000_000_123.6, query: 'q' }))).ts).toBe(1_700_000_000_124);
  });

  it('accepts ISO-8601 strings with Z, offsets and date-only', () => {
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: '2024-05-06T12:30:00Z', query: 'q' }))).ts).toBe(TS);
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: '2024-05-06T14:30:00+02:00', query: 'q' }))).ts).toBe(TS);
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: '2024-05-06T12:30:00.250Z', query: 'q' }))).ts).toBe(TS + 250);
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: '2024-05-06', query: 'q' }))).ts).toBe(Date.UTC(2024, 4, 6));
  });

  it('moves unknown top-level fields into metadata, merged with given metadata', () => {
    const v = ok(
      decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', region: 'eu', nested: { a: 1 }, metadata: { tier: 'gold' } })),
    );
    expect(v.metadata).toEqual({ tier: 'gold', region: 'eu', nested: { a: 1 } });
    expect(v).not.toHaveProperty('region');
    expect(v).not.toHaveProperty('nested');
  });

  it('moves unknown fields into metadata when none is given', () => {
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', user_tier: 2 }))).metadata).toEqual({ user_tier: 2 });
  });

  it('infers escalated from outcome "escalated" unless given explicitly', () => {
    const a = ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', outcome: 'escalated' })));
    expect(a.escalated).toBe(true);
    expect(a.outcome).toBe('escalated');
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', outcome: 'resolved' }))).escalated).toBe(false);
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', outcome: 'escalated', escalated: false }))).escalated).toBe(
      false,
    );
  });

  it('ignores a UTF-8 BOM and keeps non-ASCII text', () => {
    const b = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), buf({ request_id: 'r', ts: TS, query: 'Überweisung 🚀' })]);
    expect(ok(decodeRequest(b)).query).toBe('Überweisung 🚀');
  });
});

describe('decodeRequest: rejected messages', () => {
  it.each([
    ['null', null, 'empty message'],
    ['empty buffer', Buffer.alloc(0), 'empty message'],
  ])('%s → %s', (_n, v, r) => {
    expect(decodeRequest(v as Buffer | null)).toEqual({ ok: false, reason: r });
  });

  it('rejects invalid UTF-8', () => {
    expect(decodeRequest(Buffer.from([0xff, 0xfe, 0x00]))).toEqual({ ok: false, reason: 'message is not valid UTF-8' });
    // a valid JSON object with one invalid byte inside a string
    const b = Buffer.concat([Buffer.from('{"request_id":"r","ts":1700000000000,"query":"a'), Buffer.from([0xc3]), Buffer.from('"}')]);
    expect(reason(decodeRequest(b))).toBe('message is not valid UTF-8');
  });

  it('rejects malformed JSON with the parser message', () => {
    expect(reason(decodeRequest(buf('{"request_id": "r",')))).toMatch(/^invalid JSON: /);
    expect(reason(decodeRequest(buf('not json')))).toMatch(/^invalid JSON: /);
  });

  it.each([['[]'], ['[{"request_id":"r"}]'], ['"a string"'], ['42'], ['null'], ['true']])('rejects non-object JSON %s', (s) => {
    expect(decodeRequest(buf(s))).toEqual({ ok: false, reason: 'expected a JSON object' });
  });

  it('reports missing required fields by path', () => {
    expect(reason(decodeRequest(buf({ ts: TS, query: 'q' })))).toMatch(/^request_id: Required$/);
    expect(reason(decodeRequest(buf({ request_id: 'r', query: 'q' })))).toBe(
      'ts: required (ISO-8601 string or epoch milliseconds)',
    );
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS })))).toBe('query: Required');
  });

  it('lists every issue of a message', () => {
    const r = reason(decodeRequest(buf({})));
    expect(r.split('; ').map((s) => s.split(':')[0]).sort()).toEqual(['query', 'request_id', 'ts']);
  });

  it('rejects an empty request_id and an over-long one', () => {
    expect(reason(decodeRequest(buf({ request_id: '', ts: TS, query: 'q' })))).toMatch(/^request_id: /);
    expect(reason(decodeRequest(buf({ request_id: 'x'.repeat(257), ts: TS, query: 'q' })))).toMatch(/^request_id: /);
    expect(decodeRequest(buf({ request_id: 'x'.repeat(256), ts: TS, query: 'q' })).ok).toBe(true);
  });

  it('rejects empty and whitespace-only queries', () => {
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS, query: '' })))).toBe('query: query must not be empty');
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS, query: ' \n\t ' })))).toBe('query: query must not be empty');
  });

  it.each([
    ['negative epoch', -1],
    ['non-date string', 'yesterday'],
    ['numeric string', '1700000000000'],
    ['boolean', true],
    ['object', { $date: 1 }],
  ])('rejects ts as %s', (_n, ts) => {
    expect(reason(decodeRequest(buf({ request_id: 'r', ts, query: 'q' })))).toBe(
      'ts: expected an ISO-8601 string or epoch milliseconds',
    );
  });

  it.each([
    ['request_id', 123],
    ['query', 42],
    ['query', null],
    ['agent', 5],
    ['turn', -1],
    ['turn', 1.5],
    ['turn', '2'],
    ['escalated', 'yes'],
    ['outcome', ''],
    ['latency_ms', -3],
    ['latency_ms', '10'],
    ['cost_usd', -0.01],
    ['tools', 'search'],
    ['tools', [1, 2]],
    ['metadata', 'x'],
    ['metadata', null],
    ['metadata', [1]],
  ])('rejects %s = %j', (field, value) => {
    const r = reason(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', [field]: value })));
    expect(r.startsWith(`${field}`)).toBe(true);
  });
});

describe('RequestLogSchema', () => {
  it('parses objects directly with the same transform', () => {
    const v = RequestLogSchema.parse({ request_id: 'r', ts: '2024-05-06T12:30:00Z', query: 'q', x: 1 });
    expect(v.ts).toBe(TS);
    expect(v.metadata).toEqual({ x: 1 });
  });

  it('does not trim the query (stored as sent)', () => {
    expect(RequestLogSchema.parse({ request_id: 'r', ts: TS, query: '  hi  ' }).query).toBe('  hi  ');
  });
});

describe('decodeRequest: hostile messages (issue 8)', () => {
  it('rejects deep nesting before parsing, without recursing (no stack overflow at 100k levels)', () => {
    const deep = '{"request_id":"r","ts":1700000000000,"query":"q","x":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}';
    expect(reason(decodeRequest(buf(deep)))).toBe('JSON nested deeper than the limit of 32');
    // brackets inside strings do not count
    const s = { request_id: 'r', ts: 1_700_000_000_000, query: '[[[[{{{{'.repeat(100) };
    expect(ok(decodeRequest(buf(s))).query).toBe(s.query);
    expect(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', a: { b: { c: 1 } } }), { maxDepth: 2 }).ok).toBe(false);
    expect(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q', a: { b: 1 } }), { maxDepth: 2 }).ok).toBe(true);
  });

  it('rejects messages over the size limit before decoding', () => {
    const big = buf({ request_id: 'r', ts: TS, query: 'x'.repeat(2000) });
    expect(reason(decodeRequest(big, { maxBytes: 1000 }))).toBe(`message of ${big.length} bytes exceeds the limit of 1000`);
    expect(decodeRequest(big, { maxBytes: big.length }).ok).toBe(true);
  });

  it('repairs lone surrogates with U+FFFD and flags the row', () => {
    const v = ok(decodeRequest(buf('{"request_id":"r","ts":1700000000000,"query":"cut \\ud83d emoji \\udc00","m\\ud800":"\\udfff"}')));
    expect(v.query).toBe('cut \ufffd emoji \ufffd');
    expect(v.metadata).toEqual({ 'm\ufffd': '\ufffd' });
    expect(v.repaired).toBe(true);
    const good = ok(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'ok 🚀' })));
    expect(good.repaired).toBeUndefined();
  });

  it('keeps __proto__, constructor and prototype keys in metadata as plain keys', () => {
    const v = ok(
      decodeRequest(buf('{"request_id":"r","ts":1700000000000,"query":"q","__proto__":{"polluted":1},"constructor":"c","metadata":{"__proto__":"m","prototype":2}}')),
    );
    expect(Object.keys(v.metadata).sort()).toEqual(['__proto__', 'constructor', 'prototype']);
    expect(JSON.parse(JSON.stringify(v.metadata))).toEqual(JSON.parse('{"__proto__":{"polluted":1},"constructor":"c","prototype":2}'));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(v.metadata)).toBe(Object.prototype);
  });

  it.each([
    ['2024-02-30', 'impossible date or time "2024-02-30"'],
    ['2023-02-29T00:00:00Z', 'impossible date or time "2023-02-29T00:00:00Z"'],
    ['2024-13-45T00:00:00Z', 'impossible date or time "2024-13-45T00:00:00Z"'],
    ['2024-05-06T24:00:00Z', 'impossible date or time "2024-05-06T24:00:00Z"'],
    ['2024-05-06T12:00:60Z', 'impossible date or time "2024-05-06T12:00:60Z"'],
  ])('rejects the impossible date %s', (ts, r) => {
    expect(reason(decodeRequest(buf({ request_id: 'r', ts, query: 'q' })))).toBe(`ts: ${r}`);
  });

  it('accepts 2024-02-29 and reads an ISO time without offset as UTC', () => {
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: '2024-02-29', query: 'q' }))).ts).toBe(Date.UTC(2024, 1, 29));
    expect(ok(decodeRequest(buf({ request_id: 'r', ts: '2024-05-06T12:30:00', query: 'q' }))).ts).toBe(TS);
  });

  it('rejects epoch seconds, micro- and nanoseconds as ambiguous', () => {
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: 1_700_000_000, query: 'q' })))).toBe(
      'ts: ambiguous epoch 1700000000: looks like seconds (2023-11-14T22:13:20.000Z); send epoch milliseconds',
    );
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: 0, query: 'q' })))).toMatch(/^ts: ambiguous epoch 0/);
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: 1_700_000_000_000_000, query: 'q' })))).toMatch(/micro- or nanoseconds/);
  });

  it('rejects dates the TTL cannot hold (after 2105)', () => {
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: '2299-01-01T00:00:00Z', query: 'q' })))).toMatch(/outside the storable range/);
  });

  it('applies the accepted window with its reasons', () => {
    const window = { min: TS - 1000, max: TS + 1000, minReason: 'is older than the retention', maxReason: 'is too far in the future' };
    expect(decodeRequest(buf({ request_id: 'r', ts: TS, query: 'q' }), { window }).ok).toBe(true);
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS - 2000, query: 'q' }), { window }))).toBe(
      'ts: 2024-05-06T12:29:58.000Z is older than the retention',
    );
    expect(reason(decodeRequest(buf({ request_id: 'r', ts: TS + 2000, query: 'q' }), { window }))).toMatch(/too far in the future$/);
  });

  it('never quotes message text in a JSON error', () => {
    expect(reason(decodeRequest(buf('{"query": "my card was stolen" oops')))).toMatch(/^invalid JSON: syntax error( at position \d+)?$/);
    expect(reason(decodeRequest(buf('{"query": "my card')))).toMatch(/^invalid JSON: truncated( at position \d+)?$/);
  });
});
