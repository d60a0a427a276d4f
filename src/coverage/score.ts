/**
 * Offline scoring (`evalgap score`): a JSONL file of queries → one result per line, with the
 * same assignment the stream makes (nearest cluster, runner-up, coverage score, covered).
 * Each line is validated with zod; a bad line yields an error result with its reason, in place,
 * so the output has exactly one line per non-blank input line.
 */
import { z } from 'zod';
import type { Embedder } from '../embed/embedder.js';
import type { CoverageAssigner } from './model.js';

export interface QueryLine {
  line: number;
  id?: string;
  text: string;
}

export interface BadLine {
  line: number;
  error: string;
}

const idSchema = z.union([z.string(), z.number()]).optional();

/** Parse one JSONL line into a query (or the reason it is not one). */
export function parseQueryLine(raw: string, line: number, textField: string): QueryLine | BadLine {
  let obj: unknown;
  try {
    obj = JSON.parse(raw);
  } catch (e) {
    return { line, error: `invalid JSON: ${(e as Error).message}` };
  }
  const schema = z.object({ [textField]: z.string().trim().min(1, 'is empty'), id: idSchema }).passthrough();
  const p = schema.safeParse(obj);
  if (!p.success) {
    const i = p.error.issues[0];
    if (i.path.length === 0) {
      return { line, error: `expected a JSON object${i.code === 'invalid_type' ? `, found ${i.received}` : ''}` };
    }
    const field = `field "${i.path.join('.')}"`;
    if (i.code === 'invalid_type') {
      if (i.received === 'undefined') return { line, error: `${field} is missing` };
      const want = i.path[0] === textField ? 'a string' : 'a string or a number';
      return { line, error: `${field} must be ${want}, found ${i.received}` };
    }
    return { line, error: `${field} ${i.message}` };
  }
  const text = (p.data as Record<string, string>)[textField].trim();
  const id = p.data.id;
  return id === undefined ? { line, text } : { line, id: String(id), text };
}

export interface ScoredLine {
  line: number;
  id?: string;
  cluster: number;
  label: string;
  similarity: number;
  runnerUp: number;
  runnerUpSimilarity: number | null;
  coverage: number;
  threshold: number;
  covered: boolean;
}

const round = (x: number) => Math.round(x * 1e6) / 1e6;

/** Score parsed queries in chunks, calling `emit` with each result in input order. */
export async function scoreQueries(
  items: readonly (QueryLine | BadLine)[],
  embedder: Embedder,
  assigner: CoverageAssigner,
  emit: (r: ScoredLine | BadLine) => void,
  chunk = 256,
): Promise<{ scored: number; bad: number; uncovered: number }> {
  const { clusters } = assigner.model.manifest;
  let scored = 0;
  let bad = 0;
  let uncovered = 0;
  for (let s = 0; s < items.length; s += chunk) {
    const part = items.slice(s, s + chunk);
    const good = part.filter((x): x is QueryLine => 'text' in x);
    const vectors = good.length ? (await embedder.embed(good.map((g) => g.text))).vectors : new Float32Array(0);
    const res = good.length ? assigner.assign(vectors, good.length) : null;
    let gi = 0;
    for (const it of part) {
      if (!('text' in it)) {
        bad++;
        emit(it);
        continue;
      }
      const i = gi++;
      const c = res!.cluster[i];
      const ru = res!.runnerUp[i];
      const covered = res!.covered[i] === 1;
      scored++;
      if (!covered) uncovered++;
      emit({
        line: it.line,
        ...(it.id !== undefined ? { id: it.id } : {}),
        cluster: c,
        label: clusters[c].label,
        similarity: round(res!.similarity[i]),
        runnerUp: ru,
        runnerUpSimilarity: ru < 0 ? null : round(res!.runnerUpSimilarity[i]),
        coverage: round(res!.coverage[i]),
        threshold: round(assigner.thresholdOf(vectors, i, c)),
        covered,
      });
    }
  }
  return { scored, bad, uncovered };
}
