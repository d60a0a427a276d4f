/**
 * ModelWatcher refusing a hostile model on hot reload (synthetic models, no broker or engine):
 * the model in use is kept, one log line, the counter once per refused model, the gauge while
 * the path points at it. The same with the real broker, engine and model: test/integration/hot-reload.test.ts.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_FIT, buildCoverageModel, evalSetHash, type EmbeddingInfo } from '../../src/coverage/fit.js';
import { saveCoverageModel } from '../../src/coverage/model.js';
import { normalizeRows, rng } from '../../src/coverage/vec.js';
import { createIngestMetrics } from '../../src/ingest/metrics.js';
import { deployModel, ModelWatcher } from '../../src/ingest/model-watch.js';

const EMB: EmbeddingInfo = { model: 'fake-embedder', checksum: 'a'.repeat(64), precision: 'int8', dim: 16, maxTokens: 128 };
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-watch-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** a small sound model: 3 blobs of 12 unit vectors */
function model(dir: string, seed: number): string {
  const r = rng(seed);
  const n = 36;
  const x = new Float32Array(n * EMB.dim);
  for (let i = 0; i < n; i++) for (let d = 0; d < EMB.dim; d++) x[i * EMB.dim + d] = (d === i % 3 ? 3 : 0) + r() - 0.5;
  normalizeRows(x, EMB.dim);
  const cases = Array.from({ length: n }, (_, i) => ({ id: `c${i}`, text: `topic${i % 3} question ${i} ${seed}`, tags: [] as string[] }));
  const b = buildCoverageModel(cases, n, evalSetHash(cases), x, EMB, { ...DEFAULT_FIT, k: 3, source: 's', textField: 'query', regions: 'clusters' });
  saveCoverageModel(dir, b.draft, b.arrays);
  return dir;
}

/** a copy with NaN centroids and a new version id, checksums recomputed */
function hostileCopy(from: string, to: string): string {
  fs.cpSync(from, to, { recursive: true });
  const mf = JSON.parse(fs.readFileSync(path.join(to, 'manifest.json'), 'utf8'));
  const c = fs.readFileSync(path.join(to, 'centroids.f32'));
  new Float32Array(c.buffer, c.byteOffset, c.length / 4).fill(NaN);
  fs.writeFileSync(path.join(to, 'centroids.f32'), c);
  mf.files['centroids.f32'].sha256 = createHash('sha256').update(c).digest('hex');
  mf.version = 'cm-00000000beef';
  fs.writeFileSync(path.join(to, 'manifest.json'), JSON.stringify(mf));
  return to;
}

const repoint = (current: string, target: string) => {
  fs.symlinkSync(target, `${current}.tmp`);
  fs.renameSync(`${current}.tmp`, current);
};

describe('ModelWatcher and a hostile model', () => {
  it('keeps the model in use, logs one line, counts the refusal once, and sets the gauge until a sound model is deployed', async () => {
    const a = model(path.join(root, 'a'), 1);
    const b = model(path.join(root, 'b'), 2);
    const bad = hostileCopy(a, path.join(root, 'bad'));
    const current = path.join(root, 'current');
    const expectEmbedding = { model: EMB.model, checksum: EMB.checksum };
    deployModel(a, current, { expectEmbedding });
    const lines: { level: number; msg: string; reason?: string; keeping?: string }[] = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    const metrics = createIngestMetrics(false);
    const w = new ModelWatcher(current, { logger, metrics, expectEmbedding });
    const inUse = w.current().version;
    const refusedTotal = async () => (await metrics.modelRefused.get()).values[0]?.value ?? 0;
    const gauge = async () => (await metrics.modelRefusedNow.get()).values[0]?.value ?? 0;

    // deploy refuses it and leaves the symlink
    expect(() => deployModel(bad, current, { expectEmbedding })).toThrow(/holds values no fit produces/);
    expect(fs.realpathSync(current)).toBe(fs.realpathSync(a));

    repoint(current, bad);
    expect(await w.check()).toBe('refused');
    expect(await w.check()).toBe('refused');
    expect(w.current().version).toBe(inUse);
    expect(await refusedTotal()).toBe(1);
    expect(await gauge()).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 50, msg: 'new coverage model refused; keeping the one in use', keeping: inUse });
    expect(lines[0].reason).toMatch(/centroids\.f32: 3 of 3 vectors hold NaN/);
    expect(lines[0].reason).toMatch(/version cm-00000000beef is not the one its fit inputs give/);
    // the old model still assigns: a query on blob 0 is covered
    const q = new Float32Array(EMB.dim);
    q[0] = 1;
    expect(w.current().assign(q, 1).covered[0]).toBe(1);

    // pointed back at the model in use: the gauge clears, the counter stays
    repoint(current, a);
    expect(await w.check()).toBe('unchanged');
    expect(await gauge()).toBe(0);
    // refused again, then a sound new model: swapped in, gauge 0, counter 2
    repoint(current, bad);
    expect(await w.check()).toBe('refused');
    expect(await refusedTotal()).toBe(2);
    deployModel(b, current, { expectEmbedding });
    expect(await w.check()).toBe('swapped');
    expect(w.current().version).not.toBe(inUse);
    expect(await gauge()).toBe(0);
    expect(lines.filter((l) => /refused/.test(l.msg))).toHaveLength(2);
    w.close();
  });
});
