/** `evalgap demo` end to end (real broker, model and embedded ClickHouse): what `npm run demo` runs. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { SURPRISE_TOPICS } from '../../src/cli/sample-data.js';
import { capMs, tmpDir, uniqueName } from '../helpers/fixtures.js';
import { runDocsAgainstDemo } from '../helpers/docs.js';

const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('evalgap demo', () => {
  /** the demo's folder once the first test has run it: its data then serves the docs' runnable blocks */
  let demoDir: string | null = null;

  it('fits, streams traffic that shifts, finds the untested topics uncovered, closes the gap with fit --add and a hot redeploy, writes the report', async () => {
    const dir = path.join(tmpDir(), 'demo');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'keep.txt'), 'not the demo’s'); // a file the demo must leave alone
    const r = await runCli(['demo', '--dir', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/stored 600 rows, dead-lettered 3 messages/);
    // the monitor's signed alert arrives on every run, whatever the machine's speed
    expect(r.stdout).toMatch(/received after [\d.]+ s, signature verified: al_[0-9a-f]+\.firing/);
    // the rule that finds the new topics first: an uncovered-share rule or, where the fit's clusters
    // put them in the deepest band (the CPU's kernels move the fit a little), the deep-band rule
    expect(r.stdout).toMatch(/^\s+(WARNING|CRITICAL|INFO) (uncovered_(vs_calibrated|budget|share)|novel_vs_calibrated) \(agent /m);
    const rows = [...r.stdout.matchAll(/^\s+(\S+)\s+(yes|no)\s+(\d+)\s+([\d.]+)%$/gm)].map((m) => ({
      topic: m[1],
      tested: m[2] === 'yes',
      n: Number(m[3]),
      uncovered: Number(m[4]) / 100,
    }));
    expect(rows.map((x) => x.topic).sort()).toEqual(expect.arrayContaining([...SURPRISE_TOPICS].sort()));
    expect(rows.reduce((a, x) => a + x.n, 0)).toBe(300);
    for (const x of rows) {
      if (x.tested) expect(x.uncovered, x.topic).toBeLessThan(0.3);
      // the calibration over phrasing families sets a lower threshold than the leave-one-out one
      // did (91–100% of these were uncovered then): about 53–79% of an untested topic now on an
      // AVX-512 machine, 36% for one topic on an AVX2-only one (its kernels move the fit a little);
      // well above the 15.3% the fit states as the upper end for tested topics
      else expect(x.uncovered, x.topic).toBeGreaterThan(0.25);
    }
    // the loop: exported, refitted, redeployed to the running consumer, closed
    // gap discovery finds the new topics; export-gaps turns them into cases
    const found = /grouped (\d+) uncovered requests: (\d+) gap\(s\)/.exec(r.stdout);
    expect(found, r.stdout).not.toBeNull();
    expect(Number(found![2])).toBeGreaterThan(0);
    expect(r.stdout).toMatch(/\d+ cases from \d+ gap\(s\) → .*gap-cases\.jsonl/);
    const cases = fs.readFileSync(path.join(dir, 'gap-cases.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(cases.length).toBeGreaterThan(0);
    for (const c of cases) expect(c.tags[0]).toBe(c.gap_id);
    expect(r.stdout).toMatch(/the running consumer now scores with cm-[0-9a-f]{12} \(switched/);
    expect(r.stdout).toMatch(/stored 900 rows in all/);
    const closing = /uncovered share of the new topics: ([\d.]+)% → ([\d.]+)%/.exec(r.stdout);
    expect(closing, r.stdout).not.toBeNull();
    expect(Number(closing![1])).toBeGreaterThan(40);
    expect(Number(closing![2])).toBeLessThan(20);
    // discovery over the fresh traffic marks the new topics' gaps closed
    const closedGaps = /gaps of the new topics marked closed: (\d+) of (\d+)/.exec(r.stdout);
    expect(closedGaps, r.stdout).not.toBeNull();
    expect(Number(closedGaps![2])).toBeGreaterThan(0);
    expect(Number(closedGaps![1])).toBe(Number(closedGaps![2]));
    // the canary: the monitor's guard calls for a rollback naming the one regressed cluster, while
    // one global test over all traffic has no evidence yet
    expect(r.stdout).toMatch(/signed webhook received, signature verified: al_[0-9a-f]+\.firing \(severity rollback\)/);
    const named = [...r.stdout.matchAll(/^\s+cluster (\d+) .*: escalated [\d.]+% on v2 \(\d+ sessions\) vs [\d.]+% on v1 \(\d+\); ratio ≥ [\d.]+ with confidence → rollback$/gm)];
    expect(named.map((m) => m[0].includes('[the regressed one]'))).toEqual([true]);
    expect(r.stdout).toMatch(/all traffic \(one global test\): escalated [\d.]+% on v2 vs [\d.]+% on v1; difference -[\d.]+ to [\d.]+ points: no evidence yet/);
    const report = /report: (\S+\.html)/.exec(r.stdout)![1];
    // the report compares the versions cluster by cluster
    expect(fs.readFileSync(report, 'utf8')).toContain(`Worse: cluster ${named[0][1]};`);
    expect(fs.readFileSync(report, 'utf8')).toContain('<canvas id="chart-map">');
    expect(r.stdout).toMatch(/your eval says \d+\.\d%; on this traffic it would be \d+\.\d% \[\d+\.\d%, \d+\.\d%\] \(90% interval\), and \d+\.\d% of traffic is untested/);
    expect(fs.readFileSync(report, 'utf8')).toContain('Eval score on this traffic');
    expect(fs.readlinkSync(path.join(dir, 'models', 'current'))).toMatch(/^cm-[0-9a-f]{12}$/);
    expect(fs.readFileSync(path.join(dir, 'keep.txt'), 'utf8')).toBe('not the demo’s');
    // run again in the same folder: the demo replaces its own files and works again
    const again = await runCli(['demo', '--dir', dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/stored 600 rows, dead-lettered 3 messages/);
    expect(again.stdout).toMatch(/received after [\d.]+ s, signature verified/);
    demoDir = dir;
  }, capMs(300_000));

  // docs that stay true: the blocks marked `sh runnable` / `sql runnable` (docs/README.md) run against
  // the stopped demo's data, and docs/sql.md lists the store's tables and columns
  it('every runnable shell command and SQL query in README.md and docs/ runs against the demo data; docs/sql.md lists every column', async () => {
    expect(demoDir, 'the demo ran').not.toBeNull();
    const r = await runDocsAgainstDemo(demoDir!, { topic: uniqueName('docs') });
    expect(r.blocks).toBeGreaterThan(5);
    expect(r.failures, r.failures.join('\n\n')).toEqual([]);
    expect(r.missingFromSqlDoc, 'in the store, missing from docs/sql.md').toEqual([]);
    expect(r.notInStore, 'in docs/sql.md, not in the store').toEqual([]);
  }, capMs(600_000));
});
