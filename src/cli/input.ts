/**
 * Reading the files the CLI is given: a clear one-line error for a missing path or a directory,
 * and a warning (how many invalid sequences, on which lines) for text that is not valid UTF-8.
 */
import fs from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { UserError } from './errors.js';
import { escapeControl } from './format.js';

export interface InvalidUtf8 {
  /** invalid byte sequences (each replaced by U+FFFD when decoded) */
  sequences: number;
  /** 1-based numbers of the lines holding them */
  lines: number[];
}

export interface TextInput {
  /** the file's text, decoded as UTF-8 (a leading byte-order mark removed) */
  text: string;
  invalid: InvalidUtf8 | null;
}

/** Throw a UserError unless `file` names something readable as a file ('-' is standard input). */
export function checkInputFile(file: string, what: string): void {
  if (file === '-') return;
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new UserError(`${what} ${file} does not exist`);
  if (st.isDirectory()) throw new UserError(`${what} ${file} is a directory; give a file`);
}

/** Throw a UserError when an output path is a directory or its folder does not exist. */
export function checkOutputFile(file: string, what: string): void {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (st?.isDirectory()) throw new UserError(`${what} ${file} is a directory; give a file name`);
}

/** The invalid UTF-8 sequences of `buf` and their lines (null when it is valid UTF-8). */
export function invalidUtf8(buf: Buffer): InvalidUtf8 | null {
  if (isUtf8(buf)) return null;
  const lines: number[] = [];
  let sequences = 0;
  let start = 0;
  for (let line = 1; start <= buf.length; line++) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    const part = buf.subarray(start, end);
    if (!isUtf8(part)) {
      // each maximal invalid subsequence decodes to one U+FFFD; a U+FFFD written in the file is not counted
      const decoded = part.toString('utf8');
      let replaced = 0;
      for (const ch of decoded) if (ch === '\uFFFD') replaced++;
      let literal = 0;
      for (let i = part.indexOf('\uFFFD'); i >= 0; i = part.indexOf('\uFFFD', i + 3)) literal++;
      sequences += replaced - literal;
      lines.push(line);
    }
    start = end + 1;
  }
  return { sequences, lines };
}

export function readTextInput(file: string, what: string): TextInput {
  checkInputFile(file, what);
  const buf = fs.readFileSync(file === '-' ? 0 : file);
  return { text: buf.toString('utf8').replace(/^\uFEFF/, ''), invalid: invalidUtf8(buf) };
}

/** The warning printed for input that is not valid UTF-8 (null when it is). */
export function utf8Warning(name: string, invalid: InvalidUtf8 | null, maxLines = 10): string | null {
  if (!invalid) return null;
  const shown = invalid.lines.slice(0, maxLines).join(', ') + (invalid.lines.length > maxLines ? `, … (${invalid.lines.length} lines)` : '');
  return (
    `warning: ${escapeControl(name)} is not valid UTF-8: ${invalid.sequences} invalid byte sequence(s) on line${invalid.lines.length === 1 ? '' : 's'} ${shown}; ` +
    'each was read as U+FFFD (\uFFFD); re-encode the file as UTF-8 to keep the text'
  );
}
