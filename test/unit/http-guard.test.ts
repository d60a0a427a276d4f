/**
 * src/config/http-guard.ts on a real loopback socket: requests a page in a browser makes (its
 * Origin, its Sec-Fetch-Site, a DNS-rebinding page's own Host) are told apart from Prometheus',
 * curl's and Node's.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserRefusal } from '../../src/config/http-guard.js';

let server: http.Server;
let port = 0;
let allowLocalhost = false;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const r = browserRefusal(req, { allowLocalhost });
    res.statusCode = r ? 403 : 200;
    res.end(r ?? 'ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  port = (server.address() as { port: number }).port;
});
afterAll(() => new Promise((r) => server.close(r)));

const get = (headers: Record<string, string>) =>
  new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.get(`http://127.0.0.1:${port}/metrics`, { headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
  });

describe('browserRefusal', () => {
  it("serves clients that are not pages: Node's fetch, and a request with the bound Host and nothing else", async () => {
    allowLocalhost = false;
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    expect((await get({})).status).toBe(200);
    expect((await get({ 'sec-fetch-site': 'none' })).status).toBe(200);
  });

  it("refuses a DNS-rebinding page's Host, any Origin, and Sec-Fetch-Site from a page, naming why", async () => {
    allowLocalhost = false;
    for (const host of [`rebind.example:${port}`, '127.0.0.1', `127.0.0.1:${port + 1}`, `localhost:${port}`]) {
      const r = await get({ host });
      expect(r.status, host).toBe(403);
      expect(r.text).toContain(`127.0.0.1:${port}`);
    }
    for (const origin of ['http://evil.example', `http://127.0.0.1:${port}`, 'null']) expect((await get({ origin })).status, origin).toBe(403);
    for (const site of ['cross-site', 'same-site', 'same-origin']) expect((await get({ 'sec-fetch-site': site })).status, site).toBe(403);
  });

  it('allowLocalhost: localhost:<port> is served (no page can rebind that name), other names still refused', async () => {
    allowLocalhost = true;
    expect((await get({ host: `localhost:${port}` })).status).toBe(200);
    expect((await get({ host: `localhost:${port + 1}` })).status).toBe(403);
    expect((await get({ host: `rebind.example:${port}` })).status).toBe(403);
    expect((await get({ host: `localhost:${port}`, origin: 'http://localhost:3000' })).status).toBe(403);
  });
});
