/**
 * Reading the files the CLI is given: a clear one-line error for a missing path, a directory or a
 * file too large to read, and a warning (how many invalid sequences, on which lines) for text that
 * is not valid UTF-8.
 */
import fs from 'node:fs';
import { constants as bufferConstants, isUtf8 } from 'node:buffer';
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
  /** the file's bytes as read */
  bytes: Buffer;
  invalid: InvalidUtf8 | null;
}

/**
 * The largest input read, in bytes: the longest string Node.js can hold (512 MiB less 24 bytes on
 * 64-bit). UTF-8 text never decodes to more UTF-16 units than it has bytes, so a file within it
 * always decodes.
 */
export const MAX_INPUT_BYTES: number = bufferConstants.MAX_STRING_LENGTH;

const size = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB (${n} bytes)`;

function tooLarge(what: string, file: string, bytes: number | null): UserError {
  return new UserError(
    `${what} ${file === '-' ? '(standard input)' : file} is too large to read: ${bytes === null ? 'more than the limit' : size(bytes)}; ` +
      `the limit is ${size(MAX_INPUT_BYTES)}, the longest text Node.js can hold`,
  );
}

/**
 * Throw a UserError unless `file` names something readable as a file ('-' is standard input): it
 * must exist, not be a directory, and (a regular file) be no larger than MAX_INPUT_BYTES, checked
 * by its size before anything is read.
 */
export function checkInputFile(file: string, what: string): void {
  if (file === '-') return;
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new UserError(`${what} ${file} does not exist`);
  if (st.isDirectory()) throw new UserError(`${what} ${file} is a directory; give a file`);
  if (st.isFile() && st.size > MAX_INPUT_BYTES) throw tooLarge(what, file, st.size);
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

/**
 * A file's text (checkInputFile first). Standard input, a pipe or a file that grew since its size
 * was checked is measured once read: over MAX_INPUT_BYTES it is the same one-line error, not a crash.
 */
export function readTextInput(file: string, what: string): TextInput {
  checkInputFile(file, what);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file === '-' ? 0 : file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_FS_FILE_TOO_LARGE') throw tooLarge(what, file, null);
    throw e;
  }
  if (buf.length > MAX_INPUT_BYTES) throw tooLarge(what, file, buf.length);
  const utf16 = utf16Of(buf);
  if (utf16) {
    throw new UserError(
      `${what} ${file === '-' ? '(standard input)' : file} is UTF-16 (${utf16}), not UTF-8: re-encode it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8) and give it again`,
    );
  }
  return { text: buf.toString('utf8').replace(/^\uFEFF/, ''), bytes: buf, invalid: invalidUtf8(buf) };
}

/**
 * Whether the bytes are UTF-16 text (what Windows tools often save): a UTF-16 byte-order mark, or,
 * without one, a NUL in every other byte of the first kilobyte (text mostly of ASCII characters),
 * which no UTF-8 text of evalgap's kind has. Read as UTF-8 it would be one bad line per line.
 */
export function utf16Of(buf: Buffer): string | null {
  if (buf.length >= 2 && buf[0] === 0xff && buf[1] === 0xfe) return 'little-endian, with a byte-order mark';
  if (buf.length >= 2 && buf[0] === 0xfe && buf[1] === 0xff) return 'big-endian, with a byte-order mark';
  const n = Math.min(buf.length, 1024) & ~1;
  if (n < 8) return null;
  let even = 0;
  let odd = 0;
  for (let i = 0; i < n; i += 2) {
    if (buf[i] === 0) even++;
    if (buf[i + 1] === 0) odd++;
  }
  const pairs = n / 2;
  if (odd >= 0.9 * pairs && even === 0) return 'little-endian';
  if (even >= 0.9 * pairs && odd === 0) return 'big-endian';
  return null;
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
