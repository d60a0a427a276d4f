/**
 * `evalgap report` against the real broker, engine and model, opened in headless Chromium
 * (Debian's chromium driven by playwright-core; never a downloaded browser): no console errors,
 * no network request, every chart drawn with data; a screenshot is kept.
 * EVALGAP_UPDATE_SCREENSHOT=1 also writes it to docs/report.png (shown in the README).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, type Config } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { produceJson } from '../../src/ingest/kafka.js';
import { startRun } from '../../src/cli/run.js';
import { parseSince, writeReport } from '../../src/cli/report.js';
import { sampleTraffic } from '../../src/cli/sample-data.js';
import { Store } from '../../src/store/store.js';
import { fitSampleModel, groupCaughtUp, realEmbedder, testConfig, testKafka, tmpDir, uniqueName, waitFor, capMs } from '../helpers/fixtures.js';

const CHROMIUM = process.env.EVALGAP_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium) console.warn(`report browser test skipped: no Chromium at ${CHROMIUM} (scripts/setup.sh installs Debian's chromium when run as root)`);
const SECRET = (n: number) => `please wire ${n} dollars to alice.secret@example.com tonight`;

let dir: string;
let cfg: Config;
let store: Store;
const kafka = testKafka();

async function stream(topic: string, values: unknown[], redactText: boolean) {
  const group = uniqueName('g');
  const c: Config = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group }, ingest: { ...cfg.ingest, metricsPort: -1, redactText, redactKey: redactText ? 'k'.repeat(32) : undefined } };
  const p = kafka.producer();
  await p.connect();
  await produceJson(p, topic, values);
  await p.disconnect();
  const running = await startRun(c, path.join(dir, 'model'), createLogger('silent'));
  try {
    await waitFor(() => groupCaughtUp(kafka, group, topic), 90_000, 'the group to commit every offset');
  } finally {
    await running.stop();
  }
}

beforeAll(async () => {
  dir = tmpDir();
  cfg = testConfig(path.join(dir, 'chdb'));
  await fitSampleModel(path.join(dir, 'model'));
  const topic = uniqueName('evalgap.test.report');
  // 40 minutes of traffic that shifts part-way: the untested topics appear in the second half
  const start = Date.now() - 40 * 60_000;
  const calm = sampleTraffic(150, { seed: 21, start, stepMs: 8000, surpriseShare: 0, idPrefix: `${topic}-a` });
  const shifted = sampleTraffic(150, { seed: 22, start: start + 150 * 8000, stepMs: 8000, surpriseShare: 0.4, idPrefix: `${topic}-b` });
  await stream(topic, [...calm, ...shifted], false);
  // requests stored with redacted text, enough to form a gap: the report may show their hashes only
  const secret = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => ({ request_id: `${topic}-secret-${i}`, ts: new Date(Date.now() - 60_000 + i).toISOString(), query: SECRET(100 * (i + 1)) }));
  await stream(`${topic}.redacted`, secret, true);
  store = await Store.open(cfg.clickhouse);
});
afterAll(async () => store?.close());

describe('evalgap report', () => {
  it('writes one self-contained HTML file with every chart fed', async () => {
    const out = path.join(dir, 'report.html');
    const d = await writeReport(store, out, { since: parseSince('7d'), sinceText: '7d', modelPath: path.join(dir, 'model'), embedder: await realEmbedder(), mapSample: 300 });
    expect(d.totals.requests).toBe(308);
    expect(d.totals.redacted).toBe(8);
    expect(d.series.labels.length).toBeGreaterThanOrEqual(6);
    expect(d.series.uncoveredShare).toHaveLength(1);
    expect(d.clusters.find((c) => c.label === 'uncovered')!.recentShare).toBeGreaterThan(d.clusters.find((c) => c.label === 'uncovered')!.referenceShare);
    expect(d.map.eval.length).toBe(160);
    expect(d.map.covered.length + d.map.uncovered.length).toBe(300);
    expect(d.gaps.length).toBeGreaterThan(0);
    // the monitor's migrations create the alerts table; nothing has fired here
    expect(d.alerts.exists).toBe(true);
    expect(d.alerts.rows).toEqual([]);
    const html = fs.readFileSync(out, 'utf8');
    // redacted text appears as its hash only
    expect(html).not.toContain('alice.secret@example.com');
    expect(html).toMatch(/hmac:[0-9a-f]{16}…/);
    expect(html).toContain('No alerts.');
    // self-contained: no external script, stylesheet or image
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/i);
  });

  it.skipIf(!hasChromium)('opens offline in headless Chromium: no console errors, every chart drawn with data; screenshot kept', async () => {
    const out = path.join(dir, 'report.html');
    if (!fs.existsSync(out)) {
      await writeReport(store, out, { since: parseSince('7d'), sinceText: '7d', modelPath: path.join(dir, 'model'), embedder: await realEmbedder(), mapSample: 300 });
    }
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.route('**/*', (route) => {
        const u = route.request().url();
        if (u.startsWith('file:')) return route.continue();
        requests.push(u);
        return route.abort();
      });
      await page.goto(`file://${out}`);
      await page.waitForSelector('body[data-rendered="true"]', { timeout: capMs(20_000) });
      const charts = await page.$$eval('canvas', (cs) =>
        cs.map((c) => {
          const canvas = c as HTMLCanvasElement;
          const ctx = canvas.getContext('2d')!;
          const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          let painted = 0;
          for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
          return { id: canvas.id, series: Number(canvas.dataset.series), points: Number(canvas.dataset.points), painted, w: canvas.width, h: canvas.height };
        }),
      );
      expect(charts.map((c) => c.id).sort()).toEqual(['chart-escalation', 'chart-map', 'chart-series', 'chart-shares']);
      for (const c of charts) {
        expect(c.series, c.id).toBeGreaterThan(0);
        expect(c.points, c.id).toBeGreaterThan(0);
        expect(c.painted / (c.w * c.h), c.id).toBeGreaterThan(0.01);
      }
      expect(charts.find((c) => c.id === 'chart-map')!.points).toBe(460);
      expect(await page.locator('table.gaps tbody tr').count()).toBeGreaterThan(0);
      expect(errors).toEqual([]);
      expect(requests).toEqual([]);
      const shot = path.join(PACKAGE_ROOT, '.evalgap', 'test-artifacts', 'report.png');
      fs.mkdirSync(path.dirname(shot), { recursive: true });
      await page.screenshot({ path: shot, fullPage: true });
      expect(fs.statSync(shot).size).toBeGreaterThan(20_000);
      if (process.env.EVALGAP_UPDATE_SCREENSHOT === '1') fs.copyFileSync(shot, path.join(PACKAGE_ROOT, 'docs', 'report.png'));
    } finally {
      await browser.close();
    }
  });

  it('lists recent alerts from the monitor\'s alerts table', async () => {
    const alert = (created_at: string, summary: string) => ({ id: summary, kind: 'firing', status: 'firing', rule: 'uncovered_share', agent: '*', severity: 'warning', summary, created_at });
    await store.client.insert({ table: store.t('alerts'), values: [alert('2026-01-01 00:00:00.000', 'old'), alert('2026-01-02 00:00:00.000', 'newest <b>')], format: 'JSONEachRow' });
    const out = path.join(dir, 'report-alerts.html');
    const d = await writeReport(store, out, { since: parseSince('7d'), sinceText: '7d', modelPath: path.join(dir, 'model'), embedder: null });
    expect(d.alerts.exists).toBe(true);
    expect(d.alerts.rows.map((r) => r.summary)).toEqual(['newest <b>', 'old']);
    const html = fs.readFileSync(out, 'utf8');
    expect(html).toContain('newest &lt;b&gt;');
    expect(html).not.toContain('No alerts.');
  });
});
