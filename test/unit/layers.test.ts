/**
 * The tree reads top to bottom: each stage of src/ imports only stages below it (and itself), so
 * no arrow runs back up; and only src/store/ reads or writes the tables.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../../src');

/** top to bottom; stages on one line are peers and may not import each other */
const ORDER: string[][] = [
  ['cli'],
  ['alert'],
  ['report', 'gaps', 'estimate', 'compare'],
  ['monitor'],
  ['ingest'],
  ['traces'],
  ['store'],
  ['coverage'],
  ['embed'],
  ['schema'],
  ['config'],
];
const RANK = new Map(ORDER.flatMap((peers, i) => peers.map((s) => [s, i] as const)));

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

/** a statement that reads or writes a table: FROM/INTO/JOIN/TABLE followed by a table reference */
const TABLE_SQL = /\b(?:FROM|INTO|JOIN|TABLE)\s+(?:\$\{[^}]*\}|\{db(?::Identifier)?\}|evalgap\.)/;

describe('layers of src/', () => {
  const all = files(SRC);

  it('every folder of src/ is a known stage', () => {
    const stages = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(stages.filter((s) => !RANK.has(s))).toEqual([]);
  });

  it('imports run from a stage to the stages below it, never up or sideways', () => {
    const bad: string[] = [];
    for (const f of all) {
      const from = path.relative(SRC, f).split(path.sep)[0]!;
      const text = fs.readFileSync(f, 'utf8');
      for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.\.?\/[^']+)'/g)) {
        const target = path.relative(SRC, path.resolve(path.dirname(f), m[1]!)).split(path.sep)[0]!;
        if (target === from || target.startsWith('..')) continue;
        const a = RANK.get(from);
        const b = RANK.get(target);
        if (a === undefined || b === undefined || b <= a) bad.push(`${path.relative(SRC, f)} imports ${m[1]}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('only src/store/ holds SQL that reads or writes the tables', () => {
    const bad = all
      .filter((f) => !path.relative(SRC, f).startsWith(`store${path.sep}`))
      .flatMap((f) =>
        fs
          .readFileSync(f, 'utf8')
          .split('\n')
          .map((line, i) => ({ line, i }))
          .filter(({ line }) => TABLE_SQL.test(line) && !/^\s*(\*|\/\/)/.test(line) && !/\.(argument|option|description)\(/.test(line))
          .map(({ i }) => `${path.relative(SRC, f)}:${i + 1}`),
      );
    expect(bad).toEqual([]);
  });
});
