/** The shared input reader's UTF-16 detection (src/cli/input.ts). */
import { describe, expect, it } from 'vitest';
import { utf16Of } from '../../src/cli/input.js';

const text = '{"id": "a", "query": "where is my card"}\n{"id": "b", "query": "reset my PIN"}\n';
const be = (b: Buffer) => Buffer.from(b.map((_, i) => b[i ^ 1]!));

describe('utf16Of', () => {
  it('knows UTF-16 with and without a byte-order mark, in both byte orders', () => {
    const le = Buffer.from(text, 'utf16le');
    expect(utf16Of(le)).toBe('little-endian');
    expect(utf16Of(Buffer.concat([Buffer.from([0xff, 0xfe]), le]))).toBe('little-endian, with a byte-order mark');
    expect(utf16Of(be(le))).toBe('big-endian');
    expect(utf16Of(Buffer.concat([Buffer.from([0xfe, 0xff]), be(le)]))).toBe('big-endian, with a byte-order mark');
  });

  it('leaves UTF-8, Latin-1, binary and short input alone', () => {
    expect(utf16Of(Buffer.from(text, 'utf8'))).toBeNull();
    expect(utf16Of(Buffer.from('{"query": "caf\u00e9 cr\u00e8me"}\n', 'latin1'))).toBeNull();
    expect(utf16Of(Buffer.from([0x00, 0x01, 0x1b, 0x5b, 0x32, 0x4a, 0x9b, 0x7f, 0x0a, 0x1b, 0x5d, 0x30, 0x3b, 0x78, 0x07, 0x0a]))).toBeNull();
    expect(utf16Of(Buffer.from('hi', 'utf16le'))).toBeNull();
    expect(utf16Of(Buffer.alloc(0))).toBeNull();
  });
});
