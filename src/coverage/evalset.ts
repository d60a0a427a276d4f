/**
 * Eval-set input: JSONL (one case per line) or CSV with a header. The query text is in the
 * field named by `textField` (default `query`); `id` and `tags` are optional.
 * Every malformed line is reported with its line number; nothing is silently dropped.
 */
import { z } from 'zod';

export interface EvalCase {
  id: string;
  text: string;
  tags: string[];
  /** conversation depth of the case (1 = first user message): `turn`, or `turns` (earlier user messages) + 1 */
  turn?: number;
  /** the tool calls the case expects, in order (`tools`: an array, or a string split on ; | or →) */
  tools?: string[];
}

export interface EvalSetParse {
  cases: EvalCase[];
  errors: { line: number; reason: string }[];
}

export class EvalSetError extends Error {}

const tagsSchema = z.union([z.array(z.string()), z.string()]).optional();
const turnSchema = z.union([z.number().int().min(1).max(100_000), z.string().regex(/^\s*\d+\s*$/).transform(Number).pipe(z.number().int().min(1).max(100_000))]).optional();
const turnsSchema = z.array(z.union([z.string(), z.object({}).passthrough()])).max(99_999).optional();
const toolsSchema = z.union([z.array(z.string().min(1).max(256)).max(1000), z.string().max(256_000)]).optional();

export function detectFormat(fileName: string, content: string): 'jsonl' | 'csv' {
  if (/\.csv$/i.test(fileName)) return 'csv';
  if (/\.(jsonl|ndjson|json)$/i.test(fileName)) return 'jsonl';
  return content.trimStart().startsWith('{') ? 'jsonl' : 'csv';
}

export function parseEvalSet(content: string, format: 'jsonl' | 'csv', textField = 'query'): EvalSetParse {
  if (content.charCodeAt(0) === 0xfeff) content = content.slice(1); // byte-order mark
  return format === 'csv' ? parseCsvEvalSet(content, textField) : parseJsonlEvalSet(content, textField);
}

function toCase(obj: Record<string, unknown>, textField: string, line: number): EvalCase | string {
  const text = obj[textField];
  if (typeof text !== 'string') return `field "${textField}" is missing or not a string`;
  if (!text.trim()) return `field "${textField}" is empty`;
  const tags = tagsSchema.safeParse(obj.tags);
  if (!tags.success) return 'field "tags" must be a string or an array of strings';
  const rawId = obj.id;
  const id = (typeof rawId === 'string' && rawId.trim()) || typeof rawId === 'number' ? String(rawId).trim() : `line-${line}`;
  const t = tags.data;
  const turn = turnSchema.safeParse(obj.turn === '' ? undefined : obj.turn);
  if (!turn.success) return 'field "turn" must be a whole number from 1 (the first user message)';
  const turns = turnsSchema.safeParse(obj.turns);
  if (!turns.success) return 'field "turns" must be an array of the earlier user messages';
  const tools = toolsSchema.safeParse(obj.tools === '' ? undefined : obj.tools);
  if (!tools.success) return 'field "tools" must be an array of tool names, or a string of names separated by ; | or →';
  const c: EvalCase = {
    id,
    text: text.trim(),
    tags: t === undefined ? [] : Array.isArray(t) ? t : t.split(/[;|]/).map((s) => s.trim()).filter(Boolean),
  };
  const depth = turn.data ?? (turns.data ? turns.data.length + 1 : undefined);
  if (depth !== undefined) c.turn = depth;
  if (tools.data !== undefined) {
    const names = Array.isArray(tools.data) ? tools.data : tools.data.split(/[;|→]/).map((s) => s.trim()).filter(Boolean);
    if (names.some((n) => n.length > 256)) return 'field "tools": a tool name is longer than 256 characters';
    c.tools = names;
  }
  return c;
}

/**
 * Each non-blank line of JSONL content, parsed: `fn` gets the value and its 1-based line number;
 * a line that is not JSON is reported in `errors` with its number and not passed on.
 */
export function forEachJsonLine(content: string, errors: { line: number; reason: string }[], fn: (obj: unknown, line: number) => void): void {
  content.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    if (!raw.trim()) return;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch (e) {
      errors.push({ line, reason: `invalid JSON: ${(e as Error).message}` });
      return;
    }
    fn(obj, line);
  });
}

function parseJsonlEvalSet(content: string, textField: string): EvalSetParse {
  const cases: EvalCase[] = [];
  const errors: EvalSetParse['errors'] = [];
  forEachJsonLine(content, errors, (obj, line) => {
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) {
      errors.push({ line, reason: 'expected a JSON object' });
      return;
    }
    const c = toCase(obj as Record<string, unknown>, textField, line);
    if (typeof c === 'string') errors.push({ line, reason: c });
    else cases.push(c);
  });
  return { cases, errors };
}

/**
 * RFC 4180 CSV: quoted fields may hold commas, quotes ("") and newlines. A quote left open at the
 * end of the input is reported as `unterminated` (the line its row starts on), and that row dropped.
 */
export function parseCsv(content: string): { rows: string[][]; lines: number[]; unterminated?: number } {
  const rows: string[][] = [];
  const lines: number[] = [];
  let row: string[] = [];
  let field = '';
  let inQuotes = false;
  let line = 1;
  let rowLine = 1;
  for (let i = 0; i < content.length; i++) {
    const ch = content[i];
    if (inQuotes) {
      if (ch === '"') {
        if (content[i + 1] === '"') {
          field += '"';
          i++;
        } else inQuotes = false;
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
      continue;
    }
    if (ch === '"' && field === '') inQuotes = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && content[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      lines.push(rowLine);
      row = [];
      field = '';
      line++;
      rowLine = line;
    } else field += ch;
  }
  if (inQuotes) return { rows, lines, unterminated: rowLine };
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
    lines.push(rowLine);
  }
  return { rows, lines };
}

function parseCsvEvalSet(content: string, textField: string): EvalSetParse {
  const { rows, lines, unterminated } = parseCsv(content);
  const cases: EvalCase[] = [];
  const errors: EvalSetParse['errors'] = [];
  if (unterminated !== undefined) {
    errors.push({ line: unterminated, reason: 'unterminated quoted field: a " is opened here and never closed' });
  }
  if (rows.length === 0) return { cases, errors };
  const header = rows[0].map((h) => h.trim());
  if (!header.includes(textField)) {
    throw new EvalSetError(`CSV header has no column "${textField}" (columns: ${header.join(', ')}); use --text-field`);
  }
  for (let r = 1; r < rows.length; r++) {
    const cells = rows[r];
    if (cells.length === 1 && cells[0].trim() === '') continue;
    if (cells.length !== header.length) {
      errors.push({ line: lines[r], reason: `expected ${header.length} columns, found ${cells.length}` });
      continue;
    }
    const obj: Record<string, unknown> = {};
    header.forEach((h, i) => (obj[h] = cells[i]));
    const c = toCase(obj, textField, lines[r]);
    if (typeof c === 'string') errors.push({ line: lines[r], reason: c });
    else cases.push(c);
  }
  return { cases, errors };
}
