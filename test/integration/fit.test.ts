/** `evalgap fit` and `evalgap inspect` with the real model: CLI, determinism, bad input, quality on Banking77. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { buildCoverageModel, DEFAULT_FIT, dedupeCases, evalSetHash } from '../../src/coverage/fit.js';
import { auroc } from '../../src/coverage/metrics.js';
import { CoverageAssigner, loadCoverageModel } from '../../src/coverage/model.js';
import { sampleEvalSet } from '../../src/cli/sample-data.js';
import { BANKING77_MISSING, categories, hasBanking77, holdOut, loadBanking77 } from '../helpers/banking77.js';
import { realEmbedder, tmpDir, capMs } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
const evalgap = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: capMs(300_000) });

function writeSampleEvalSet(dir: string): string {
  const file = path.join(dir, 'evalset.jsonl');
  fs.writeFileSync(file, sampleEvalSet(30).map((c) => JSON.stringify(c)).join('\n') + '\n');
  return file;
}

describe('evalgap fit / inspect (CLI)', () => {
  it('fits a model, prints the summary, and inspect prints it again', () => {
    const dir = tmpDir();
    const file = writeSampleEvalSet(dir);
    const out = path.join(dir, 'model');
    const r = evalgap('fit', file, '--out', out, '--k', '6');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/k:\s+6 \(fixed/);
    expect(r.stdout).toMatch(/threshold:\s+per tag/); // the sample eval set is tagged
    expect(r.stdout).toMatch(/expected uncovered rate under no shift: \d+\.\d% \[\d+\.\d%–\d+\.\d%\] \(90% interval; target 5\.0%\)/);
    expect(r.stdout).toMatch(/cluster\s+label\s+size\s+share\s+expected uncovered \[interval\]\s+tags/);
    expect(r.stdout).toMatch(/[\d.]+% for new phrasings of families the eval set has, [\d.]+% for phrasings it did not write/);
    expect(r.stdout).toContain(`saved to ${out}`);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.params.k).toBe(6);
    expect(manifest.clusters).toHaveLength(6);
    expect(manifest.clusters.reduce((a: number, c: { share: number }) => a + c.share, 0)).toBeCloseTo(1, 6);
    for (const c of manifest.clusters) {
      expect(c.label.length).toBeGreaterThan(0);
      expect(c.examples.length).toBeGreaterThan(0);
    }
    expect(manifest.calibration.regions).toBe('tags');
    expect(manifest.calibration.expectedRateInterval[0]).toBeLessThanOrEqual(manifest.calibration.expectedRate);
    for (const c of manifest.clusters) {
      expect(c.tags.length).toBeGreaterThan(0);
      expect(c.expectedRateInterval[1]).toBeGreaterThanOrEqual(c.expectedRate);
    }
    const cases = fs.readFileSync(path.join(out, 'cases.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(cases[0]).toEqual({ id: 'shipping-0', text: expect.any(String), tags: ['shipping'] });
    const i = evalgap('inspect', out);
    expect(i.status, i.stderr).toBe(0);
    expect(i.stdout).toContain(`coverage model ${manifest.version}`);
    for (const c of manifest.clusters) expect(i.stdout).toContain(c.label.slice(0, 30));
    expect(i.stdout).toMatch(/tag\s+cases\s+threshold\s+expected uncovered/);
    // --regions clusters: one threshold per cluster instead
    const out2 = path.join(dir, 'model2');
    const r2 = evalgap('fit', file, '--out', out2, '--k', '6', '--regions', 'clusters', '--near-duplicate-cosine', '1');
    expect(r2.status, r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/threshold:\s+per cluster/);
    expect(r2.stdout).toMatch(/near-duplicates \(cosine ≥ 1\)/);
    const m2 = JSON.parse(fs.readFileSync(path.join(out2, 'manifest.json'), 'utf8'));
    expect(m2.calibration.regions).toBe('clusters');
    expect(m2.calibration.nearDuplicateCosine).toBe(1);
    expect(evalgap('fit', file, '--near-duplicate-cosine', '0').status).toBe(2);
  });

  it('score writes one result per input line, reports bad lines in place, and agrees with the model', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'model');
    expect(evalgap('fit', writeSampleEvalSet(dir), '--out', out, '--k', '6').status).toBe(0);
    const q = path.join(dir, 'q.jsonl');
    fs.writeFileSync(
      q,
      [
        JSON.stringify({ id: 'a', prompt: 'where is my parcel, it says delivered' }),
        JSON.stringify({ prompt: 'what is the boiling point of tungsten' }),
        '',
        '{"prompt": ',
        JSON.stringify({ query: 'wrong field' }),
        JSON.stringify({ prompt: '   ' }),
        JSON.stringify({ id: 3, prompt: 'my promo code does not work' }),
      ].join('\n') + '\n',
    );
    const r = evalgap('score', q, '--model', out, '--text-field', 'prompt');
    expect(r.status).toBe(1);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.line)).toEqual([1, 2, 4, 5, 6, 7]);
    expect(lines[2].error).toMatch(/^invalid JSON/);
    expect(lines[3].error).toBe('field "prompt" is missing');
    expect(lines[4].error).toBe('field "prompt" is empty');
    expect(r.stderr).toContain('q.jsonl:5: field "prompt" is missing');
    expect(r.stderr).toMatch(/scored 3 queries with model cm-[0-9a-f]{12}: \d uncovered .*; 3 bad line\(s\)/);
    const m = loadCoverageModel(out).manifest;
    for (const l of [lines[0], lines[1], lines[5]]) {
      expect(l.cluster).toBeGreaterThanOrEqual(0);
      expect(l.runnerUp).not.toBe(l.cluster);
      expect(l.similarity).toBeGreaterThanOrEqual(l.runnerUpSimilarity);
      expect(l.label).toBe(m.clusters[l.cluster].label);
      expect(l.covered).toBe(l.coverage >= l.threshold);
    }
    expect(lines[0]).toMatchObject({ id: 'a', covered: true });
    expect(lines[5]).toMatchObject({ id: '3', covered: true });
    expect(lines[1].covered).toBe(false);
    // --out writes the same results to a file
    const file = path.join(dir, 'scores.jsonl');
    const r2 = evalgap('score', q, '--model', out, '--text-field', 'prompt', '--out', file);
    expect(r2.stdout).toBe('');
    expect(fs.readFileSync(file, 'utf8')).toBe(r.stdout);
  });

  it('reports malformed lines with their numbers and refuses them', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bad.jsonl');
    const good = sampleEvalSet(5).map((c) => JSON.stringify(c));
    fs.writeFileSync(file, [...good.slice(0, 3), '{"query": ', ...good.slice(3), '{"text": "wrong field"}'].join('\n'));
    const r = evalgap('fit', file, '--out', path.join(dir, 'm'));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('bad.jsonl:4: invalid JSON');
    expect(r.stderr).toContain(`bad.jsonl:${good.length + 2}: field "query" is missing`);
    expect(r.stderr).toContain('2 malformed line(s)');
    expect(fs.existsSync(path.join(dir, 'm'))).toBe(false);
  });

  it('refuses an eval set too small to cluster, and an empty one', () => {
    const dir = tmpDir();
    const tiny = path.join(dir, 'tiny.jsonl');
    fs.writeFileSync(tiny, ['a', 'b', 'c'].map((q) => JSON.stringify({ query: `question ${q}` })).join('\n'));
    const r = evalgap('fit', tiny);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('3 distinct case(s); at least 10 are needed');
    const empty = path.join(dir, 'empty.csv');
    fs.writeFileSync(empty, 'query,id\n');
    const e = evalgap('fit', empty);
    expect(e.status).toBe(2);
    expect(e.stderr).toContain('holds no eval cases');
  });

  it('refuses to load a model fitted with another embedding model, and a corrupt one', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'model');
    expect(evalgap('fit', writeSampleEvalSet(dir), '--out', out, '--k', '4').status).toBe(0);
    const mf = path.join(out, 'manifest.json');
    const m = JSON.parse(fs.readFileSync(mf, 'utf8'));
    expect(() => loadCoverageModel(out, { expectEmbedding: { model: m.embedding.model, checksum: 'f'.repeat(64) } })).toThrow(
      /fitted with embedding model .* run evalgap fit again/,
    );
    fs.writeFileSync(mf, JSON.stringify({ ...m, params: { ...m.params, k: 'four' } }));
    const r = evalgap('inspect', out);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('params.k');
  });
});

describe('fit determinism with the real model', () => {
  it('gives the same model for the same seed, and a different one for another seed', async () => {
    const e = await realEmbedder();
    const cases = dedupeCases(sampleEvalSet(30).map((c) => ({ id: c.id, text: c.query, tags: c.tags }))).unique;
    const { vectors } = await e.embed(cases.map((c) => c.text));
    const info = { model: e.modelName, checksum: e.modelChecksum, precision: e.precision, dim: e.dim, maxTokens: e.maxTokens };
    const opts = { ...DEFAULT_FIT, k: 8, source: 's', textField: 'query' };
    const fit = (seed: number) => buildCoverageModel(cases, cases.length, evalSetHash(cases), vectors, info, { ...opts, seed });
    const a = fit(1);
    const b = fit(1);
    const c = fit(2);
    expect(b.draft.version).toBe(a.draft.version);
    expect(Array.from(b.arrays.centroids)).toEqual(Array.from(a.arrays.centroids));
    expect(b.draft.calibration.threshold).toBe(a.draft.calibration.threshold);
    expect(c.draft.version).not.toBe(a.draft.version);
  });
});

describe('coverage quality on Banking77 (real data)', () => {
  it('separates held-out intents (AUROC ≥ 0.85) and calibrates the false-uncovered rate', async (ctx) => {
    if (!hasBanking77()) {
      console.warn(`skipped: ${BANKING77_MISSING}`);
      ctx.skip();
    }
    const e = await realEmbedder();
    const train = loadBanking77('train');
    const test = loadBanking77('test');
    const held = holdOut(categories(train), 17, 1000);
    const cases = dedupeCases(
      train.filter((r) => !held.has(r.category)).map((r, i) => ({ id: String(i), text: r.text, tags: [r.category] })),
    ).unique;
    const { vectors } = await e.embed(cases.map((c) => c.text));
    const info = { model: e.modelName, checksum: e.modelChecksum, precision: e.precision, dim: e.dim, maxTokens: e.maxTokens };
    const built = buildCoverageModel(cases, cases.length, evalSetHash(cases), vectors, info, {
      ...DEFAULT_FIT,
      k: 60,
      restarts: 2,
      source: 'banking77',
      textField: 'text',
    });
    const m = built.draft;
    const assigner = new CoverageAssigner({ manifest: { ...m, files: {} as never }, ...built.arrays });
    const tv = await e.embed(test.map((r) => r.text));
    const a = assigner.assign(tv.vectors, test.length);
    const isHeld = test.map((r) => held.has(r.category));
    expect(auroc(Array.from(a.coverage, (s) => -s), isHeld)).toBeGreaterThanOrEqual(0.85);
    let n = 0;
    let unc = 0;
    test.forEach((_, i) => {
      if (!isHeld[i]) {
        n++;
        unc += a.covered[i] ? 0 : 1;
      }
    });
    // unseen queries of tested intents: uncovered between the rate of seen phrasings and that of new
    // ones (docs/calibration.md); the stored interval is for the long-run rate, so a sample of n
    // queries adds its binomial noise (3 sd)
    expect(unc / n).toBeGreaterThan(0.01);
    expect(unc / n).toBeLessThan(0.08);
    const noise = 3 * Math.sqrt((m.calibration.expectedRate * (1 - m.calibration.expectedRate)) / n);
    expect(unc / n).toBeGreaterThanOrEqual(m.calibration.expectedRateInterval[0] - noise);
    expect(unc / n).toBeLessThanOrEqual(m.calibration.expectedRateInterval[1] + noise);
  }, capMs(300_000)); // embeds 10,800 Banking77 queries: about 2 minutes on a loaded 2-core machine
});
