/** Docs that stay true: every configuration variable the code reads is documented, and none that it does not. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { compareVariables, docFiles, namesIn, productVariables, readTree, runnableBlocks, sqlStatements } from '../helpers/docs.js';

/** names the docs use as examples of a user's own variable (receivers[].secretEnv, receive --secret-env) */
const EXAMPLES = new Set(['EVALGAP_HOOK_SECRET']);
const FILE_RULE = /every setting read from an `EVALGAP_…` variable[^.]*also[^.]*`_FILE`/i;

function current() {
  const product = productVariables(readTree('src', (f) => f.endsWith('.ts')));
  const tooling = new Set<string>();
  const toolFiles = [
    ...readTree('scripts', (f) => /\.(sh|py)$/.test(f)),
    ...readTree('test', (f) => f.endsWith('.ts') && !f.includes('helpers/docs.ts') && !f.endsWith('unit/docs.test.ts')),
  ];
  for (const t of toolFiles) for (const n of namesIn(t.text)) if (!product.read.has(n)) tooling.add(n);
  const docs = docFiles();
  const documented = new Set(docs.flatMap((d) => [...namesIn(d.text)]));
  const fileRule = docs.some((d) => FILE_RULE.test(d.text.replace(/\s+/g, ' ')));
  return { product, tooling, documented, fileRule };
}

describe('configuration variables in the docs', () => {
  it('every EVALGAP_ variable the code, its scripts and its tests read is documented, and every documented one is read', () => {
    const c = current();
    expect(c.product.read.size).toBeGreaterThan(30);
    expect(c.fileRule, 'the docs state the _FILE rule').toBe(true);
    const r = compareVariables({ ...c, examples: EXAMPLES });
    expect(r.undocumented, 'read by the code, named in no page (README.md, docs/*.md)').toEqual([]);
    expect(r.unread, 'named in the docs, read by nothing').toEqual([]);
  });

  it('the comparison fails both ways: a variable the code reads and the docs lack, one the docs name and nothing reads', () => {
    const product = productVariables([
      { file: 'src/config/index.ts', text: "e('EVALGAP_A') ?? 1; file('EVALGAP_CA'); e('EVALGAP_B')" },
      { file: 'src/cli/main.ts', text: 'process.env.EVALGAP_C' },
    ]);
    expect([...product.read].sort()).toEqual(['EVALGAP_A', 'EVALGAP_B', 'EVALGAP_CA_FILE', 'EVALGAP_C'].sort());
    expect([...product.fileVariants].sort()).toEqual(['EVALGAP_A_FILE', 'EVALGAP_B_FILE']);
    const documented = new Set(['EVALGAP_A', 'EVALGAP_CA_FILE', 'EVALGAP_C', 'EVALGAP_GONE']);
    const r = compareVariables({ product, tooling: new Set(['EVALGAP_T']), documented, fileRule: true, examples: new Set() });
    expect(r.undocumented).toEqual(['EVALGAP_B', 'EVALGAP_B_FILE', 'EVALGAP_T']);
    expect(r.unread).toEqual(['EVALGAP_GONE']);
    // without the stated _FILE rule each variant must be named
    expect(compareVariables({ product, tooling: new Set(), documented, fileRule: false, examples: new Set() }).undocumented).toContain('EVALGAP_A_FILE');
  });
});

describe('runnable blocks', () => {
  it('are found by their info string and split into statements', () => {
    const doc = {
      file: 'x.md',
      text: 'a\n```sh runnable\nnpx evalgap inspect m\n```\n```sh\nnot me\n```\n```sql runnable\n-- c\nSELECT 1;\nSELECT 2\nFROM t;\n```\n',
    };
    const b = runnableBlocks(doc);
    expect(b.map((x) => [x.lang, x.line])).toEqual([['sh', 2], ['sql', 8]]);
    expect(sqlStatements(b[1].code)).toEqual(['SELECT 1', 'SELECT 2\nFROM t']);
    expect(() => runnableBlocks({ file: 'y.md', text: '```js runnable\nx\n```\n' })).toThrow(/sh or sql/);
  });

  it('the README and docs mark blocks runnable, the 10-minute path among them', () => {
    const blocks = docFiles().flatMap(runnableBlocks);
    expect(blocks.filter((b) => b.file === 'README.md').length).toBeGreaterThanOrEqual(3);
    expect(blocks.filter((b) => b.lang === 'sql').length).toBeGreaterThanOrEqual(3);
  });
});

/** pages other branches add; the lead merges them (then this list can go) */
const PENDING_PAGES = new Set<string>([]);

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(md: string): Set<string> {
  const out = new Set<string>();
  const text = md.replace(/^(```|~~~)[\s\S]*?^\1/gm, '');
  for (const m of text.matchAll(/^#{1,6} (.+)$/gm)) {
    out.add(m[1].trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/ /g, '-'));
  }
  return out;
}

describe('links and help', () => {
  it('every relative link in README.md and docs/ names a file that exists, and its #anchor a heading there', () => {
    const broken: string[] = [];
    for (const d of docFiles()) {
      const base = path.dirname(path.join(PACKAGE_ROOT, d.file));
      const text = d.text.replace(/^(```|~~~)[\s\S]*?^\1/gm, ''); // not inside code blocks
      for (const m of text.matchAll(/\]\(([^)\s#]+)(#[^)\s]*)?\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        const abs = path.resolve(base, target);
        if (PENDING_PAGES.has(path.relative(PACKAGE_ROOT, abs))) continue;
        if (!fs.existsSync(abs)) broken.push(`${d.file}: ${target}`);
        else if (m[2] && abs.endsWith('.md') && !anchors(fs.readFileSync(abs, 'utf8')).has(m[2].slice(1))) broken.push(`${d.file}: ${target}${m[2]}`);
      }
      // links within the page
      for (const m of text.matchAll(/\]\((#[^)\s]+)\)/g)) if (!anchors(d.text).has(m[1].slice(1))) broken.push(`${d.file}: ${m[1]}`);
    }
    expect(broken).toEqual([]);
  });

  it('the top-level help and each command\'s help name their docs pages, and those pages exist', () => {
    const program = buildProgram();
    const help = (c: Command) => {
      let out = '';
      c.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
      c.outputHelp();
      return out;
    };
    expect(help(program)).toMatch(/Docs: README\.md and docs\//);
    expect(program.commands.length).toBeGreaterThan(10);
    for (const c of program.commands) {
      const text = help(c);
      const pages = [...text.matchAll(/docs\/[a-z-]+\.md/g)].map((m) => m[0]);
      expect(pages.length, c.name()).toBeGreaterThan(0);
      for (const p of pages) expect(fs.existsSync(path.join(PACKAGE_ROOT, p)), `${c.name()}: ${p}`).toBe(true);
    }
  });
});
