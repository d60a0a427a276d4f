/**
 * Eval results in: JSONL, one case per line, `{"id": …, "passed": true}` or `{"id": …, "score": 0.8}`,
 * optionally with per-metric `"scores": {"faithfulness": 0.8, …}` (each in [0, 1]). Matched to the
 * coverage model's cases by id. Pure: text and cases in, rows and errors out.
 */
import { z } from 'zod';
import { forEachJsonLine } from '../coverage/evalset.js';

const unit = z.number().finite().min(0).max(1);

export const ResultLineSchema = z
  .object({
    id: z.union([z.string().trim().min(1), z.number().finite()]).transform(String),
    passed: z.boolean().optional(),
    score: unit.optional(),
    scores: z.record(unit).optional(),
  })
  .passthrough()
  .refine((x) => x.passed !== undefined || x.score !== undefined || (x.scores && Object.keys(x.scores).length > 0), {
    message: 'needs "passed" (boolean), "score" (0–1) or "scores" ({"metric": 0–1, …})',
  });

export interface ParsedResult {
  line: number;
  id: string;
  passed: boolean | null;
  score: number | null;
  scores: Record<string, number>;
  /** what the estimate uses: passed (1/0), else score; null when only per-metric scores are given */
  value: number | null;
}

export interface ResultsParse {
  results: ParsedResult[];
  errors: { line: number; reason: string }[];
}

export function parseResults(content: string): ResultsParse {
  if (content.charCodeAt(0) === 0xfeff) content = content.slice(1);
  const results: ParsedResult[] = [];
  const errors: ResultsParse['errors'] = [];
  const seen = new Map<string, number>();
  forEachJsonLine(content, errors, (obj, line) => {
    const p = ResultLineSchema.safeParse(obj);
    if (!p.success) {
      errors.push({ line, reason: p.error.issues.map((x) => (x.path.length ? `${x.path.join('.')}: ` : '') + x.message).join('; ') });
      return;
    }
    const prev = seen.get(p.data.id);
    if (prev !== undefined) {
      errors.push({ line, reason: `case id "${p.data.id}" already has a result on line ${prev}` });
      return;
    }
    seen.set(p.data.id, line);
    const passed = p.data.passed ?? null;
    const score = p.data.score ?? null;
    results.push({
      line,
      id: p.data.id,
      passed,
      score,
      scores: p.data.scores ?? {},
      value: passed !== null ? (passed ? 1 : 0) : score,
    });
  });
  return { results, errors };
}

export interface MatchedResult extends ParsedResult {
  cluster: number;
  tags: string[];
}

/** Match results to the model's cases (`labels[i]` is case i's cluster); unmatched ids are returned, not dropped silently. */
export function matchResults(
  results: readonly ParsedResult[],
  cases: readonly { id: string; tags: string[] }[],
  labels: ArrayLike<number>,
): { matched: MatchedResult[]; unmatched: ParsedResult[] } {
  const byId = new Map(cases.map((c, i) => [c.id, i]));
  const matched: MatchedResult[] = [];
  const unmatched: ParsedResult[] = [];
  for (const r of results) {
    const i = byId.get(r.id);
    if (i === undefined) unmatched.push(r);
    else matched.push({ ...r, cluster: labels[i], tags: cases[i].tags });
  }
  return { matched, unmatched };
}
