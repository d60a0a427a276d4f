/**
 * Text redaction, one function for every stage that shows text (ingest rows, gaps, alerts,
 * report): a keyed HMAC-SHA256, hex. Without the key a guess cannot be hashed to match, unlike
 * a plain SHA-256. The same text under the same key gives the same hash, so redacted rows still
 * group by text. Rotation: a new key gives new hashes; rows stored under the old key keep theirs.
 */
import { createHmac } from 'node:crypto';

/** The shortest key accepted (bytes): 32, the HMAC-SHA256 block-size half NIST recommends as a minimum. */
export const MIN_REDACT_KEY_BYTES = 32;

export function redactText(text: string, key: string): string {
  if (Buffer.byteLength(key) < MIN_REDACT_KEY_BYTES) throw new Error(`the redaction key must have at least ${MIN_REDACT_KEY_BYTES} bytes`);
  return createHmac('sha256', key).update(text, 'utf8').digest('hex');
}
