/** The installed sentence-embedding model (real weights, local files). */
import { describe, expect, it } from 'vitest';
import { dotRows } from '../../src/coverage/vec.js';
import { loadConfig } from '../../src/config/index.js';
import fs from 'node:fs';
import { loadEmbedder, modelFile, ModelNotInstalledError } from '../../src/embed/embedder.js';
import { loadThreadedEmbedder, poolSize } from '../../src/embed/threaded.js';
import { realEmbedder, tmpDir } from '../helpers/fixtures.js';
import { loadLegacyEmbedder } from '../bench/legacy-embedder.js';

describe('local embedding model', () => {
  it('gives related sentences clearly higher cosine similarity than unrelated ones', async () => {
    const e = await realEmbedder();
    expect(e.dim).toBe(384);
    expect(e.modelChecksum).toMatch(/^[0-9a-f]{64}$/);
    const { vectors } = await e.embed([
      'I lost my credit card',
      'my bank card was stolen',
      'what will the weather be like in Paris tomorrow',
      'how do I reset my password',
      'I forgot my login password',
    ]);
    const sim = (a: number, b: number) => dotRows(vectors, a, vectors, b, e.dim);
    for (let i = 0; i < 5; i++) expect(sim(i, i)).toBeCloseTo(1, 4); // unit length
    expect(sim(0, 1)).toBeGreaterThan(0.5);
    expect(sim(3, 4)).toBeGreaterThan(0.6);
    expect(sim(0, 1) - sim(0, 2)).toBeGreaterThan(0.4);
    expect(sim(3, 4) - sim(3, 2)).toBeGreaterThan(0.4);
  });

  it('returns vectors in input order whatever the batching', async () => {
    const e = await realEmbedder();
    const texts = ['short', 'a much longer sentence about delivery of a parcel to my home', 'medium length text here'];
    const all = await e.embed(texts);
    for (let i = 0; i < texts.length; i++) {
      const one = await e.embed([texts[i]]);
      expect(dotRows(all.vectors, i, one.vectors, 0, e.dim)).toBeCloseTo(1, 4);
    }
  });

  it('flags text over the token limit as truncated and still embeds it', async () => {
    const e = await realEmbedder();
    const long = 'refund '.repeat(400);
    const r = await e.embed(['short text', long]);
    expect(Array.from(r.truncated)).toEqual([0, 1]);
    expect(dotRows(r.vectors, 1, r.vectors, 1, e.dim)).toBeCloseTo(1, 4);
  });

  it('installs an int8-compute graph (the default) and the fp32 graph of the same weights', async () => {
    const cfg = loadConfig().embed;
    expect(cfg.precision).toBe('int8');
    const int8 = await realEmbedder();
    const fp32 = await loadEmbedder({ ...cfg, precision: 'fp32' });
    expect(int8.precision).toBe('int8');
    expect(fp32.precision).toBe('fp32');
    expect(int8.modelChecksum).not.toBe(fp32.modelChecksum);
    // int8 arithmetic really runs: the 24 linear layers (6 of them the fused Q/K/V projections)
    // are MatMulIntegerToFloat on uint8 codes from a per-row QuantizeLinear, attention is fp32
    const g8 = fs.readFileSync(modelFile(cfg.modelsDir, cfg.model, 'int8')).toString('latin1');
    const g32 = fs.readFileSync(modelFile(cfg.modelsDir, cfg.model, 'fp32')).toString('latin1');
    // op_type is NodeProto field 4: tag 0x22, then the length, then the name
    const count = (g: string, op: string) => g.split(`"${String.fromCharCode(op.length)}${op}`).length - 1;
    expect(count(g8, 'MatMulIntegerToFloat')).toBe(24);
    expect(count(g8, 'QuantizeLinear')).toBe(24);
    expect(count(g8, 'MultiHeadAttention')).toBe(6);
    expect(count(g8, 'MatMul') + count(g8, 'DynamicQuantizeLinear')).toBe(0);
    expect(count(g32, 'MatMulIntegerToFloat') + count(g32, 'QuantizeLinear')).toBe(0);
    expect(count(g32, 'Attention')).toBe(6);
    const texts = ['I lost my credit card', 'how do I reset my password', 'refund', 'why was I charged twice for the same top up?'];
    const a = await int8.embed(texts);
    const b = await fp32.embed(texts);
    for (let i = 0; i < texts.length; i++) expect(dotRows(a.vectors, i, b.vectors, i, 384)).toBeGreaterThan(0.97);
  });

  it('fp32 reproduces the previous path (transformers.js + onnxruntime 1.14 on the source file)', async () => {
    const cfg = loadConfig().embed;
    const fp32 = await loadEmbedder({ ...cfg, precision: 'fp32', batchSize: 4 });
    const legacy = await loadLegacyEmbedder(cfg.modelsDir, cfg.model, 4, cfg.maxTokens);
    const texts = ['I lost my credit card', 'Café naïve — résumé, 日本語 🙂', 'refund '.repeat(300), 'Why is my top-up still PENDING?!'];
    const a = await fp32.embed(texts);
    const b = await legacy.embed(texts);
    for (let i = 0; i < texts.length; i++) expect(dotRows(a.vectors, i, b.vectors, i, 384)).toBeGreaterThan(0.99999);
  });

  it('gives a text the same int8 vector bit for bit whatever it is batched with (per-token activation scales)', async () => {
    // with one activation scale per tensor (onnxruntime's quantize_dynamic, the previous graph) a
    // batch of 8 moved vectors down to cosine 0.978; here each token row has its own scale
    const cfg = loadConfig().embed;
    const texts = [
      'short',
      'a much longer sentence about delivery of a parcel to my home, which has still not arrived',
      'ok',
      'why was I charged twice for the same top up?',
      'Café naïve — résumé, 日本語 🙂',
      'refund',
      'I lost my credit card yesterday evening near the station',
      'how do I reset my password',
      'card',
      'What is the exchange rate you use for euros to dollars when I pay abroad?',
    ];
    const one = await loadEmbedder({ ...cfg, batchSize: 1 });
    const batched = await loadEmbedder({ ...cfg, batchSize: 8 });
    expect(one.precision).toBe('int8');
    const alone = await one.embed(texts);
    const together = await batched.embed(texts);
    const reversed = await batched.embed([...texts].reverse());
    for (let i = 0; i < texts.length; i++) {
      const a = alone.vectors.subarray(i * 384, (i + 1) * 384);
      expect(Array.from(together.vectors.subarray(i * 384, (i + 1) * 384))).toEqual(Array.from(a));
      const j = texts.length - 1 - i;
      expect(Array.from(reversed.vectors.subarray(j * 384, (j + 1) * 384))).toEqual(Array.from(a));
    }
  });

  it('refuses clearly when the model is not installed', async () => {
    await expect(loadEmbedder({ ...loadConfig().embed, modelsDir: tmpDir() })).rejects.toBeInstanceOf(ModelNotInstalledError);
  });

  it('embeds identically in a worker thread, which leaves the event loop free', async () => {
    const e = await realEmbedder();
    const w = await loadThreadedEmbedder(loadConfig().embed);
    try {
      expect(w.modelChecksum).toBe(e.modelChecksum);
      expect(w.workers).toBe(poolSize(0));
      const texts = Array.from({ length: 1000 }, (_, i) => `question number ${i} about my card payment and refund`);
      const ticks: number[] = [];
      const t0 = Date.now();
      const timer = setInterval(() => ticks.push(Date.now()), 10);
      const r = await w.embed(texts);
      clearInterval(timer);
      const elapsed = Date.now() - t0;
      const local = await e.embed(texts);
      for (let i = 0; i < texts.length; i += 37) expect(dotRows(r.vectors, i, local.vectors, i, e.dim)).toBeCloseTo(1, 5);
      // the timer kept firing while the worker embedded (in-thread, the loop would be blocked
      // throughout and the timer would fire about once): at least a third of its 10-ms ticks, and
      // no gap of a quarter of the time
      expect(elapsed).toBeGreaterThan(100);
      expect(ticks.length).toBeGreaterThan(elapsed / 30);
      const gaps = ticks.slice(1).map((t, i) => t - ticks[i]);
      expect(Math.max(ticks[0] - t0, ...gaps)).toBeLessThan(elapsed / 4);
    } finally {
      await w.close();
    }
    await expect(loadThreadedEmbedder({ ...loadConfig().embed, modelsDir: tmpDir() })).rejects.toBeInstanceOf(ModelNotInstalledError);
  });
});
