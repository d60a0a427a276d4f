/**
 * End-to-end `evalgap run` on the local broker and the embedded engine (npm run bench; JSON).
 *
 * The real command runs as a child process (`node dist/cli/main.js run`), so its peak RSS is its
 * own: /proc/<pid>/status VmHWM, read before it is stopped. Banking77 test queries (N) are put on
 * a topic once; each round starts a fresh `run` (new consumer group, new data folder) that reads
 * them all, and times the first consumed message to the N-th stored row from its /metrics.
 * Rounds alternate with bare embedding of the same texts through the same pool of worker
 * threads (same model, precision, workers and batch size) in this process, while the child is
 * not running: bare, run, bare, run, …, bare. Each round's ratio is taken against the mean of the
 * bare measurements right before and after it; the median over rounds is reported.
 * The child's /metrics is read every 100 ms while it works (each scrape costs it CPU: polled every
 * 20 ms, the ratio fell from ~0.75 to ~0.62). Its own histograms split its time into embedding +
 * assignment and ClickHouse writes.
 * The last round also gets paced traffic at half its rate: produce → stored latency (p50/p99),
 * read through the child's read-only POST /query.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config/index.js';
import { EMBED_CHUNK } from '../../src/ingest/process.js';
import { createLogger } from '../../src/config/logger.js';
import { DEFAULT_FIT, buildCoverageModel, dedupeCases, evalSetHash } from '../../src/coverage/fit.js';
import { saveCoverageModel } from '../../src/coverage/model.js';
import { loadThreadedEmbedder } from '../../src/embed/threaded.js';
import { createKafka, ensureTopics, produceJson } from '../../src/ingest/kafka.js';
import { readQueryToken, RUN_FILE } from '../../src/store/http-query.js';
import { BANKING77_MISSING, hasBanking77, loadBanking77 } from '../helpers/banking77.js';
import { tmpDir, uniqueName } from '../helpers/fixtures.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const N = Number(args.get('n') ?? 3000);
const rounds = Number(args.get('rounds') ?? 3);
const paceSeconds = Number(args.get('pace-seconds') ?? 15);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
// how often the child's /metrics is read while it works: each scrape costs the child CPU (prom-client's
// default metrics), so not too often; the timing error is at most one interval (~1% of a round)
const POLL_MS = Number(args.get('poll-ms') ?? 100);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** kB fields of /proc/<pid>/status (VmHWM: peak resident set; VmRSS: now). */
function procStatus(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(Vm\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

class RunChild {
  readonly proc: ChildProcess;
  private port = 0;
  private database = '';
  private stderr = '';
  constructor(modelDir: string, readonly dataDir: string, topic: string, group: string) {
    this.proc = spawn(
      process.execPath,
      [CLI, 'run', '--model', modelDir, '--topic', topic, '--dlq-topic', `${topic}.dlq`, '--group', group, '--data-dir', dataDir, '--metrics-port', '0', '--gaps-every', 'off'],
      { env: { ...process.env, EVALGAP_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.proc.stderr!.on('data', (d) => (this.stderr = (this.stderr + d).slice(-4000)));
  }
  async ready(): Promise<void> {
    const f = path.join(this.dataDir, RUN_FILE);
    for (let i = 0; i < 1200 && !this.port; i++) {
      if (this.proc.exitCode !== null) throw new Error(`evalgap run exited (${this.proc.exitCode}): ${this.stderr}`);
      try {
        const info = JSON.parse(fs.readFileSync(f, 'utf8'));
        if (info.pid === this.proc.pid) {
          this.port = info.port;
          this.database = info.database;
        }
      } catch {
        /* not written yet */
      }
      if (!this.port) await sleep(50);
    }
    if (!this.port) throw new Error(`evalgap run did not start: ${this.stderr}`);
  }
  async counter(name: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${this.port}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) if (line.startsWith(name)) sum += Number(line.split(' ').pop());
    return sum;
  }
  async query<T>(query: string): Promise<T[]> {
    const r = await fetch(`http://127.0.0.1:${this.port}/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${readQueryToken(this.dataDir)}` },
      body: JSON.stringify({ query: query.replaceAll('{db}', this.database) }),
    });
    const j = (await r.json()) as { rows?: T[]; error?: string };
    if (!j.rows) throw new Error(j.error);
    return j.rows;
  }
  status() {
    return procStatus(this.proc.pid!);
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await exited;
  }
}

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'ingest', skipped: BANKING77_MISSING }));
    return;
  }
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: npm run build`);
  const dir = tmpDir('evalgap-bench-');
  const cfg = loadConfig(process.env);
  const threaded = await loadThreadedEmbedder(cfg.embed);
  const logger = createLogger('warn');

  // a coverage model from 3000 train queries
  const train = dedupeCases(loadBanking77('train').slice(0, 3000).map((r, i) => ({ id: String(i), text: r.text, tags: [] }))).unique;
  const tv = (await threaded.embed(train.map((c) => c.text))).vectors;
  const info = { model: threaded.modelName, checksum: threaded.modelChecksum, precision: threaded.precision, dim: threaded.dim, maxTokens: threaded.maxTokens };
  const built = buildCoverageModel(train, train.length, evalSetHash(train), tv, info, { ...DEFAULT_FIT, k: 60, source: 'banking77', textField: 'text' });
  const modelDir = path.join(dir, 'model');
  saveCoverageModel(modelDir, built.draft, built.arrays);

  const test = loadBanking77('test');
  const texts = Array.from({ length: N }, (_, i) => test[i % test.length].text);
  const kafka = createKafka(cfg.kafka, 'evalgap-bench', logger);
  const topic = uniqueName('evalgap.bench');
  await ensureTopics(kafka, [{ topic }, { topic: `${topic}.dlq` }]);
  const producer = kafka.producer();
  await producer.connect();
  const now = Date.now();
  await produceJson(producer, topic, texts.map((q, i) => ({ request_id: `b-${i}`, ts: now, query: q, agent: 'bench' })));

  const bare = async () => {
    const t0 = performance.now();
    for (let i = 0; i < texts.length; i += EMBED_CHUNK) await threaded.embed(texts.slice(i, i + EMBED_CHUNK));
    return texts.length / ((performance.now() - t0) / 1000);
  };
  await threaded.embed(texts.slice(0, 256));
  const load0 = os.loadavg()[0];
  const bares: number[] = [await bare()];
  const e2e: number[] = [];
  const peakRssMB: number[] = [];
  const split: Record<string, number>[] = [];
  let paced: Record<string, unknown> = {};
  for (let r = 0; r < rounds; r++) {
    const child = new RunChild(modelDir, path.join(dir, `chdb-${r}`), topic, uniqueName('bench'));
    try {
      await child.ready();
      while ((await child.counter('evalgap_messages_consumed_total')) === 0) await sleep(5);
      const t = performance.now();
      while ((await child.counter('evalgap_rows_stored_total')) < N) await sleep(POLL_MS);
      const rate = N / ((performance.now() - t) / 1000);
      e2e.push(rate);
      // where the child's time went: embedding + assignment, and the ClickHouse writes
      split.push({
        embedAndAssignSeconds: +(await child.counter('evalgap_embed_seconds_sum')).toFixed(2),
        storeSeconds: +(await child.counter('evalgap_store_seconds_sum')).toFixed(2),
        batches: await child.counter('evalgap_batch_size_count'),
        wallSeconds: +(N / rate).toFixed(2),
      });
      if (r === rounds - 1) {
        // paced traffic at half the measured rate
        const perSecond = Math.max(1, Math.floor(rate / 2));
        const count = Math.floor(perSecond * paceSeconds);
        const tickMs = 100;
        const perTick = Math.max(1, Math.round((perSecond * tickMs) / 1000));
        const start = Date.now();
        let sent = 0;
        while (sent < count) {
          const batch = [];
          for (let j = 0; j < perTick && sent < count; j++, sent++) {
            batch.push({ request_id: `p-${sent}`, ts: Date.now(), query: texts[sent % texts.length], agent: 'bench-paced' });
          }
          await produceJson(producer, topic, batch);
          await sleep(Math.max(0, start + (sent / perTick) * tickMs - Date.now()));
        }
        while ((await child.counter('evalgap_rows_stored_total')) < N + count) await sleep(POLL_MS);
        const [lat] = await child.query<{ p50: number; p99: number; max: number }>(
          `SELECT quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS max
           FROM (SELECT toFloat64(dateDiff('millisecond', ts, ingested_at)) AS d FROM {db}.requests WHERE agent = 'bench-paced')`,
        );
        paced = { messagesPerSecond: perSecond, messages: count, produceToStoredMs: lat };
      }
      peakRssMB.push(Math.round(child.status().VmHWM / 1024));
    } finally {
      await child.stop();
    }
    bares.push(await bare());
    console.error(`round ${r}: run ${Math.round(e2e[r])} msg/s, bare ${Math.round(bares[r])} / ${Math.round(bares[r + 1])}, peak RSS ${peakRssMB[r]} MB`);
  }
  await threaded.close();
  await producer.disconnect();
  const ratios = e2e.map((x, r) => x / ((bares[r] + bares[r + 1]) / 2));
  // cross-check that needs no polling: messages over the child's own embed + assign + store time
  // (leaves out Kafka fetches and commits, so it flatters run)
  const busyRatios = split.map((sp, r) => N / (sp.embedAndAssignSeconds + sp.storeSeconds) / ((bares[r] + bares[r + 1]) / 2));
  console.log(
    JSON.stringify(
      {
        bench: 'ingest',
        store: 'embedded (chdb)',
        process: 'evalgap run (child process, node dist/cli/main.js run)',
        messages: N,
        rounds,
        batchSize: cfg.embed.batchSize,
        precision: cfg.embed.precision,
        workers: threaded.workers,
        loadAverage1m: { start: +load0.toFixed(2), end: +os.loadavg()[0].toFixed(2) },
        endToEndMessagesPerSecond: Math.round(median(e2e)),
        bareEmbeddingSentencesPerSecond: Math.round(median(bares)),
        endToEndOverBareEmbedding: +median(ratios).toFixed(3),
        busyTimeOverBareEmbedding: +median(busyRatios).toFixed(3),
        targetRatio: 0.9,
        perRound: e2e.map((x, r) => ({ run: Math.round(x), bareBefore: Math.round(bares[r]), bareAfter: Math.round(bares[r + 1]), ratio: +ratios[r].toFixed(3), peakRssMB: peakRssMB[r], ...split[r] })),
        paced,
        runPeakRssMB: Math.max(...peakRssMB),
        targetPeakRssMB: 600,
      },
      null,
      2,
    ),
  );
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
