/**
 * Bounds checked on the raw bytes of a message before any recursive work (JSON.parse itself
 * recurses, so nesting depth is measured by a linear scan first), and text repair.
 */

/** Defaults; `evalgap run` takes them from the config (EVALGAP_MAX_MESSAGE_BYTES, EVALGAP_MAX_DEPTH). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1_048_576;
export const DEFAULT_MAX_DEPTH = 32;

/**
 * The deepest nesting of `{`/`[` in a JSON text, by one pass over the bytes, stopping early once
 * `limit` is exceeded (then it returns limit + 1). Brackets inside strings are ignored. Works on
 * UTF-8 bytes: every byte of a multi-byte sequence is ≥ 0x80, so it never looks like a bracket.
 */
export function jsonDepth(bytes: Uint8Array, limit = Infinity): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      if (b === 0x5c /* \ */) i++;
      else if (b === 0x22 /* " */) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x7b /* { */ || b === 0x5b /* [ */) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (b === 0x7d /* } */ || b === 0x5d /* ] */) depth--;
  }
  return max;
}

// a high surrogate not followed by a low one, or a low surrogate not preceded by a high one
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Replace lone UTF-16 surrogates (half an emoji, cut by a client) with U+FFFD. */
export function toWellFormed(s: string): string {
  return s.replace(LONE_SURROGATE, '\uFFFD');
}

export function isWellFormed(s: string): boolean {
  LONE_SURROGATE.lastIndex = 0;
  const bad = LONE_SURROGATE.test(s);
  LONE_SURROGATE.lastIndex = 0;
  return !bad;
}

/**
 * A copy of a parsed JSON value (depth already bounded) in which every string, keys included, is
 * well-formed UTF-16; `repaired` counts the strings changed. Objects are rebuilt with own data
 * properties (Object.fromEntries), so keys such as `__proto__` stay ordinary keys.
 */
export function repairStrings(v: unknown): { value: unknown; repaired: number } {
  let repaired = 0;
  const fix = (s: string) => {
    if (isWellFormed(s)) return s;
    repaired++;
    return toWellFormed(s);
  };
  const walk = (x: unknown): unknown => {
    if (typeof x === 'string') return fix(x);
    if (Array.isArray(x)) return x.map(walk);
    if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, val]) => [fix(k), walk(val)]));
    return x;
  };
  const value = walk(v);
  return { value, repaired };
}
