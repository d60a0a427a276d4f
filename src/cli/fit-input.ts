/**
 * What `evalgap fit` fits: an eval-set file, or (`--add cases.jsonl --model DIR`) an existing
 * model's cases plus new ones, with the old model's parameters unless a flag overrides them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readAgentFile } from '../coverage/agent.js';
import { resolveModelDir } from '../ingest/model-watch.js';
import type { Command } from 'commander';
import { detectFormat, EvalSetError, parseEvalSet, type EvalCase } from '../coverage/evalset.js';
import { addFitOptions, mergeCases } from '../coverage/extend.js';
import type { FitOptions } from '../coverage/fit.js';
import { loadCoverageModel, type Manifest } from '../coverage/model.js';
import { escapeControl } from './format.js';
import { readTextInput, utf8Warning } from './input.js';

/** Read and parse an eval-set file; malformed lines are printed, and refused unless allowed. */
export function readEvalSetFile(file: string, textField: string, allowBadLines: boolean): EvalCase[] {
  if (!fs.existsSync(file)) throw new EvalSetError(`eval set ${file} does not exist`);
  const { text: content, invalid } = readTextInput(file, 'eval set');
  const warning = utf8Warning(file, invalid);
  if (warning) console.error(warning);
  const parsed = parseEvalSet(content, detectFormat(file, content), textField);
  // the reasons quote the input: control bytes of a binary file are shown, not sent to the terminal
  for (const e of parsed.errors.slice(0, 20)) console.error(escapeControl(`${file}:${e.line}: ${e.reason}`));
  if (parsed.errors.length > 20) console.error(`… and ${parsed.errors.length - 20} more malformed lines`);
  if (parsed.errors.length && !allowBadLines) {
    throw new EvalSetError(`${parsed.errors.length} malformed line(s) in ${file}; fix them or pass --allow-bad-lines`);
  }
  if (parsed.cases.length === 0) throw new EvalSetError(`${file} holds no eval cases`);
  return parsed.cases;
}

export interface FitInput {
  cases: EvalCase[];
  /** fit options that differ from the flags' (with --add: the old model's parameters) */
  options: Partial<FitOptions> & { source: string; textField: string };
  /** with --add: the model extended */
  base?: Manifest;
}

/**
 * The fit's input from the command line. With --add, flags the user did not give take the old
 * model's values (its k mode, seed, restarts, neighbours, target rate).
 */
export function fitInput(file: string | undefined, opts: Record<string, unknown>, cmd: Command): FitInput {
  const given = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  if (!opts.add) {
    if (opts.model) throw new EvalSetError('--model is only for --add (the model to extend)');
    if (!file) throw new EvalSetError('give an eval set to fit, or --add cases.jsonl --model DIR to extend a model');
    return {
      cases: readEvalSetFile(file, opts.textField as string, Boolean(opts.allowBadLines)),
      options: { source: path.basename(file), textField: opts.textField as string },
    };
  }
  if (file) throw new EvalSetError('with --add, give no eval-set argument: the cases come from --model and --add');
  if (!opts.model) throw new EvalSetError('--add needs --model DIR: the coverage model to extend');
  const base = loadCoverageModel(opts.model as string);
  const addFile = opts.add as string;
  const extra = readEvalSetFile(addFile, opts.textField as string, Boolean(opts.allowBadLines));
  // the depth and tools of the model's own cases come along (agent.json)
  const agentOld = new Map(readAgentFile(resolveModelDir(opts.model as string), base.manifest.version).map((e) => [e.id, e]));
  const old = base.cases.map((c) => {
    const a = agentOld.get(c.id);
    return { id: c.id, text: c.text, tags: c.tags ?? [], ...(a?.turn !== undefined ? { turn: a.turn } : {}), ...(a?.tools ? { tools: a.tools } : {}) };
  });
  const merged = mergeCases(old, extra);
  console.log(
    `extending ${base.manifest.version} (${old.length} cases) with ${addFile}: ${merged.added} new case(s)` +
      (merged.alreadyPresent ? `, ${merged.alreadyPresent} already in the model` : ''),
  );
  if (merged.added === 0) throw new EvalSetError(`${addFile} adds no case the model does not already hold`);
  const k = opts.k === 'auto' ? 'auto' : Number(opts.k);
  const options = addFitOptions(base.manifest, path.basename(addFile), {
    ...(given('k') ? { k } : {}),
    ...(given('seed') ? { seed: opts.seed as number } : {}),
    ...(given('restarts') ? { restarts: opts.restarts as number } : {}),
    ...(given('neighbours') ? { neighbours: opts.neighbours as number } : {}),
    ...(given('targetRate') ? { targetRate: opts.targetRate as number } : {}),
    ...(given('regions') ? { regions: opts.regions as 'auto' | 'clusters' | 'tags' } : {}),
    ...(given('nearDuplicateCosine') ? { nearDuplicateCosine: opts.nearDuplicateCosine as number } : {}),
  });
  return { cases: merged.cases, options, base: base.manifest };
}
