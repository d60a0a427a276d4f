/** Reads ../shared/data/banking77 in place (never copied into the project). */
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/config/index.js';
import { parseCsv } from '../../src/coverage/evalset.js';

export const BANKING77_DIR = process.env.EVALGAP_BANKING77_DIR ?? path.resolve(PACKAGE_ROOT, '..', 'shared', 'data', 'banking77');

export const BANKING77_MISSING =
  `Banking77 not found at ${BANKING77_DIR}: real-data tests and benchmarks need the Banking77 CSVs ` +
  `(train.csv, test.csv with columns text,category) there, or EVALGAP_BANKING77_DIR pointing at them`;

export function hasBanking77(): boolean {
  return fs.existsSync(path.join(BANKING77_DIR, 'train.csv')) && fs.existsSync(path.join(BANKING77_DIR, 'test.csv'));
}

export interface Row {
  text: string;
  category: string;
}

export function loadBanking77(split: 'train' | 'test'): Row[] {
  const { rows } = parseCsv(fs.readFileSync(path.join(BANKING77_DIR, `${split}.csv`), 'utf8'));
  const [header, ...body] = rows;
  const ti = header.indexOf('text');
  const ci = header.indexOf('category');
  return body.filter((r) => r.length === header.length).map((r) => ({ text: r[ti], category: r[ci] }));
}

export function categories(rows: Row[]): string[] {
  return [...new Set(rows.map((r) => r.category))].sort();
}

/** Seeded choice of `held` categories to hold out. */
export function holdOut(cats: string[], held: number, seed: number): Set<string> {
  let a = seed >>> 0;
  const r = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const c = [...cats];
  for (let i = c.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [c[i], c[j]] = [c[j], c[i]];
  }
  return new Set(c.slice(0, held));
}
