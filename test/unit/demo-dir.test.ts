/** `evalgap demo --dir`: the demo replaces its own files only in a folder it made, never a user's. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEMO_MARKER, prepareDemoDir } from '../../src/cli/demo.js';
import { UserError } from '../../src/cli/errors.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'evalgap-demo-dir-'));

describe('the demo folder', () => {
  it("refuses a user's folder holding the names the demo writes, and touches nothing in it", () => {
    const d = tmp();
    fs.mkdirSync(path.join(d, 'models', 'coverage', 'v1'), { recursive: true });
    fs.writeFileSync(path.join(d, 'models', 'coverage', 'v1', 'manifest.json'), '{}');
    fs.writeFileSync(path.join(d, 'evalset.jsonl'), 'mine\n');
    fs.writeFileSync(path.join(d, 'report.html'), 'mine');
    expect(() => prepareDemoDir(d)).toThrow(UserError);
    expect(() => prepareDemoDir(d)).toThrow(/holds evalset\.jsonl, models, report\.html and no earlier demo run made it/);
    expect(fs.readFileSync(path.join(d, 'evalset.jsonl'), 'utf8')).toBe('mine\n');
    expect(fs.existsSync(path.join(d, 'models', 'coverage', 'v1', 'manifest.json'))).toBe(true);
    expect(fs.existsSync(path.join(d, 'report.html'))).toBe(true);
    expect(fs.existsSync(path.join(d, DEMO_MARKER))).toBe(false);
  });

  it('takes a new or empty folder, marks it, and on the next run replaces only what the demo writes', () => {
    const parent = tmp();
    const d = path.join(parent, 'new', 'demo');
    prepareDemoDir(d);
    expect(fs.existsSync(path.join(d, DEMO_MARKER))).toBe(true);
    // what a run leaves, plus a file of the user's
    fs.mkdirSync(path.join(d, 'models', 'v1'), { recursive: true });
    fs.mkdirSync(path.join(d, 'chdb'));
    fs.writeFileSync(path.join(d, 'evalset.jsonl'), 'demo\n');
    fs.writeFileSync(path.join(d, 'notes.txt'), 'keep');
    prepareDemoDir(d);
    expect(fs.readdirSync(d).sort()).toEqual([DEMO_MARKER, 'notes.txt'].sort());
    const empty = tmp();
    prepareDemoDir(empty);
    expect(fs.readdirSync(empty)).toEqual([DEMO_MARKER]);
    // a folder with only other files: taken, its files left alone
    const other = tmp();
    fs.writeFileSync(path.join(other, 'keep.txt'), 'mine');
    prepareDemoDir(other);
    expect(fs.readdirSync(other).sort()).toEqual([DEMO_MARKER, 'keep.txt'].sort());
  });

  it('refuses a file given as the folder', () => {
    const f = path.join(tmp(), 'a-file');
    fs.writeFileSync(f, 'x');
    expect(() => prepareDemoDir(f)).toThrow(/is a file, not a folder/);
    expect(fs.readFileSync(f, 'utf8')).toBe('x');
  });
});
