/**
 * Embedding throughput on Banking77 queries (npm run bench; prints JSON): the previous path
 * (transformers.js + onnxruntime 1.14, int8-stored weights computed in fp32, batch 8) against
 * onnxruntime-node 1.30 used directly: the default (a pool of single-threaded int8 sessions in
 * worker threads, one per core, batch 8), the same with 1 worker, batch 1 and 16, the fp32 graph,
 * and one in-process session with 2 intra-op threads. Texts go in calls of EMBED_CHUNK (1,024),
 * as `evalgap run` sends them. Variants are interleaved over `--reps` rounds (5; the machine is shared; only ratios within
 * one run mean anything) and the medians reported, with the load average at start and end.
 */
import os from 'node:os';
import { loadConfig } from '../../src/config/index.js';
import { EMBED_CHUNK } from '../../src/ingest/process.js';
import { loadEmbedder, type Embedder, type Precision } from '../../src/embed/embedder.js';
import { loadThreadedEmbedder, poolSize } from '../../src/embed/threaded.js';
import { BANKING77_MISSING, hasBanking77, loadBanking77 } from '../helpers/banking77.js';
import { loadLegacyEmbedder } from './legacy-embedder.js';

/** queries/s per core of int8 compute on this machine's class (AVX-512 VNNI, see issue 12). */
const INT8_CEILING_2_CORES = 2330;

const arg = (name: string, d: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? d);
const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'embed-sweep', skipped: BANKING77_MISSING }));
    return;
  }
  const reps = arg('reps', 5);
  const texts = loadBanking77('test').slice(0, arg('texts', 2048)).map((r) => r.text);
  const base = loadConfig().embed;
  type Variant = {
    name: string;
    precision?: Precision;
    /** 'pool': worker threads with one single-threaded session each; 'session': one in-process session */
    mode?: 'pool' | 'session';
    threads?: number;
    batchSize: number;
    e?: Pick<Embedder, 'embed'> & { close?: () => Promise<void> };
  };
  const variants: Variant[] = [{ name: 'previous (transformers.js, ort 1.14, batch 8)', batchSize: 8 }];
  for (const [precision, mode, threads, batchSize] of [
    ['int8', 'pool', 2, 8],
    ['int8', 'pool', 1, 8],
    ['int8', 'pool', 2, 1],
    ['int8', 'pool', 2, 16],
    ['int8', 'session', 2, 8],
    ['fp32', 'pool', 2, 8],
  ] as const) {
    const what = mode === 'pool' ? `${threads} worker${threads > 1 ? 's' : ''} x 1 thread` : `1 session x ${threads} threads`;
    variants.push({ name: `${precision}, ${what}, batch ${batchSize}`, precision, mode, threads, batchSize });
  }
  for (const v of variants) {
    const o = { ...base, precision: v.precision!, threads: v.threads!, batchSize: v.batchSize };
    v.e = !v.precision
      ? await loadLegacyEmbedder(base.modelsDir, base.model, v.batchSize, base.maxTokens)
      : v.mode === 'pool'
        ? await loadThreadedEmbedder(o)
        : await loadEmbedder(o);
    await v.e.embed(texts.slice(0, 256));
  }
  const load0 = os.loadavg();
  const qps = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const cpu = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const roundLoad: number[] = [];
  for (let r = 0; r < reps; r++) {
    roundLoad.push(+os.loadavg()[0].toFixed(2));
    for (const v of variants) {
      const c0 = process.cpuUsage();
      const t = performance.now();
      for (let i = 0; i < texts.length; i += EMBED_CHUNK) await v.e!.embed(texts.slice(i, i + EMBED_CHUNK));
      const s = (performance.now() - t) / 1000;
      const c = process.cpuUsage(c0);
      qps.get(v.name)!.push(texts.length / s);
      cpu.get(v.name)!.push((c.user + c.system) / 1e6 / s);
      console.error(v.name, Math.round(texts.length / s));
    }
  }
  for (const v of variants) await v.e!.close?.();
  const baseline = median(qps.get(variants[0].name)!);
  const results = variants.map((v) => ({
    variant: v.name,
    precision: v.precision ?? 'int8 weights, fp32 compute',
    mode: v.mode ?? 'transformers.js pipeline',
    threads: v.threads ?? 'runtime default',
    batchSize: v.batchSize,
    queriesPerSecond: Math.round(median(qps.get(v.name)!)),
    vsPrevious: +(median(qps.get(v.name)!) / baseline).toFixed(2),
    // CPU seconds per wall second of this process (worker threads included): what it got of the cores
    cpuPerWallSecond: +median(cpu.get(v.name)!).toFixed(2),
    all: qps.get(v.name)!.map(Math.round),
  }));
  // the ratio to the previous path within each round (both measured minutes apart at most), then
  // the median over rounds: steadier than the ratio of medians when the load changes mid-run
  const perRoundVsPrevious = (name: string) => median(qps.get(name)!.map((q, r) => q / qps.get(variants[0].name)![r]));
  const def = results.find(
    (r) => r.precision === base.precision && r.mode === 'pool' && r.threads === poolSize(base.threads) && r.batchSize === base.batchSize,
  );
  console.log(
    JSON.stringify(
      {
        bench: 'embed-sweep',
        texts: texts.length,
        reps,
        loadAverage1m: { start: +load0[0].toFixed(2), end: +os.loadavg()[0].toFixed(2) },
        default: { precision: base.precision, workers: poolSize(base.threads), batchSize: base.batchSize },
        defaultQueriesPerSecond: def?.queriesPerSecond,
        defaultVsPrevious: def?.vsPrevious,
        defaultVsPreviousMedianOfRounds: def ? +perRoundVsPrevious(def.variant).toFixed(2) : undefined,
        loadAverage1mPerRound: roundLoad,
        defaultVsInt8Ceiling: def ? +(def.queriesPerSecond / INT8_CEILING_2_CORES).toFixed(2) : undefined,
        targets: { queriesPerSecond: 1500, vsPrevious: 3.7 },
        results,
      },
      null,
      2,
    ),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
