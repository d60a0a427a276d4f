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
  it('every usage error exits 2, whether commander or the command finds it; --help and --version exit 0', () => {
    const data = path.join(dir, 'usage-data'); // never opened: each call fails on its arguments first
    for (const args of [
      ['estimate', '--since', 'bogus'],
      ['plan', '--budget', '5', '--since', 'bogus'],
      ['gaps', '--since', 'bogus', '--data-dir', data],
      ['report', '--since', 'bogus', '--data-dir', data],
      ['agent-coverage', '--since', 'bogus'],
      ['agent-coverage', '--since', '1d', '--until', '2d'], // a reversed period
      ['gaps', '--no-such-option'],
      ['gaps', '--examples', 'abc'],
      ['no-such-command'],
      [],
    ]) {
      const r = evalgap(...args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).not.toMatch(STACK);
    }
    expect(fs.existsSync(data)).toBe(false);
    for (const args of [['--help'], ['--version'], ['gaps', '--help']]) expect(evalgap(...args).status, args.join(' ')).toBe(0);
  });

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

  it('a UTF-16 file (with or without a byte-order mark) is one line naming the encoding, exit 2, for every reader', () => {
    expect(fit.status, fit.stderr).toBe(0);
    const lines = '{"id": "u1", "query": "where is my card", "request_id": "r1", "ts": "2026-01-01T00:00:00Z", "passed": true}\n';
    const withBom = path.join(dir, 'utf16-bom.jsonl');
    const noBom = path.join(dir, 'utf16.jsonl');
    fs.writeFileSync(withBom, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(lines, 'utf16le')]));
    fs.writeFileSync(noBom, Buffer.from(lines, 'utf16le'));
    for (const f of [withBom, noBom]) {
      for (const args of [['fit', f, '--out', path.join(dir, 'utf16-model')], ['score', f, '--model', model], ['produce', f], ['results', f, '--model', model]]) {
        const r = evalgap(...args);
        expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(/^evalgap: .* is UTF-16 \((little-endian|little-endian, with a byte-order mark)\), not UTF-8: re-encode it as UTF-8/);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
      }
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
    // the report needs the folder itself: one line saying who holds it
    const rep = await evalgapAsync('report', '--out', path.join(dir, 'held.html'), '--map-sample', '0', '--data-dir', data);
    expect(rep.status, rep.stderr).toBe(2);
    expect(rep.stderr).toMatch(/^evalgap: the data folder .*run-data is held by a running evalgap run \(pid \d+\): the embedded engine serves one process per folder/);
    expect(rep.stderr).not.toMatch(STACK);
    // and so do the monitor's commands that need it, and a second run
    const st = await evalgapAsync('monitor', '--model', model, '--status', '--data-dir', data);
    expect(st.status, st.stderr).toBe(2);
    expect(st.stderr).toMatch(/^evalgap: the data folder .*run-data is held by a running evalgap run \(pid \d+\)/);
    expect(st.stderr).not.toMatch(/Cannot lock|DB::Exception|Code: 76/);
    expect(st.stderr).not.toMatch(STACK);
    const second = await evalgapAsync('run', '--model', model, '--metrics-port', '0', '--data-dir', data, '--topic', uniqueName('evalgap.test.cli2'), '--group', uniqueName('g'));
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(/evalgap: the data folder .*run-data is held by a running evalgap run \(pid \d+\)/);
    expect(second.stderr).not.toMatch(/Cannot lock|DB::Exception|Code: 76/);
  });
});

describe('what a user gets wrong, or what is down: one line saying what, no stack trace (fresh-user audit)', () => {
  const oneLine = (r: { status: number | null; stderr: string }, re: RegExp) => {
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(re);
    expect(r.stderr).not.toMatch(STACK);
    expect(r.stderr).not.toMatch(/\[WARN\]/);
  };

  it('a ClickHouse server that does not answer', async () => {
    for (const cmd of [['sql', 'SELECT 1'], ['gaps'], ['report', '--out', path.join(dir, 'r.html'), '--map-sample', '0']]) {
      oneLine(await evalgapAsync(...cmd, '--clickhouse-url', 'http://127.0.0.1:1'), /^evalgap: ClickHouse at http:\/\/127\.0\.0\.1:1\/ did not answer: .*ECONNREFUSED/);
    }
  });

  it('a broker that does not answer, for produce', async () => {
    const f = path.join(dir, 'requests.jsonl');
    fs.writeFileSync(f, '{"request_id":"a","ts":"2026-01-01T00:00:00Z","query":"hi"}\n');
    oneLine(await evalgapAsync('produce', f, '--brokers', '127.0.0.1:1'), /^evalgap: cannot publish to Kafka at 127\.0\.0\.1:1: /);
  });

  it('deploy onto a folder, report with a --model that is not there, receive with a bad secret or a busy port', async () => {
    expect(fit.status, fit.stderr).toBe(0);
    const folder = path.join(dir, 'not-a-link');
    fs.mkdirSync(folder, { recursive: true });
    oneLine(evalgap('deploy', model, '--current', folder), /^evalgap: .*not-a-link exists and is not a symlink but a folder; deploy repoints a symlink/);
    const r = evalgap('report', '--out', path.join(dir, 'r.html'), '--model', path.join(dir, 'typo'), '--data-dir', path.join(dir, 'report-data'));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--model .*typo: no such coverage model folder/);
    expect(fs.existsSync(path.join(dir, 'r.html'))).toBe(false);
    const bad = evalgap('receive', '--port', '0', '--secret', 'foo');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/the secret in --secret is not a webhook secret/);
    const unset = evalgap('receive', '--port', '0', '--secret-env', 'NO_SUCH_WEBHOOK_SECRET_VAR');
    expect(unset.stderr).toMatch(/NO_SUCH_WEBHOOK_SECRET_VAR: that variable is not set/);
    const range = evalgap('receive', '--port', '99999', '--secret', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    expect(range.status).not.toBe(0);
    expect(range.stderr).not.toMatch(STACK);
    const net = await import('node:net');
    const busy = net.createServer();
    await new Promise<void>((res) => busy.listen(0, '127.0.0.1', () => res()));
    try {
      const port = (busy.address() as { port: number }).port;
      oneLine(await evalgapAsync('receive', '--port', String(port), '--secret', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'), new RegExp(`^evalgap: port ${port} on 127\\.0\\.0\\.1 is in use`));
      // the monitor binds its metrics port before it joins any Kafka group
      oneLine(
        await evalgapAsync('monitor', '--model', model, '--metrics-port', String(port), '--data-dir', path.join(dir, 'monitor-port-data')),
        new RegExp(`^evalgap: the monitor's metrics port ${port} on 127\\.0\\.0\\.1 is in use`, 'm'),
      );
    } finally {
      busy.close();
    }
  });

  it('score --out refuses the queries file itself, leaving it as it was', () => {
    expect(fit.status, fit.stderr).toBe(0);
    const q = path.join(dir, 'queries.jsonl');
    fs.writeFileSync(q, '{"query":"where is my parcel"}\n');
    const r = evalgap('score', q, '--model', model, '--out', q);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/is the queries file itself/);
    expect(fs.readFileSync(q, 'utf8')).toBe('{"query":"where is my parcel"}\n');
  });

  it('agent-coverage of a session that is not stored exits 2', () => {
    const r = evalgap('agent-coverage', '--session', 'no-such-session', '--data-dir', path.join(dir, 'gaps-empty'));
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^evalgap: no stored turns of session no-such-session/);
  });

  it('gaps over no matching requests says so instead of "coverage 100%"', () => {
    const r = evalgap('gaps', '--agent', 'nobody', '--data-dir', path.join(dir, 'gaps-empty'), '--no-store');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/no stored requests match this period, agent nobody: coverage unknown/);
    expect(r.stdout).not.toMatch(/100\.0% of traffic/);
  });
});

describe('evalgap produce', () => {
  it("keys each line by its session id, so a session's turns stay on one partition, in order", async () => {
    const { ensureTopics } = await import('../../src/ingest/kafka.js');
    const { testKafka } = await import('../helpers/fixtures.js');
    const kafka = testKafka();
    const topic = uniqueName('evalgap.test.produce');
    await ensureTopics(kafka, [{ topic, numPartitions: 4 }]);
    const lines = Array.from({ length: 48 }, (_, i) => JSON.stringify({ request_id: `p${i}`, ts: '2026-01-01T00:00:00Z', query: `q${i}`, session_id: `s${i % 8}`, turn: Math.floor(i / 8) + 1 }));
    lines.push(JSON.stringify({ request_id: 'lone', ts: '2026-01-01T00:00:00Z', query: 'no session' }), 'not json');
    const f = path.join(dir, 'sessions.jsonl');
    fs.writeFileSync(f, lines.join('\n') + '\n');
    const r = await evalgapAsync('produce', f, '--topic', topic);
    expect(r.status, r.stderr).toBe(0);
    const got: { partition: number; key: string | null; value: string }[] = [];
    const consumer = kafka.consumer({ groupId: uniqueName('g') });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ partition, message }) => void got.push({ partition, key: message.key?.toString() ?? null, value: message.value!.toString() }) });
    try {
      const { waitFor } = await import('../helpers/fixtures.js');
      await waitFor(async () => got.length === lines.length, 60_000, 'every line to be read back');
    } finally {
      await consumer.disconnect();
    }
    const bySession = new Map<string, { partitions: Set<number>; turns: number[] }>();
    for (const m of got) {
      if (m.key === null) continue;
      const v = JSON.parse(m.value) as { session_id: string; turn: number };
      expect(m.key).toBe(v.session_id);
      const s = bySession.get(m.key) ?? { partitions: new Set(), turns: [] };
      s.partitions.add(m.partition);
      s.turns.push(v.turn);
      bySession.set(m.key, s);
    }
    expect(bySession.size).toBe(8);
    for (const s of bySession.values()) {
      expect(s.partitions.size).toBe(1);
      expect(s.turns).toEqual([1, 2, 3, 4, 5, 6]);
    }
    // the sessions spread over the partitions, and lines without a session go unkeyed
    expect(new Set(got.filter((m) => m.key).map((m) => m.partition)).size).toBeGreaterThan(1);
    expect(got.filter((m) => m.key === null).map((m) => m.value).sort()).toEqual([lines[48], 'not json'].sort());
  });
});

describe('evalgap results reads its file as the other commands do (new-user audit)', () => {
  it('a directory: one line, exit 2, no stack trace', () => {
    expect(fit.status, fit.stderr).toBe(0);
    const r = evalgap('results', dir, '--model', model, '--data-dir', path.join(dir, 'results-data'));
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toBe(`evalgap: results file ${dir} is a directory; give a file\n`);
  });

  it('a file over the longest text Node.js holds (a sparse 600 MiB file): results, score, produce and fit say it is too large, with the limit, and exit 2', async () => {
    expect(fit.status, fit.stderr).toBe(0);
    const { constants } = await import('node:buffer');
    const big = path.join(dir, 'big.jsonl');
    fs.writeFileSync(big, '');
    fs.truncateSync(big, 600 * 2 ** 20); // sparse: no disk used, nothing written
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB \\(${n} bytes\\)`;
    for (const [what, args] of [
      ['results file', ['results', big, '--model', model, '--data-dir', path.join(dir, 'results-data')]],
      ['queries file', ['score', big, '--model', model]],
      ['request log file', ['produce', big, '--brokers', '127.0.0.1:1']],
      ['eval set', ['fit', big, '--out', path.join(dir, 'never-big')]],
    ] as const) {
      const r = evalgap(...args);
      expect(r.status, `${args[0]}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(
        new RegExp(`^evalgap: ${what} ${big.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is too large to read: ${mib(600 * 2 ** 20)}; the limit is ${mib(constants.MAX_STRING_LENGTH)}, the longest text Node.js can hold\n$`),
      );
    }
    fs.rmSync(big);
  });

  it('a file that is not valid UTF-8: stored with the same warning fit, score and produce print', async () => {
    expect(fit.status, fit.stderr).toBe(0);
    const { loadCoverageModel } = await import('../../src/coverage/model.js');
    const [a, b] = loadCoverageModel(model).cases;
    const f = path.join(dir, 'results-latin1.jsonl');
    fs.writeFileSync(
      f,
      Buffer.concat([Buffer.from(`{"id":${JSON.stringify(a.id)},"passed":true}\n{"id":${JSON.stringify(b.id)},"passed":false,"note":"caf`), Buffer.from([0xe9]), Buffer.from('"}\n')]),
    );
    const r = evalgap('results', f, '--model', model, '--data-dir', path.join(dir, 'results-data'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('results-latin1.jsonl is not valid UTF-8: 1 invalid byte sequence(s) on line 2;');
    expect(r.stdout).toContain('stored 2 result(s)');
  });
});
