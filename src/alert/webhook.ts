/**
 * One signed POST per attempt, per the Standard Webhooks specification: headers webhook-id,
 * webhook-timestamp (seconds) and webhook-signature `v1,<base64 HMAC-SHA256 of id.timestamp.body>`,
 * made with the `standardwebhooks` package so that any receiver library verifies it. Each attempt
 * is signed afresh with the current time, so a retry hours later is still inside the receiver's
 * replay tolerance; the id stays the same, so a receiver dedupes on it.
 */
import { Webhook } from 'standardwebhooks';
import type { Notification } from './alert.js';
import { renderBody } from './payload.js';
import type { ResolvedReceiver } from './config.js';

export interface SignedRequest {
  headers: Record<string, string>;
  body: string;
}

export function signRequest(secret: string, msgId: string, body: string, at: Date = new Date()): SignedRequest {
  const signature = new Webhook(secret).sign(msgId, at, body);
  return {
    body,
    headers: {
      'content-type': 'application/json',
      'webhook-id': msgId,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': signature,
    },
  };
}

export class DeliveryError extends Error {
  constructor(
    message: string,
    /** HTTP status, or 0 when no response came */
    readonly status: number,
    /** false for answers a retry cannot change (e.g. 400, 401, 404, 410) */
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'DeliveryError';
  }
}

/** Statuses worth retrying: timeouts, rate limits, server errors, and 409 (a receiver busy with the same id). */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
}

/** POST one notification to one receiver; resolves on a 2xx, throws DeliveryError otherwise. */
export async function postNotification(r: ResolvedReceiver, n: Notification, at = new Date()): Promise<number> {
  const req = signRequest(r.secret, n.webhookId, renderBody(n, r.format), at);
  let res: Response;
  try {
    res = await fetch(r.url, {
      method: 'POST',
      headers: { ...r.headers, ...req.headers, 'user-agent': 'evalgap-webhooks/1' },
      body: req.body,
      signal: AbortSignal.timeout(r.timeoutMs),
      redirect: 'manual',
    });
  } catch (e) {
    throw new DeliveryError(`no response from receiver ${r.name}: ${(e as Error).message}`, 0, true);
  }
  // drain the body so the connection is reused
  await res.arrayBuffer().catch(() => undefined);
  if (res.status >= 200 && res.status < 300) return res.status;
  throw new DeliveryError(`receiver ${r.name} answered ${res.status}`, res.status, isRetryableStatus(res.status));
}
