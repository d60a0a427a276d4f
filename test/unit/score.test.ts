/** evalgap score's line parser: every kind of bad line gets a clear reason. */
import { describe, expect, it } from 'vitest';
import { parseQueryLine } from '../../src/coverage/score.js';

describe('parseQueryLine', () => {
  it('reads the text field and an optional string or number id', () => {
    expect(parseQueryLine('{"query":"  where is my parcel "}', 3, 'query')).toEqual({ line: 3, text: 'where is my parcel' });
    expect(parseQueryLine('{"id":7,"prompt":"hi","extra":1}', 1, 'prompt')).toEqual({ line: 1, id: '7', text: 'hi' });
    expect(parseQueryLine('{"id":"a","prompt":"hi"}', 1, 'prompt')).toEqual({ line: 1, id: 'a', text: 'hi' });
  });

  it('reports invalid JSON, non-objects, missing, empty and mistyped fields', () => {
    expect(parseQueryLine('{"query": ', 2, 'query')).toMatchObject({ line: 2, error: expect.stringMatching(/^invalid JSON: /) });
    expect(parseQueryLine('["x"]', 2, 'query')).toEqual({ line: 2, error: 'expected a JSON object, found array' });
    expect(parseQueryLine('"x"', 2, 'query')).toEqual({ line: 2, error: 'expected a JSON object, found string' });
    expect(parseQueryLine('{"text":"x"}', 2, 'query')).toEqual({ line: 2, error: 'field "query" is missing' });
    expect(parseQueryLine('{"query":"   "}', 2, 'query')).toEqual({ line: 2, error: 'field "query" is empty' });
    expect(parseQueryLine('{"query":5}', 2, 'query')).toEqual({ line: 2, error: 'field "query" must be a string, found number' });
    expect(parseQueryLine('{"query":"x","id":{"a":1}}', 2, 'query')).toMatchObject({ line: 2, error: expect.stringMatching(/^field "id" /) });
  });
});
