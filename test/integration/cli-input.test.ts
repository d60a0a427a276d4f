/**
 * The CLI with awkward input (issue 18, defect 7): directories given as files, text that is not
 * UTF-8, binary input, dates for --since/--until, and `evalgap sql` while `evalgap run` holds the
 * embedded engine's data folder. Runs the built CLI (dist/) against the real model and engine.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { createLogger } from '../../src/config/logger.js';
import { startRun, type Running } from '../../src/cli/run.js';
import { sampleEvalSet } from '../../src/cli/sample-data.js';
import { testConfig, tmpDir, uniqueName } from '../helpers/fixtures.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
const evalgap = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });
/** the CLI run without blocking this process's event loop (the running instance answers from it) */
function evalgapAsync(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;
const STACK = /\n\s+at /;

let dir: string;
let model: string;
let fit: ReturnType<typeof evalgap>;

beforeAll(() => {
  dir = tmpDir();
  // an eval set with invalid UTF-8 on lines 3 (two sequences) and 5 (one)
  const lines = sampleEvalSet(12).map((c) => Buffer.from(JSON.stringify(c)));
  const bad = (b: Buffer, at: number, bytes: number[]) => Buffer.concat([b.subarray(0, at), Buffer.from(bytes), b.subarray(at)]);
  const q3 = lines[2].indexOf('"query":"') + 9;
  lines[2] = bad(bad(lines[2], q3, [0xff]), q3 + 4, [0xc3, 0x28]);
  lines[4] = bad(lines[4], lines[4].indexOf('"query":"') + 9, [0xe2, 0x82]);
  fs.writeFileSync(path.join(dir, 'evalset.jsonl'), Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
  model = path.join(dir, 'model');
  fit = evalgap('fit', path.join(dir, 'evalset.jsonl'), '--out', model, '--k', '6');
});

describe('file arguments', () => {
  it('fit and score given a directory: a clear one-line error, no stack trace', () => {
    expect(fit.status, fit.stderr).toBe(0);
    for (const args of [
      ['fit', dir],
      ['fit', '--add', dir, '--model', model],
      ['score', dir, '--model', model],
      ['produce', dir],
    ]) {
      const r = evalgap(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^evalgap: .*${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is a directory; give a file\n$`));
      expect(r.stderr).not.toMatch(STACK);
    }
    fs.writeFileSync(path.join(dir, 'q.jsonl'), '{"query":"where is my parcel"}\n');
    const out = evalgap('score', path.join(dir, 'q.jsonl'), '--model', model, '--out', dir);
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/--out .* is a directory; give a file name/);
    expect(out.stderr).not.toMatch(STACK);
    for (const args of [['report', '--out', dir, '--data-dir', path.join(dir, 'nodata')], ['export-gaps', '--out', dir, '--data-dir', path.join(dir, 'nodata')]]) {
      const r = evalgap(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toBe(`evalgap: --out ${dir} is a directory; give a file name\n`);
    }
  });

  it('non-UTF-8 eval sets and score input are read with a warning: how many invalid sequences, on which lines', () => {
    expect(fit.status, fit.stderr).toBe(0);
    expect(fit.stderr).toContain('evalset.jsonl is not valid UTF-8: 3 invalid byte sequence(s) on lines 3, 5;');
    const q = path.join(dir, 'latin1.jsonl');
    fs.writeFileSync(q, Buffer.concat([Buffer.from('{"query":"where is my parcel"}\n{"query":"caf'), Buffer.from([0xe9]), Buffer.from(' refund"}\n')]));
    const r = evalgap('score', q, '--model', model);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('latin1.jsonl is not valid UTF-8: 1 invalid byte sequence(s) on line 2;');
    expect(r.stdout.trim().split('\n')).toHaveLength(2);
  });

  it('binary input: the error list shows control bytes escaped, never sends them to the terminal', () => {
    const b = path.join(dir, 'binary.jsonl');
    fs.writeFileSync(b, Buffer.from([0x00, 0x01, 0x1b, 0x5b, 0x32, 0x4a, 0x9b, 0x7f, 0x0a, 0x1b, 0x5d, 0x30, 0x3b, 0x78, 0x07, 0x0a]));
    const r = evalgap('score', b, '--model', model);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/binary\.jsonl:1: invalid JSON/);
    expect(r.stderr).toContain('\\x1b');
    expect(r.stderr).not.toMatch(CONTROL);
    expect(r.stderr).toContain('is not valid UTF-8');
    const e = path.join(dir, 'binary-evalset.jsonl');
    fs.copyFileSync(b, e);
    const f = evalgap('fit', e, '--out', path.join(dir, 'never'));
    expect(f.status).toBe(2);
    expect(f.stderr).toMatch(/binary-evalset\.jsonl:1: /);
    expect(f.stderr).not.toMatch(CONTROL);
  });
});

describe('fit --out', () => {
  it('refuses a folder that holds a model, and a symlink, before embedding anything; --force replaces', () => {
    expect(fit.status, fit.stderr).toBe(0);
    const before = fs.readFileSync(path.join(model, 'manifest.json'), 'utf8');
    const again = evalgap('fit', path.join(dir, 'evalset.jsonl'), '--out', model, '--k', '6');
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/already holds a coverage model \(cm-[0-9a-f]+\).*--force/);
    expect(again.stderr).not.toMatch(STACK);
    expect(fs.readFileSync(path.join(model, 'manifest.json'), 'utf8')).toBe(before);
    const link = path.join(dir, 'current');
    fs.symlinkSync(model, link);
    const viaLink = evalgap('fit', path.join(dir, 'evalset.jsonl'), '--out', link, '--force');
    expect(viaLink.status).toBe(2);
    expect(viaLink.stderr).toMatch(/is a symlink.*evalgap deploy/);
    expect(fs.readFileSync(path.join(model, 'manifest.json'), 'utf8')).toBe(before);
    // --force passes the check: what fails then is the (missing) eval set, not the folder
    const forced = evalgap('fit', path.join(dir, 'no-such.jsonl'), '--out', model, '--force');
    expect(forced.status).not.toBe(0);
    expect(forced.stderr).not.toMatch(/already holds/);
    expect(forced.stderr).toMatch(/no-such\.jsonl/);
  });
});

describe('evalgap gaps --since/--until', () => {
  it('takes durations or ISO-8601 dates for both ends of the period', () => {
    const data = path.join(dir, 'gaps-data');
    const r = evalgap('gaps', '--since', '2024-05-01', '--until', '2024-05-08T12:00', '--data-dir', data, '--no-store');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('2024-05-01 00:00 → 2024-05-08 12:00 UTC');
    const j = evalgap('gaps', '--since', '2024-05-01T00:00:00+02:00', '--until', '3d', '--data-dir', data, '--no-store', '--format', 'json');
    expect(j.status, j.stderr).toBe(0);
    const rep = JSON.parse(j.stdout);
    expect(rep.since).toBe('2024-04-30T22:00:00.000Z');
    expect(Math.abs(Date.parse(rep.until) - (Date.now() - 3 * 86_400_000))).toBeLessThan(600_000);
    const d = evalgap('gaps', '--since', '12h', '--data-dir', data, '--no-store', '--format', 'json');
    expect(d.status, d.stderr).toBe(0);
    expect(Math.abs(Date.parse(JSON.parse(d.stdout).since) - (Date.now() - 12 * 3_600_000))).toBeLessThan(600_000);
    const bad = evalgap('gaps', '--since', 'last tuesday', '--data-dir', data);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--since expects a duration back from now .* or an ISO-8601 date/);
    const reversed = evalgap('gaps', '--since', '2024-05-08', '--until', '2024-05-01', '--data-dir', data);
    expect(reversed.status).toBe(2);
    expect(reversed.stderr).toMatch(/--since \(2024-05-08T00:00:00\.000Z\) must be before --until/);
  });
});

describe('evalgap sql while evalgap run holds the data folder', () => {
  let running: Running | null = null;
  afterAll(async () => running?.stop());

  it('goes to the running instance without printing the engine\'s raw lock error', { timeout: 180_000 }, async () => {
    expect(fit.status, fit.stderr).toBe(0);
    const data = path.join(dir, 'run-data');
    let cfg = testConfig(data);
    const topic = uniqueName('evalgap.test.cli');
    cfg = { ...cfg, kafka: { ...cfg.kafka, topic, dlqTopic: `${topic}.dlq`, group: uniqueName('g') }, ingest: { ...cfg.ingest, metricsPort: 0 } };
    running = await startRun(cfg, model, createLogger('silent'));
    const r = await evalgapAsync('sql', 'SELECT 41 + 1 AS answer', '--data-dir', data);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/answer\n-+\n42/);
    expect(r.stderr).toContain('is held by a running evalgap run');
    expect(r.stderr).not.toMatch(/Cannot lock|DB::Exception|Code: 76/);
  });
});
