/**
 * A small local webhook receiver (`evalgap receive`): verifies each delivery's Standard Webhooks
 * signature with the `standardwebhooks` package (rejecting a bad signature or a timestamp outside
 * the 5-minute tolerance with 401; a request from a web page with 403, before its body is read),
 * dedupes on webhook-id, and keeps what it accepted. It is what a receiver of evalgap alerts looks
 * like, and what the demo and the tests deliver to.
 */
import http from 'node:http';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { refuseBrowserRequest } from '../config/http-guard.js';

export interface Received {
  id: string;
  timestamp: number;
  body: unknown;
  receivedAt: number;
}

export interface ReceiverOptions {
  secret: string;
  /** called once per new (not duplicate) delivery */
  onAlert?: (r: Received) => void;
}

export class WebhookReceiver {
  private server: http.Server | null = null;
  private readonly wh: Webhook;
  /** accepted deliveries, one per webhook-id */
  readonly received: Received[] = [];
  private readonly seen = new Set<string>();
  /** every request, whatever the answer */
  requests = 0;
  duplicates = 0;
  rejected = 0;
  /** answer 503 to everything while true (a receiver that is down) */
  down = false;
  port = 0;

  constructor(private readonly opts: ReceiverOptions) {
    this.wh = new Webhook(opts.secret);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  async start(port = 0): Promise<void> {
    this.server = http.createServer((req, res) => {
      // a web page (or a DNS-rebinding one) gets nothing, before the body is read (src/config/http-guard.ts)
      if (refuseBrowserRequest(req, res, { allowLocalhost: true })) {
        this.requests += 1;
        this.rejected += 1;
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.requests += 1;
        const body = Buffer.concat(chunks).toString('utf8');
        res.setHeader('content-type', 'application/json');
        if (this.down) {
          res.statusCode = 503;
          res.end('{"error":"down"}');
          return;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
        let payload: unknown;
        try {
          payload = this.wh.verify(body, headers);
        } catch (e) {
          this.rejected += 1;
          res.statusCode = e instanceof WebhookVerificationError ? 401 : 400;
          res.end(JSON.stringify({ error: (e as Error).message }));
          return;
        }
        const id = headers['webhook-id'];
        if (this.seen.has(id)) {
          this.duplicates += 1;
        } else {
          this.seen.add(id);
          const r = { id, timestamp: Number(headers['webhook-timestamp']), body: payload, receivedAt: Date.now() };
          this.received.push(r);
          this.opts.onAlert?.(r);
        }
        res.statusCode = 200;
        res.end('{"ok":true}');
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, '127.0.0.1', () => {
        const a = this.server!.address();
        this.port = typeof a === 'object' && a ? a.port : port;
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections();
    await closed;
  }
}
