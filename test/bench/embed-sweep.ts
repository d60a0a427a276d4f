/**
 * Embedding throughput on Banking77 queries (npm run bench; prints JSON): the previous path
 * (transformers.js + onnxruntime 1.14, int8-stored weights computed in fp32, batch 8) against
 * onnxruntime-node 1.30 used directly, fp32 and int8 graphs, 1 and 2 intra-op threads, several batch
 * sizes. Variants are interleaved over `--reps` rounds (the machine is shared; only ratios within
 * one run mean anything) and the medians reported, with the load average at start and end.
 */
import os from 'node:os';
import { loadConfig } from '../../src/config/index.js';
import { loadEmbedder, type Embedder, type Precision } from '../../src/embed/embedder.js';
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
  const reps = arg('reps', 3);
  const texts = loadBanking77('test').slice(0, arg('texts', 2048)).map((r) => r.text);
  const base = loadConfig().embed;
  type Variant = { name: string; precision?: Precision; threads?: number; batchSize: number; e?: Pick<Embedder, 'embed'> };
  const variants: Variant[] = [{ name: 'previous (transformers.js, ort 1.14, batch 8)', batchSize: 8 }];
  for (const [precision, threads, batchSize] of [
    ['fp32', 2, 32],
    ['int8', 1, 32],
    ['int8', 2, 8],
    ['int8', 2, 16],
    ['int8', 2, 32],
    ['int8', 2, 64],
  ] as const) {
    variants.push({ name: `${precision} ${threads}t b${batchSize}`, precision, threads, batchSize });
  }
  for (const v of variants) {
    v.e = v.precision
      ? await loadEmbedder({ ...base, precision: v.precision, threads: v.threads!, batchSize: v.batchSize })
      : await loadLegacyEmbedder(base.modelsDir, base.model, v.batchSize, base.maxTokens);
    await v.e.embed(texts.slice(0, 256));
  }
  const load0 = os.loadavg();
  const qps = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const cpu = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < reps; r++) {
    for (const v of variants) {
      const c0 = process.cpuUsage();
      const t = performance.now();
      for (let i = 0; i < texts.length; i += 256) await v.e!.embed(texts.slice(i, i + 256));
      const s = (performance.now() - t) / 1000;
      const c = process.cpuUsage(c0);
      qps.get(v.name)!.push(texts.length / s);
      cpu.get(v.name)!.push((c.user + c.system) / 1e6 / s);
      console.error(v.name, Math.round(texts.length / s));
    }
  }
  const baseline = median(qps.get(variants[0].name)!);
  const results = variants.map((v) => ({
    variant: v.name,
    precision: v.precision ?? 'int8 weights, fp32 compute',
    threads: v.threads ?? 'runtime default',
    batchSize: v.batchSize,
    queriesPerSecond: Math.round(median(qps.get(v.name)!)),
    vsPrevious: +(median(qps.get(v.name)!) / baseline).toFixed(2),
    cpuPerWallSecond: +median(cpu.get(v.name)!).toFixed(2),
    all: qps.get(v.name)!.map(Math.round),
  }));
  const def = results.find((r) => r.precision === base.precision && r.threads === (base.threads || 2) && r.batchSize === base.batchSize);
  console.log(
    JSON.stringify(
      {
        bench: 'embed-sweep',
        texts: texts.length,
        reps,
        loadAverage1m: { start: +load0[0].toFixed(2), end: +os.loadavg()[0].toFixed(2) },
        default: { precision: base.precision, threads: base.threads, batchSize: base.batchSize },
        defaultQueriesPerSecond: def?.queriesPerSecond,
        defaultVsPrevious: def?.vsPrevious,
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
