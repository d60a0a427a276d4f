/**
 * Hot reload of the coverage model in a running `evalgap run`.
 *
 * `--model` may name a model folder, a symlink to one (e.g. models/coverage/current, repointed by
 * `evalgap deploy`), or a pointer file holding a folder path (relative to the file's folder). The
 * watcher notices a change through fs.watch and a periodic check (fs.watch misses events on some
 * file systems), loads and validates the new model off the message path, registers its clusters in
 * the store, and only then swaps it in. The ingest service reads `current()` once per batch, so a
 * batch is scored by one model and every row carries the version that scored it; no message is
 * held back or lost by a swap. A model that fails to load (corrupt, another embedding model, a
 * half-written folder, values no fit produces: src/coverage/model-check.ts) is refused with one
 * log line and the metrics evalgap_coverage_model_refused_total / evalgap_coverage_model_refused,
 * and the one in use is kept.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { CoverageAssigner, loadCoverageModel, ModelLoadError, type LoadOptions } from '../coverage/model.js';
import type { ClusterRow } from '../store/store.js';
import type { IngestMetrics } from './metrics.js';

/** Where the ingest service gets the assigner of the next batch from. */
export interface AssignerSource {
  current(): CoverageAssigner;
}

/** The coverage_clusters rows of a model. */
export function clusterRows(a: CoverageAssigner): ClusterRow[] {
  return a.model.manifest.clusters.map((c) => ({
    model_version: a.version,
    cluster: c.id,
    label: c.label,
    size: c.size,
    share: c.share,
    examples: c.examples,
  }));
}

/** The model folder `p` names: itself, a symlink's target, or a pointer file's content. */
export function resolveModelDir(p: string): string {
  const st = fs.statSync(p); // follows symlinks
  if (st.isDirectory()) return fs.realpathSync(p);
  const target = fs.readFileSync(p, 'utf8').trim();
  if (!target) throw new Error(`model pointer file ${p} is empty`);
  return fs.realpathSync(path.resolve(path.dirname(fs.realpathSync(p)), target));
}

export interface ModelWatchOptions extends LoadOptions {
  logger: Logger;
  /** called with a new model before it is swapped in (e.g. register its clusters); a throw refuses it for now */
  beforeSwap?: (next: CoverageAssigner) => Promise<void>;
  /** called after a swap */
  onSwap?: (next: CoverageAssigner, prev: CoverageAssigner) => void;
  /** periodic check, ms (default 5000) */
  pollMs?: number;
  /** counted when a new model is refused */
  metrics?: Pick<IngestMetrics, 'modelRefused' | 'modelRefusedNow'>;
}

export type CheckResult = 'unchanged' | 'swapped' | 'same-version' | 'refused';

export class ModelWatcher implements AssignerSource {
  private assigner: CoverageAssigner;
  private fingerprint: string;
  private refused = '';
  private timer: NodeJS.Timeout | null = null;
  private watchers: fs.FSWatcher[] = [];
  private checking: Promise<CheckResult> | null = null;
  private again = false;
  private debounce: NodeJS.Timeout | null = null;
  /** swaps done, for tests and logs */
  swaps = 0;

  /** Load the model `modelPath` names now (a bad one throws: there is nothing to keep). */
  constructor(
    readonly modelPath: string,
    private readonly opts: ModelWatchOptions,
  ) {
    let dir: string;
    try {
      dir = resolveModelDir(modelPath);
    } catch (e) {
      throw new ModelLoadError(`no coverage model at ${modelPath}: ${(e as Error).message}`);
    }
    this.fingerprint = this.fingerprintOf(dir);
    this.assigner = new CoverageAssigner(loadCoverageModel(dir, opts));
  }

  current(): CoverageAssigner {
    return this.assigner;
  }

  private fingerprintOf(dir: string): string {
    const st = fs.statSync(path.join(dir, 'manifest.json'), { throwIfNoEntry: false });
    return `${dir}|${st ? `${st.mtimeMs}|${st.size}` : 'none'}`;
  }

  /** Watch for a new model: fs.watch on the path's folder and on the model folder, and a periodic check. */
  start(): void {
    const poll = this.opts.pollMs ?? 5000;
    this.timer = setInterval(() => void this.check(), poll);
    this.timer.unref();
    this.rewatch();
  }

  private rewatch(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    const trigger = () => {
      if (this.debounce) clearTimeout(this.debounce);
      this.debounce = setTimeout(() => void this.check(), 150);
      this.debounce.unref();
    };
    const base = path.basename(this.modelPath);
    const targets: [string, (f: string | null) => boolean][] = [
      [path.dirname(path.resolve(this.modelPath)), (f) => f === null || f === base],
      [this.fingerprint.split('|')[0], (f) => f === null || f === 'manifest.json'],
    ];
    for (const [dir, wanted] of targets) {
      try {
        const w = fs.watch(dir, { persistent: false }, (_e, f) => {
          if (wanted(f === null ? null : String(f))) trigger();
        });
        w.on('error', () => w.close()); // the periodic check goes on
        this.watchers.push(w);
      } catch {
        // not watchable here: the periodic check covers it
      }
    }
  }

  /** Look for a new model now; at most one check runs at a time (one asked meanwhile runs after). */
  check(): Promise<CheckResult> {
    if (this.checking) {
      this.again = true;
      return this.checking;
    }
    this.checking = this.checkOnce().finally(() => {
      this.checking = null;
      if (this.again) {
        this.again = false;
        void this.check();
      }
    });
    return this.checking;
  }

  private async checkOnce(): Promise<CheckResult> {
    const log = this.opts.logger;
    let dir: string;
    let fp: string;
    try {
      dir = resolveModelDir(this.modelPath);
      fp = this.fingerprintOf(dir);
    } catch (e) {
      return this.refuse(`cannot resolve ${this.modelPath}`, (e as Error).message);
    }
    if (fp === this.fingerprint) {
      if (this.refused) {
        // pointed back at the model in use: nothing is refused any more
        this.refused = '';
        this.opts.metrics?.modelRefusedNow.set(0);
      }
      return 'unchanged';
    }
    if (fp === this.refused) return 'refused'; // the same bad model: not loaded again until it changes
    let next: CoverageAssigner;
    const t = performance.now();
    try {
      next = new CoverageAssigner(loadCoverageModel(dir, this.opts));
    } catch (e) {
      return this.refuse(fp, (e as Error).message, dir);
    }
    const prev = this.assigner;
    const movedDir = fp.split('|')[0] !== this.fingerprint.split('|')[0];
    if (next.version === prev.version) {
      this.fingerprint = fp;
      this.refused = '';
      this.opts.metrics?.modelRefusedNow.set(0);
      if (movedDir) this.rewatch();
      return 'same-version';
    }
    try {
      await this.opts.beforeSwap?.(next);
    } catch (e) {
      log.warn({ err: e, model: next.version }, 'new coverage model not swapped in yet: registering it failed; will retry');
      return 'unchanged';
    }
    this.assigner = next;
    this.fingerprint = fp;
    this.refused = '';
    this.opts.metrics?.modelRefusedNow.set(0);
    this.swaps++;
    if (movedDir) this.rewatch();
    log.info(
      { from: prev.version, to: next.version, dir, loadMs: Math.round(performance.now() - t) },
      'coverage model reloaded: batches from now on are scored by the new model',
    );
    this.opts.onSwap?.(next, prev);
    return 'swapped';
  }

  private refuse(key: string, reason: string, dir?: string): CheckResult {
    if (key !== this.refused) {
      this.refused = key;
      this.opts.metrics?.modelRefused.inc();
      this.opts.metrics?.modelRefusedNow.set(1);
      this.opts.logger.error(
        { path: this.modelPath, dir, reason, keeping: this.assigner.version },
        'new coverage model refused; keeping the one in use',
      );
    }
    return 'refused';
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}

/** deploy cannot repoint `current` (a user's folder or file is in its place) */
export class DeployError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeployError';
  }
}

/**
 * Deploy a model: point `current` (a symlink) at `modelDir`, atomically (a new symlink renamed
 * over the old one), after the checks a running `evalgap run` applies before swapping it in: it
 * loads (checksums, values), was fitted with the installed embedding model, and builds an assigner
 * (tag regions agree with its cases). Returns the model's version.
 */
export function deployModel(modelDir: string, current: string, opts: LoadOptions & Required<Pick<LoadOptions, 'expectEmbedding'>>): string {
  const m = loadCoverageModel(modelDir, opts);
  new CoverageAssigner(m);
  const parent = path.dirname(path.resolve(current));
  fs.mkdirSync(parent, { recursive: true });
  const st = fs.lstatSync(current, { throwIfNoEntry: false });
  if (st && !st.isSymbolicLink()) {
    throw new DeployError(`${current} exists and is not a symlink but a ${st.isDirectory() ? 'folder' : 'file'}; deploy repoints a symlink (move it away first, or give another --current)`);
  }
  const target = path.relative(parent, path.resolve(modelDir)) || '.';
  const tmp = path.join(parent, `.${path.basename(current)}.${process.pid}.${Date.now()}`);
  fs.symlinkSync(target, tmp, 'dir');
  fs.renameSync(tmp, current);
  return m.manifest.version;
}
