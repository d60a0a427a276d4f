/**
 * `evalgap fit --add`: extend a coverage model with new eval cases. The new model is a full refit
 * on the old model's cases (its cases.jsonl, tags included) plus the new ones, with the old
 * model's parameters unless overridden; pure (no files, no embedding).
 */
import type { EvalCase } from './evalset.js';
import { EvalSetError } from './evalset.js';
import type { FitOptions } from './fit.js';
import type { Manifest } from './model.js';

export interface MergedCases {
  cases: EvalCase[];
  /** new cases taken */
  added: number;
  /** new cases already in the model (same id and text, or the same text under another id) */
  alreadyPresent: number;
}

const norm = (t: string) => t.toLowerCase().replace(/\s+/g, ' ').trim();

/**
 * Old cases first (in their order), then the new ones not already present. A new case whose id is
 * taken by an old case with another text is an error: ids name cases across model versions.
 */
export function mergeCases(old: readonly EvalCase[], extra: readonly EvalCase[]): MergedCases {
  const byId = new Map(old.map((c) => [c.id, c]));
  const texts = new Set(old.map((c) => norm(c.text)));
  const cases = [...old];
  const clashes: string[] = [];
  let alreadyPresent = 0;
  for (const c of extra) {
    const prev = byId.get(c.id);
    if (prev && norm(prev.text) !== norm(c.text)) {
      clashes.push(c.id);
      continue;
    }
    if (prev || texts.has(norm(c.text))) {
      alreadyPresent++;
      continue;
    }
    byId.set(c.id, c);
    texts.add(norm(c.text));
    cases.push(c);
  }
  if (clashes.length) {
    throw new EvalSetError(
      `${clashes.length} new case id(s) already name other cases in the model: ${clashes.slice(0, 5).join(', ')}` +
        `${clashes.length > 5 ? ', …' : ''}; give the new cases other ids`,
    );
  }
  return { cases, added: cases.length - old.length, alreadyPresent };
}

/** The parameters a refit with --add uses: the old model's, with `over` (flags given) on top. */
export function addFitOptions(
  m: Manifest,
  addSource: string,
  over: Partial<Pick<FitOptions, 'k' | 'seed' | 'restarts' | 'neighbours' | 'targetRate' | 'regions' | 'nearDuplicateCosine'>>,
): Omit<FitOptions, 'examples' | 'maxK' | 'nprobe'> {
  return {
    k: over.k ?? (m.params.kMode === 'auto' ? 'auto' : m.params.k),
    seed: over.seed ?? m.params.seed,
    restarts: over.restarts ?? m.params.restarts,
    neighbours: over.neighbours ?? m.params.neighbours,
    targetRate: over.targetRate ?? m.calibration.targetFalseUncoveredRate,
    nearDuplicateCosine: over.nearDuplicateCosine ?? m.calibration.nearDuplicateCosine,
    minClusterCases: m.calibration.minClusterCases,
    // a model calibrated before phrasing families is refitted with them (the default share)
    ...(m.calibration.phrasing ? { newPhrasingShare: m.calibration.phrasing.newShare } : {}),
    // decided again from the merged cases (exported gap cases carry their gap id as a tag)
    regions: over.regions ?? 'auto',
    source: `${m.evalSet.source} + ${addSource}`,
    textField: m.evalSet.textField,
  };
}
