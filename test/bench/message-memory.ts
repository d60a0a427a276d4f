/**
 * Memory and time of the largest accepted message through decode, embedding and row building:
 *   npx vite-node test/bench/message-memory.ts -- [bytes]
 * Prints one JSON object: RSS before and at peak (sampled every 5 ms), and the time taken.
 */
import { loadConfig } from '../../src/config/index.js';
import { CoverageAssigner } from '../../src/coverage/model.js';
import { loadEmbedder } from '../../src/embed/embedder.js';
import { processMessages } from '../../src/ingest/process.js';
import { fitSampleModel, tmpDir } from '../helpers/fixtures.js';
import { loadCoverageModel } from '../../src/coverage/model.js';
import path from 'node:path';

const size = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 1_048_576);
const embedder = await loadEmbedder(loadConfig().embed);
const dir = path.join(tmpDir(), 'model');
await fitSampleModel(dir);
const assigner = new CoverageAssigner(loadCoverageModel(dir));
await embedder.embed(['warm up']);
(globalThis as { gc?: () => void }).gc?.();
const base = process.memoryUsage().rss;
let peak = base;
const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
const words = 'refund card stolen where is my order ';
const query = words.repeat(Math.ceil(size / words.length)).slice(0, size - 80);
const value = Buffer.from(JSON.stringify({ request_id: 'm', ts: Date.now(), query }));
const t0 = performance.now();
const res = await processMessages([{ topic: 't', partition: 0, offset: '0', value }], {
  embedder,
  assigner,
  redactText: false,
  decode: { maxBytes: Math.max(size, 1_048_576) },
});
peak = Math.max(peak, process.memoryUsage().rss);
clearInterval(timer);
console.log(
  JSON.stringify({
    bytes: value.length,
    stored: res.rows.length,
    truncated: res.rows[0]?.truncated,
    ms: Math.round(performance.now() - t0),
    baseRssMB: Math.round(base / 1e6),
    peakRssMB: Math.round(peak / 1e6),
    deltaMB: Math.round((peak - base) / 1e6),
  }),
);
process.exit(0);
