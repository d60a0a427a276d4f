/**
 * The monitor checkpoint's reference histories, stored once instead of in every window's checkpoint.
 *
 * The runner checkpoints its whole state after every evaluated window (30 s). Most of it is the
 * rules' reference history: arrays of closed blocks (`blocks`, one per hour) and of closed session
 * periods (`ring`), which change only when a block or period closes, about once an hour. Here such
 * an array (under a key named `blocks` or `ring`, at least `minBytes` of JSON) is cut out of the
 * checkpoint's JSON text and replaced by a reference `{"$part":"<id>"}`, id the SHA-256 of its text;
 * the store writes each part once and the window's checkpoint row carries only the rest.
 *
 * Lossless by construction: joining a skeleton with its parts' text gives back the checkpoint's
 * JSON text byte for byte (a test checks it), so a restored monitor continues exactly as one that
 * never stopped. A checkpoint without references (every one written before this) joins to itself.
 * Pure: no I/O.
 */
import { createHash } from 'node:crypto';

/** keys whose arrays are reference histories (changing when a block closes, not every window) */
export const PART_KEYS: ReadonlySet<string> = new Set(['blocks', 'ring']);
/** smaller arrays stay inline (a reference costs about 50 bytes) */
export const PART_MIN_BYTES = 1024;

export interface CheckpointPart {
  id: string;
  body: string;
}

const REF = /\{"\$part":"([0-9a-f]{32})"\}/g;

const partId = (body: string) => createHash('sha256').update(body).digest('hex').slice(0, 32);

/**
 * Cuts the reference histories out of a checkpoint's JSON text (as JSON.stringify wrote it).
 * Returns the skeleton and the parts it references (each distinct part once).
 */
export function splitCheckpoint(json: string, minBytes = PART_MIN_BYTES): { skeleton: string; parts: CheckpointPart[] } {
  const parts = new Map<string, string>();
  const skeleton = JSON.stringify(JSON.parse(json), function (key, value: unknown) {
    if (!PART_KEYS.has(key) || !Array.isArray(value)) return value;
    const body = JSON.stringify(value);
    if (body.length < minBytes) return value;
    const id = partId(body);
    parts.set(id, body);
    return { $part: id };
  });
  return { skeleton, parts: [...parts].map(([id, body]) => ({ id, body })) };
}

/** The part ids a skeleton references (distinct, in order of first reference). */
export function partRefs(skeleton: string): string[] {
  return [...new Set([...skeleton.matchAll(REF)].map((m) => m[1]))];
}

/** The checkpoint's JSON text from its skeleton and its parts' text (an error names a missing part). */
export function joinCheckpoint(skeleton: string, parts: ReadonlyMap<string, string>): string {
  return skeleton.replace(REF, (_, id: string) => {
    const body = parts.get(id);
    if (body === undefined) throw new Error(`the monitor checkpoint references a part that is not stored (${id})`);
    return body;
  });
}
