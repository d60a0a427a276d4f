/**
 * The docs as test input: the pages (README.md and docs/*.md), their fenced blocks marked runnable,
 * and the configuration variables they name against the ones the code reads.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/config/index.js';

export interface DocFile {
  /** path relative to the package root, e.g. docs/sql.md */
  file: string;
  text: string;
}

export interface RunnableBlock {
  file: string;
  /** 1-based line of the opening fence */
  line: number;
  lang: 'sh' | 'sql';
  code: string;
}

/** README.md, then every docs/*.md page in name order. */
export function docFiles(root = PACKAGE_ROOT): DocFile[] {
  const docs = fs.existsSync(path.join(root, 'docs'))
    ? fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)
    : [];
  return ['README.md', ...docs].map((file) => ({ file, text: fs.readFileSync(path.join(root, file), 'utf8') }));
}

/** The convention: a fence whose info string is `sh runnable` or `sql runnable` (docs/README.md). */
const OPEN = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)(.*)$/;

export function runnableBlocks(doc: DocFile): RunnableBlock[] {
  const out: RunnableBlock[] = [];
  const lines = doc.text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = OPEN.exec(lines[i]);
    if (!m) continue;
    const fence = m[2];
    const words = `${m[3]} ${m[4]}`.trim().split(/\s+/);
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence); i++) body.push(lines[i]);
    if (!words.includes('runnable')) continue;
    const lang = words[0];
    if (lang !== 'sh' && lang !== 'sql') throw new Error(`${doc.file}:${start + 1}: a runnable block must be sh or sql, not ${lang || 'unnamed'}`);
    out.push({ file: doc.file, line: start + 1, lang, code: body.join('\n') });
  }
  return out;
}

/** The statements of a SQL block: split at a `;` that ends a line; comment-only parts dropped. */
export function sqlStatements(code: string): string[] {
  return code
    .split(/;[ \t]*(?:\n|$)/)
    .map((s) => s.split('\n').filter((l) => !/^\s*--/.test(l)).join('\n').trim())
    .filter((s) => s.length > 0);
}

const NAME = /EVALGAP_[A-Z0-9_]*[A-Z0-9]/g;

export function namesIn(text: string): Set<string> {
  return new Set(text.match(NAME) ?? []);
}

/**
 * What the product reads, from its source: every EVALGAP_ name in src/, where a setting read with
 * `e('X')` (src/config/index.ts) is also read from `X_FILE`, and one read with `file('X')` only
 * from `X_FILE`.
 */
export function productVariables(sources: { file: string; text: string }[]): { read: Set<string>; fileVariants: Set<string> } {
  const read = new Set<string>();
  const fileVariants = new Set<string>();
  for (const s of sources) {
    const fileArgs = new Set([...s.text.matchAll(/\bfile\('(EVALGAP_[A-Z0-9_]+)'\)/g)].map((m) => m[1]));
    for (const m of s.text.matchAll(/\be\('(EVALGAP_[A-Z0-9_]+)'\)/g)) if (!m[1].endsWith('_FILE')) fileVariants.add(`${m[1]}_FILE`);
    for (const f of fileArgs) read.add(`${f}_FILE`);
    for (const n of namesIn(s.text)) if (!fileArgs.has(n)) read.add(n);
  }
  for (const n of read) fileVariants.delete(n); // named on their own: must be documented on their own
  return { read, fileVariants };
}

export interface VariablesReport {
  /** read by the product or its scripts and tests, named nowhere in the docs */
  undocumented: string[];
  /** named in the docs, read by nothing */
  unread: string[];
}

/**
 * Both directions. `X_FILE` variants of settings count as documented when X is and the docs state
 * the `_FILE` rule (`fileRule`); `examples` are names the docs use as examples of a user's own variable.
 */
export function compareVariables(opts: {
  product: { read: Set<string>; fileVariants: Set<string> };
  tooling: Set<string>;
  documented: Set<string>;
  fileRule: boolean;
  examples: Set<string>;
}): VariablesReport {
  const { product, tooling, documented, fileRule, examples } = opts;
  const undocumented = new Set<string>();
  for (const n of product.read) if (!documented.has(n)) undocumented.add(n);
  // a test that sets a setting through its file form (X_FILE) names what the _FILE rule documents
  for (const n of tooling) {
    const base = n.slice(0, -'_FILE'.length);
    const viaRule = fileRule && n.endsWith('_FILE') && documented.has(base) && product.read.has(base);
    if (!documented.has(n) && !viaRule) undocumented.add(n);
  }
  for (const n of product.fileVariants) {
    const base = n.slice(0, -'_FILE'.length);
    if (!documented.has(n) && !(fileRule && documented.has(base))) undocumented.add(n);
  }
  const known = new Set([...product.read, ...product.fileVariants, ...tooling, ...examples]);
  const unread = [...documented].filter((n) => !known.has(n));
  return { undocumented: [...undocumented].sort(), unread: unread.sort() };
}

export function readTree(dir: string, keep: (f: string) => boolean, root = PACKAGE_ROOT): { file: string; text: string }[] {
  const out: { file: string; text: string }[] = [];
  const walk = (d: string) => {
    for (const ent of fs.readdirSync(path.join(root, d), { withFileTypes: true })) {
      const rel = path.join(d, ent.name);
      if (ent.isDirectory()) walk(rel);
      else if (keep(rel)) out.push({ file: rel, text: fs.readFileSync(path.join(root, rel), 'utf8') });
    }
  };
  walk(dir);
  return out;
}

type Ran = { code: number | null; stdout: string; stderr: string };

function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Ran> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface DocsRun {
  blocks: number;
  statements: number;
  /** one entry per block or statement that failed: where, what, its stderr */
  failures: string[];
  /** docs/sql.md against the store's system.columns */
  missingFromSqlDoc: string[];
  notInStore: string[];
}

/**
 * Run every runnable block against a stopped demo's folder (`evalgap demo --dir DIR`), laid out as
 * a checkout is: shell blocks run in DIR with `evalgap` (and `npx evalgap`) on the PATH, DIR/models
 * holding the embedding model and the demo's coverage models, DIR/chdb as the data folder; SQL
 * blocks run statement by statement through `evalgap sql`. Then compare docs/sql.md with the store.
 */
export async function runDocsAgainstDemo(dir: string, opts: { topic: string; blocks?: RunnableBlock[] }): Promise<DocsRun> {
  const cli = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
  const link = path.join(dir, 'models', 'all-MiniLM-L6-v2');
  if (!fs.existsSync(link)) fs.symlinkSync(fs.realpathSync(path.join(PACKAGE_ROOT, 'models', 'all-MiniLM-L6-v2')), link);
  const bin = path.join(dir, '.bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'evalgap'), `#!/bin/sh\nexec "${process.execPath}" "${cli}" "$@"\n`, { mode: 0o755 });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    EVALGAP_DATA_DIR: path.join(dir, 'chdb'),
    EVALGAP_MODELS_DIR: path.join(dir, 'models'),
    // anything a block publishes goes to topics of its own, never to the broker's default topics
    EVALGAP_TOPIC: opts.topic,
    EVALGAP_DLQ_TOPIC: `${opts.topic}.dlq`,
    EVALGAP_GROUP: opts.topic,
    EVALGAP_LOG_LEVEL: 'warn',
  };
  const cliRun = (args: string[]) => run(process.execPath, [cli, ...args], { cwd: dir, env });
  const blocks = opts.blocks ?? docFiles().flatMap(runnableBlocks);
  const failures: string[] = [];
  let statements = 0;
  for (const b of blocks) {
    const where = `${b.file}:${b.line}`;
    if (b.lang === 'sh') {
      statements++;
      const script = b.code.replace(/\bnpx evalgap\b/g, 'evalgap');
      const r = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, env });
      if (r.code !== 0) failures.push(`${where} (sh) exited ${r.code}:\n${b.code}\n${r.stderr.slice(-2000)}`);
    } else {
      for (const q of sqlStatements(b.code)) {
        statements++;
        const r = await cliRun(['sql', q]);
        if (r.code !== 0) failures.push(`${where} (sql) exited ${r.code}:\n${q}\n${r.stderr.slice(-2000)}`);
      }
    }
  }
  // docs/sql.md: every table and view with every column, as the store has them, and nothing more
  const cols = await cliRun(['sql', "SELECT table, name FROM system.columns WHERE database = 'evalgap' ORDER BY table, position", '--format', 'jsonl']);
  if (cols.code !== 0) throw new Error(`evalgap sql on system.columns failed: ${cols.stderr}`);
  const store = new Map<string, Set<string>>();
  for (const line of cols.stdout.trim().split('\n')) {
    const { table, name } = JSON.parse(line) as { table: string; name: string };
    if (!store.has(table)) store.set(table, new Set());
    store.get(table)!.add(name);
  }
  const doc = new Map<string, Set<string>>();
  for (const part of fs.readFileSync(path.join(PACKAGE_ROOT, 'docs', 'sql.md'), 'utf8').split(/^### /m).slice(1)) {
    const name = part.slice(0, part.indexOf('\n')).trim();
    doc.set(name, new Set([...part.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1])));
  }
  const missingFromSqlDoc: string[] = [];
  const notInStore: string[] = [];
  for (const [t, cs] of store) {
    const d = doc.get(t);
    if (!d) missingFromSqlDoc.push(`table ${t}`);
    else for (const c of cs) if (!d.has(c)) missingFromSqlDoc.push(`${t}.${c}`);
  }
  for (const [t, cs] of doc) {
    const s = store.get(t);
    if (!s) notInStore.push(`table ${t}`);
    else for (const c of cs) if (!s.has(c)) notInStore.push(`${t}.${c}`);
  }
  return { blocks: blocks.length, statements, failures, missingFromSqlDoc, notInStore };
}
