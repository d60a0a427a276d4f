// Writes the calibration inputs for the int8 graph's static activation scales (install-model.sh ->
// quantise_model.py): `n` production-like queries from the project's own sample-data generator
// (src/cli/sample-data.ts, built to dist/), each tokenised alone (no padding) with the model's
// tokenizer. Usage: node scripts/calibration-inputs.mjs <modelsDir> <model> <out.json> [n]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [modelsDir, model, out, n = '600'] = process.argv.slice(2);
const { sampleTraffic, sampleEvalSet } = await import(path.join(root, 'dist', 'cli', 'sample-data.js'));
const t = await import('@xenova/transformers');
t.env.allowRemoteModels = false;
t.env.localModelPath = modelsDir.endsWith(path.sep) ? modelsDir : modelsDir + path.sep;
const tok = await t.AutoTokenizer.from_pretrained(model);
const texts = [...sampleEvalSet(20, 3).map((c) => c.query), ...sampleTraffic(Number(n), { seed: 5, surpriseShare: 0.3 }).map((r) => r.query)];
const rows = texts.map((s) => {
  const e = tok(s, { truncation: true });
  return Object.fromEntries(['input_ids', 'attention_mask', 'token_type_ids'].map((k) => [k, Array.from(e[k].data, Number)]));
});
fs.writeFileSync(out, JSON.stringify(rows));
console.error(`calibration inputs: ${rows.length} queries -> ${out}`);
