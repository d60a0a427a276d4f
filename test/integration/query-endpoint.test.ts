/**
 * The read-only query endpoint (`POST /query` of `evalgap run`) and `evalgap sql` against the real
 * engine, the real broker and the real model: what it refuses (files written or read, table
 * functions, missing or wrong token, foreign Host, Origin, non-JSON), a cross-origin page and a
 * DNS-rebinding page in headless Chromium, and its limits (time, memory, result size, one query at
 * a time, a disconnect kills the query, SIGTERM during a heavy query).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { startRun, type Running } from '../../src/cli/run.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { queryEndpoint, readQueryToken, RUN_FILE, TOKEN_FILE } from '../../src/store/http-query.js';
import { Store } from '../../src/store/store.js';
import { fitSampleModel, groupCaughtUp, testConfig, testKafka, tmpDir, uniqueName, waitFor } from '../helpers/fixtures.js';

const execFileP = promisify(execFile);
const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
const CHROMIUM = process.env.EVALGAP_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium) console.warn(`query endpoint browser test skipped: no Chromium at ${CHROMIUM}`);
/** never ends by itself (bounded only by max_execution_time) */
const HEAVY = 'SELECT count() AS n FROM system.numbers WHERE sipHash64(number) = 0';

const kafka = testKafka();
let dir: string;
let cfg: Config;
let running: Running;
let store: Store;
let url: string;
let token: string;

beforeAll(async () => {
  dir = tmpDir();
  const topic = uniqueName('evalgap.test.query');
  // long limit: a query that ends here was cancelled, not timed out; one waits, more are refused
  cfg = testConfig(path.join(dir, 'chdb'), { EVALGAP_QUERY_TIMEOUT_SECONDS: '3600', EVALGAP_QUERY_QUEUE: '1' });
  cfg = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group: uniqueName('g') }, ingest: { ...cfg.ingest, metricsPort: 0 } };
  await fitSampleModel(path.join(dir, 'model'));
  running = await startRun(cfg, path.join(dir, 'model'), createLogger('silent'));
  const p = kafka.producer();
  await p.connect();
  await produceJson(p, topic, sampleTraffic(20, { seed: 5, idPrefix: uniqueName('q') }));
  await p.disconnect();
  await waitFor(() => groupCaughtUp(kafka, cfg.kafka.group, topic), 120_000, 'the run to store every message');
  store = await Store.open(cfg.clickhouse, { migrate: false });
  url = `http://127.0.0.1:${running.service.port}/query`;
  token = readQueryToken(cfg.clickhouse.path);
});
afterAll(async () => {
  await running?.stop();
  await store?.close();
});

/** A raw request (fetch may not set Host): status and parsed body. */
function request(
  target: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; signal?: AbortSignal } = {},
): Promise<{ status: number; body: { rows?: unknown[]; error?: string } }> {
  return new Promise((resolve, reject) => {
    const req = http.request(target, { method: opts.method ?? 'POST', headers: opts.headers, signal: opts.signal }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        let body = {};
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const ask = (query: string, headers: Record<string, string> = {}, signal?: AbortSignal) =>
  request(url, { headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...headers }, body: JSON.stringify({ query }), signal });

/** Queries of the endpoint still running in the engine (seen through a connection of this process). */
async function endpointQueries(): Promise<number> {
  const [r] = await store.query<{ n: string }>(`SELECT count() AS n FROM system.processes WHERE position(query, 'evalgap-query:') > 0 AND query_id != queryID()`);
  return Number(r.n);
}

describe('POST /query refuses what is not one read-only SELECT', () => {
  it('answers a SELECT with parameters', async () => {
    const r = await request(url, {
      headers: { 'content-type': 'application/json; charset=utf-8', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: `SELECT count() AS n FROM ${store.t('requests')} WHERE agent != {a:String}`, params: { a: 'nobody' } }),
    });
    expect(r).toEqual({ status: 200, body: { rows: [{ n: '20' }] } });
  });

  it('refuses INTO OUTFILE (plain, TRUNCATE, APPEND, inside UNION) and writes no file', async () => {
    const target = path.join(dir, 'pwned.txt');
    for (const q of [
      `SELECT 'x' INTO OUTFILE '${target}'`,
      `SELECT 'x' INTO OUTFILE '${target}' TRUNCATE`,
      `SELECT 'x' INTO OUTFILE '${target}' APPEND`,
      `SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '${target}'`,
      `WITH 1 AS a SELECT a INTO OUTFILE '${target}' AND STDOUT`,
    ]) {
      const r = await ask(q);
      expect(r.status, q).toBe(400);
      expect(r.body.error, q).toMatch(/refused: INTO OUTFILE/);
    }
    expect(fs.existsSync(target)).toBe(false);
  });

  it('refuses reading files or the network: file(), url(), s3(), remote() as table functions, file() as a scalar', async () => {
    for (const q of [
      `SELECT * FROM file('/etc/hostname', 'LineAsString')`,
      `SELECT file('/etc/hostname') AS f`,
      `SELECT * FROM url('http://127.0.0.1:1/x', 'CSV', 'a String')`,
      `SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV', 'a String')`,
      `SELECT * FROM remote('127.0.0.1:1', system.one)`,
      `SELECT 1 FROM ${store.t('requests')} WHERE agent IN (SELECT * FROM file('/etc/hostname', 'LineAsString'))`,
      `SELECT * FROM executable('id', 'TSV', 'a String')`,
      `SELECT dictGet('d', 'a', 1)`,
    ]) {
      const r = await ask(q);
      expect(r.status, q).toBe(400);
      expect(r.body.error, q).toMatch(/^refused: the (table )?function/);
    }
  });

  it('refuses other statements, several statements and SETTINGS', async () => {
    for (const [q, why] of [
      [`DROP TABLE ${store.t('requests')}`, /only SELECT/],
      [`INSERT INTO ${store.t('coverage_clusters')} (model_version) VALUES ('x')`, /only SELECT/],
      [`SELECT 1; DROP TABLE ${store.t('requests')}`, /Multi-statements/],
      [`SELECT 1 SETTINGS max_execution_time = 0`, /SETTINGS|readonly/],
      [`SELECT 1 FORMAT CSV`, /FORMAT|Syntax/],
      ['SET readonly = 0', /only SELECT/],
    ] as const) {
      const r = await ask(q);
      expect(r.status, q).toBe(400);
      expect(r.body.error, q).toMatch(why);
    }
    const [n] = await store.query<{ n: string }>(`SELECT count() AS n FROM ${store.t('requests')}`);
    expect(Number(n.n)).toBe(20);
  });
});

describe('POST /query serves only evalgap, not browsers', () => {
  it('writes its token to the data folder, readable by the owner only, and removes nothing of another instance', () => {
    const f = path.join(cfg.clickhouse.path, TOKEN_FILE);
    expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(JSON.parse(fs.readFileSync(path.join(cfg.clickhouse.path, RUN_FILE), 'utf8')).port).toBe(running.service.port);
  });

  it('401 without the token or with a wrong one', async () => {
    const body = JSON.stringify({ query: 'SELECT 1' });
    const none = await request(url, { headers: { 'content-type': 'application/json' }, body });
    expect(none.status).toBe(401);
    expect(none.body.rows).toBeUndefined();
    const wrong = await request(url, { headers: { 'content-type': 'application/json', authorization: `Bearer ${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}` }, body });
    expect(wrong.status).toBe(401);
    const basic = await request(url, { headers: { 'content-type': 'application/json', authorization: `Basic ${token}` }, body });
    expect(basic.status).toBe(401);
  });

  it('403 for a Host other than the bound address (DNS rebinding), for any Origin, for Sec-Fetch-Site from a page', async () => {
    const port = running.service.port;
    for (const host of [`rebind.example:${port}`, `localhost:${port}`, '127.0.0.1', `127.0.0.1:${port + 1}`]) {
      const r = await ask('SELECT 1', { host });
      expect(r.status, host).toBe(403);
      expect(r.body.error).toMatch(/Host/);
    }
    for (const origin of ['http://evil.example', `http://127.0.0.1:${port}`, 'null']) {
      const r = await ask('SELECT 1', { origin });
      expect(r.status, origin).toBe(403);
    }
    for (const site of ['cross-site', 'same-site', 'same-origin']) expect((await ask('SELECT 1', { 'sec-fetch-site': site })).status).toBe(403);
    expect((await ask('SELECT 1', { 'sec-fetch-site': 'none' })).status).toBe(200);
  });

  it('the other routes of the port (/metrics, /healthz, /readyz) refuse pages the same way; Prometheus, curl and localhost get them', async () => {
    const port = running.service.port;
    const get = (route: string, headers: Record<string, string> = {}) => request(`http://127.0.0.1:${port}${route}`, { method: 'GET', headers });
    for (const route of ['/metrics', '/healthz', '/readyz']) {
      // (/readyz may say 503 for its own reasons: what matters is that it answers)
      expect((await get(route)).status, route).not.toBe(403);
      expect((await get(route, { host: `localhost:${port}` })).status, route).not.toBe(403);
      if (route === '/metrics') expect((await get(route, { host: `localhost:${port}` })).status).toBe(200);
      const pageLike: Record<string, string>[] = [{ host: `rebind.example:${port}` }, { host: '127.0.0.1' }, { origin: 'http://evil.example' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-origin' }];
      for (const h of pageLike) {
        expect((await get(route, h)).status, `${route} ${JSON.stringify(h)}`).toBe(403);
      }
    }
  });

  it('415 for a body that is not JSON (the content types a page can send without a preflight)', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '']) {
      const r = await request(url, { headers: { 'content-type': type, authorization: `Bearer ${token}` }, body: JSON.stringify({ query: 'SELECT 1' }) });
      expect(r.status, type).toBe(415);
    }
  });

  it.skipIf(!hasChromium)('a cross-origin page and a DNS-rebinding page in headless Chromium can neither write a file nor read a row, the metrics or the health', async () => {
    const port = running.service.port;
    const files = ['a', 'b', 'c', 'd'].map((x) => path.join(dir, `browser-${x}.txt`));
    const q = (f: string) => JSON.stringify({ query: `SELECT 'pwned' INTO OUTFILE '${f}'` });
    const secret = `SELECT query FROM ${store.t('requests')} LIMIT 5`;
    const attr = (v: string) => v.replaceAll('&', '&amp;').replaceAll('"', '&quot;').replaceAll("'", '&#39;');
    // the attacker's page, on another origin (evil.test resolves to this machine)
    const page = `<!doctype html><body><iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="http://127.0.0.1:${port}/query">
<input name="${attr(q(files[1]).slice(0, -1) + ',"pad":"')}" value="${attr('"}')}"></form>
<script>
window.results = [];
const target = 'http://127.0.0.1:${port}/query';
async function attempt(name, fn) { try { window.results.push({ name, ok: true, text: await fn() }); } catch (e) { window.results.push({ name, ok: false, text: String(e) }); } }
(async () => {
  await attempt('no-cors text/plain', () => fetch(target, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: ${JSON.stringify(q(files[0]))} }).then((r) => r.text()));
  document.getElementById('f').submit();
  await attempt('cors json', () => fetch(target, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer guess' }, body: ${JSON.stringify(q(files[2]))} }).then((r) => r.text()));
  await attempt('cors read', () => fetch(target, { method: 'POST', body: ${JSON.stringify(JSON.stringify({ query: secret }))} }).then((r) => r.text()));
  window.done = true;
})();
</script></body>`;
    const evil = http.createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(page);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', () => r()));
    const evilPort = (evil.address() as { port: number }).port;
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--host-resolver-rules=MAP evil.test 127.0.0.1, MAP rebind.test 127.0.0.1',
        // the browser's own local-network protections off: this shows what the endpoint refuses by itself
        '--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,LocalNetworkAccessChecks',
      ],
    });
    try {
      const ctx = await browser.newContext();
      const p1 = await ctx.newPage();
      await p1.goto(`http://evil.test:${evilPort}/`);
      await p1.waitForFunction(() => (window as unknown as { done?: boolean }).done === true, undefined, { timeout: 60_000 });
      await p1.waitForLoadState('networkidle');
      const results = (await p1.evaluate(() => (window as unknown as { results: { name: string; ok: boolean; text: string }[] }).results)) as {
        name: string;
        text: string;
      }[];
      expect(results.map((r) => r.name)).toEqual(['no-cors text/plain', 'cors json', 'cors read']);
      for (const r of results) expect(r.text, r.name).not.toContain('rows');
      // DNS rebinding: the attacker's name now points here, so the page is same-origin with the
      // endpoint and could read replies; even knowing the token, the Host it sends is refused
      const p2 = await ctx.newPage();
      await p2.route(`http://rebind.test:${port}/`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><p>rebound</p>' }));
      await p2.goto(`http://rebind.test:${port}/`);
      const rebound = await p2.evaluate(
        async ([tok, query, file]) => {
          const out: { status: number; text: string }[] = [];
          for (const body of [JSON.stringify({ query }), JSON.stringify({ query: `SELECT 1 INTO OUTFILE '${file}'` })]) {
            const r = await fetch('/query', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${tok}` }, body });
            out.push({ status: r.status, text: await r.text() });
          }
          return out;
        },
        [token, secret, files[3]] as const,
      );
      for (const r of rebound) {
        expect(r.status).toBe(403);
        expect(r.text).not.toContain('rows');
      }
      // nor can it read the metrics or the health of the instance
      const pages = await p2.evaluate(async () => {
        const out: { status: number; text: string }[] = [];
        for (const route of ['/metrics', '/healthz', '/readyz']) {
          const r = await fetch(route);
          out.push({ status: r.status, text: await r.text() });
        }
        return out;
      });
      for (const r of pages) {
        expect(r.status).toBe(403);
        expect(r.text).not.toMatch(/evalgap_|"status"/);
      }
    } finally {
      await browser.close();
      await new Promise((r) => evil.close(r));
    }
    for (const f of files) expect(fs.existsSync(f), f).toBe(false);
  });
});

describe('POST /query limits', () => {
  it('one query runs, one waits, more are refused (429); a client that goes away has its query killed', async () => {
    const heavy = new AbortController();
    const first = ask(HEAVY, {}, heavy.signal).catch((e: Error) => ({ status: 0, body: { error: e.name } }));
    await waitFor(async () => (await endpointQueries()) === 1, 60_000, 'the heavy query to run');
    let doneB = false;
    let doneC = false;
    const b = ask('SELECT 1 AS one').finally(() => (doneB = true));
    const c = ask('SELECT 2 AS two').finally(() => (doneC = true));
    // while the heavy query runs nothing else can finish: one of b, c waits, the other is refused
    const refused = await Promise.race([b, c]);
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatch(/busy/);
    expect(doneB && doneC).toBe(false);
    expect(await endpointQueries()).toBe(1);
    heavy.abort();
    expect((await first).status).toBe(0);
    // killed, not left running until its 3600 s limit; the waiting one runs next
    await waitFor(async () => (await endpointQueries()) === 0, 60_000, 'the abandoned query to be killed');
    const waited = doneB && (await b).status === 429 ? await c : await b;
    expect(waited.status).toBe(200);
    expect(waited.body.rows).toHaveLength(1);
  });

  it('a query past max_execution_time, max_memory_usage or max_result_rows ends with the engine error', async () => {
    // a second endpoint with small limits over the same data folder (the engine allows several
    // connections to one folder in one process)
    const small = queryEndpoint(cfg.clickhouse, { timeoutSeconds: 1, maxMemoryBytes: 32 * 1_048_576, maxResultRows: 10, maxResultBytes: 1_048_576, queue: 0 });
    const server = http.createServer(async (req, res) => {
      if (!(await small.handle(req, res))) res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const send = (query: string) =>
      request(`http://127.0.0.1:${port}/query`, { headers: { 'content-type': 'application/json', authorization: `Bearer ${small.token}` }, body: JSON.stringify({ query }) });
    try {
      const slow = await send(HEAVY);
      expect(slow.status).toBe(400);
      expect(slow.body.error).toMatch(/Timeout exceeded|TIMEOUT_EXCEEDED/);
      const big = await send('SELECT groupArray(number) AS a FROM numbers(100000000)');
      expect(big.body.error).toMatch(/memory limit|MEMORY_LIMIT_EXCEEDED/i);
      const many = await send('SELECT number FROM numbers(1000)');
      expect(many.body.error).toMatch(/Limit for result exceeded|TOO_MANY_ROWS/);
      expect((await send('SELECT number FROM numbers(10)')).body.rows).toHaveLength(10);
    } finally {
      await small.close();
      await new Promise((r) => server.close(r));
    }
    expect(await endpointQueries()).toBe(0);
  });
});

describe('evalgap sql on a data folder it holds applies the same checks and limits', () => {
  it('refuses INTO OUTFILE and file(), and stops a query at EVALGAP_QUERY_TIMEOUT_SECONDS', async () => {
    const own = path.join(dir, 'own-chdb');
    const env = { ...process.env, EVALGAP_DATA_DIR: own, EVALGAP_LOG_LEVEL: 'warn', EVALGAP_QUERY_TIMEOUT_SECONDS: '1' };
    const target = path.join(dir, 'cli-pwned.txt');
    const fail = (args: string[]) => execFileP('node', [CLI, 'sql', ...args], { env }).then(() => ({ code: 0, stderr: '' }), (e) => e as { code: number; stderr: string });
    const out = await fail([`SELECT 1 INTO OUTFILE '${target}'`]);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/refused: INTO OUTFILE/);
    expect(fs.existsSync(target)).toBe(false);
    expect((await fail([`SELECT file('/etc/hostname')`])).stderr).toMatch(/refused: the function file\(\)/);
    expect((await fail([HEAVY])).stderr).toMatch(/Timeout exceeded/);
    const ok = await execFileP('node', [CLI, 'sql', 'SELECT {n:UInt8} + 1 AS x', '--param', 'n=2', '--format', 'json'], { env });
    expect(JSON.parse(ok.stdout)).toEqual([{ x: 3 }]);
  });
});

describe('evalgap run stops during a heavy query', () => {
  it('SIGTERM while a query runs: the query is killed and the process exits 0', async () => {
    const d = tmpDir();
    const topic = uniqueName('evalgap.test.query-stop');
    await fitSampleModel(path.join(d, 'model'));
    const child = spawn(
      process.execPath,
      [CLI, 'run', '--model', path.join(d, 'model'), '--topic', topic, '--dlq-topic', `${topic}.dlq`, '--group', uniqueName('g'), '--data-dir', path.join(d, 'chdb'), '--metrics-port', '0', '--gaps-every', 'off'],
      { env: { ...process.env, EVALGAP_LOG_LEVEL: 'warn', EVALGAP_QUERY_TIMEOUT_SECONDS: '3600', EVALGAP_QUERY_QUEUE: '0' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (x) => (stderr = (stderr + x).slice(-4000)));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      const info = await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`evalgap run exited: ${stderr}`);
        try {
          const i = JSON.parse(fs.readFileSync(path.join(d, 'chdb', RUN_FILE), 'utf8')) as { pid: number; port: number };
          return i.pid === child.pid && fs.existsSync(path.join(d, 'chdb', TOKEN_FILE)) ? i : null;
        } catch {
          return null;
        }
      }, 120_000, 'evalgap run to start');
      const tok = readQueryToken(path.join(d, 'chdb'));
      const send = (query: string) =>
        request(`http://127.0.0.1:${info.port}/query`, { headers: { 'content-type': 'application/json', authorization: `Bearer ${tok}` }, body: JSON.stringify({ query }) });
      const sendHeavy = () => send(HEAVY).catch((e: Error) => ({ status: 0, body: { error: e.message } as { rows?: unknown[]; error?: string } }));
      let heavy = sendHeavy();
      let heavyStatus = 0;
      void heavy.then((h) => (heavyStatus = h.status));
      // with no queue, a second query is refused exactly while the heavy one runs
      await waitFor(
        async () => {
          // a probe that took the slot first makes the heavy query the refused one: send it again
          if (heavyStatus === 429) {
            heavyStatus = 0;
            heavy = sendHeavy();
            void heavy.then((h) => (heavyStatus = h.status));
          }
          return (await send('SELECT 1')).status === 429;
        },
        60_000,
        'the heavy query to run',
      );
      child.kill('SIGTERM');
      // the query alone would run for an hour
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 60_000))]);
      expect(code, stderr).toBe(0);
      const h = await heavy;
      expect(h.body.rows).toBeUndefined();
      expect(fs.existsSync(path.join(d, 'chdb', TOKEN_FILE))).toBe(false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
