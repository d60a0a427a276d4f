/**
 * Embedding throughput over batch sizes and onnxruntime thread counts, on Banking77 queries
 * (npm run bench; prints JSON). Each setting embeds the same texts after a warm-up.
 */
import { loadConfig } from '../../src/config/index.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { BANKING77_MISSING, hasBanking77, loadBanking77 } from '../helpers/banking77.js';

async function main() {
  if (!hasBanking77()) {
    console.log(JSON.stringify({ bench: 'embed-sweep', skipped: BANKING77_MISSING }));
    return;
  }
  const texts = loadBanking77('test').slice(0, 2048).map((r) => r.text);
  const base = loadConfig().embed;
  const results: { batchSize: number; threads: number; sentencesPerSecond: number }[] = [];
  for (const threads of [0, 1, 2]) {
    for (const batchSize of [8, 16, 32, 64, 128]) {
      const e = await loadEmbedder({ ...base, batchSize, threads });
      await e.embed(texts.slice(0, 256));
      const t = performance.now();
      for (let i = 0; i < texts.length; i += 256) await e.embed(texts.slice(i, i + 256));
      results.push({ batchSize, threads, sentencesPerSecond: Math.round(texts.length / ((performance.now() - t) / 1000)) });
      console.error(JSON.stringify(results[results.length - 1]));
    }
  }
  const best = results.reduce((a, b) => (b.sentencesPerSecond > a.sentencesPerSecond ? b : a));
  const unsorted = await loadEmbedder(base);
  // arrival order, no length sorting: what sorting buys (one call per text group of batchSize)
  const t = performance.now();
  for (let i = 0; i < texts.length; i += base.batchSize) await unsorted.embed(texts.slice(i, i + base.batchSize));
  const unsortedSps = Math.round(texts.length / ((performance.now() - t) / 1000));
  console.log(
    JSON.stringify(
      {
        bench: 'embed-sweep',
        texts: texts.length,
        model: base.model,
        default: { batchSize: base.batchSize, threads: base.threads },
        best,
        arrivalOrderAtDefault: unsortedSps,
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
