/** fit --add's merge of cases and parameters; the model path a running `evalgap run` watches. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EvalSetError } from '../../src/coverage/evalset.js';
import { addFitOptions, mergeCases } from '../../src/coverage/extend.js';
import type { Manifest } from '../../src/coverage/model.js';
import { resolveModelDir } from '../../src/ingest/model-watch.js';

const c = (id: string, text: string, tags: string[] = []) => ({ id, text, tags });

describe('mergeCases', () => {
  it('keeps the old cases in order, appends new ones, skips those already present', () => {
    const old = [c('a', 'Where is my parcel?', ['shipping']), c('b', 'refund please')];
    const r = mergeCases(old, [c('a', 'where is my  PARCEL?'), c('x', 'REFUND please'), c('n1', 'gift card balance', ['gap:7']), c('n2', 'delete my data')]);
    expect(r.cases.map((x) => x.id)).toEqual(['a', 'b', 'n1', 'n2']);
    expect(r.cases[0].tags).toEqual(['shipping']);
    expect(r.cases[2].tags).toEqual(['gap:7']);
    expect(r.added).toBe(2);
    expect(r.alreadyPresent).toBe(2);
  });
  it('refuses a new case whose id names another old case', () => {
    expect(() => mergeCases([c('a', 'one')], [c('a', 'two'), c('b', 'three')])).toThrow(EvalSetError);
    expect(() => mergeCases([c('a', 'one')], [c('a', 'two')])).toThrow(/already name other cases in the model: a/);
  });
  it('dedups within the new cases too', () => {
    const r = mergeCases([c('a', 'one')], [c('n1', 'two'), c('n2', 'Two ')]);
    expect(r.added).toBe(1);
    expect(r.alreadyPresent).toBe(1);
  });
});

describe('addFitOptions', () => {
  const m = {
    params: { k: 9, kMode: 'fixed', seed: 3, restarts: 4, neighbours: 7 },
    calibration: { targetFalseUncoveredRate: 0.1, nearDuplicateCosine: 0.9, minClusterCases: 30 },
    evalSet: { source: 'evals.csv', textField: 'prompt' },
  } as unknown as Manifest;
  it("takes the old model's parameters, and flags given over them", () => {
    expect(addFitOptions(m, 'gaps.jsonl', {})).toEqual({
      k: 9, seed: 3, restarts: 4, neighbours: 7, targetRate: 0.1, source: 'evals.csv + gaps.jsonl', textField: 'prompt',
      nearDuplicateCosine: 0.9, minClusterCases: 30, regions: 'auto',
    });
    expect(addFitOptions(m, 'g', { k: 'auto', targetRate: 0.05 })).toMatchObject({ k: 'auto', targetRate: 0.05, seed: 3 });
    expect(addFitOptions({ ...m, params: { ...m.params, kMode: 'auto' } }, 'g', {}).k).toBe('auto');
  });
});

describe('resolveModelDir', () => {
  it('follows a folder, a symlink and a pointer file', () => {
    const d = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-resolve-')));
    fs.mkdirSync(path.join(d, 'cm-1'));
    fs.symlinkSync('cm-1', path.join(d, 'current'));
    fs.writeFileSync(path.join(d, 'pointer'), 'cm-1\n');
    expect(resolveModelDir(path.join(d, 'cm-1'))).toBe(path.join(d, 'cm-1'));
    expect(resolveModelDir(path.join(d, 'current'))).toBe(path.join(d, 'cm-1'));
    expect(resolveModelDir(path.join(d, 'pointer'))).toBe(path.join(d, 'cm-1'));
    fs.writeFileSync(path.join(d, 'empty'), '');
    expect(() => resolveModelDir(path.join(d, 'empty'))).toThrow(/empty/);
    expect(() => resolveModelDir(path.join(d, 'nothing'))).toThrow();
  });
});
