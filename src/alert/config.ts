/**
 * The monitor's config file (JSON): evaluation timing, the rules handed to the detectors, the
 * alert lifecycle, and the webhook receivers. Validated with zod; a bad file fails at start and
 * names the key. Webhook secrets come from the environment or a file (or, discouraged, inline);
 * they are resolved here and never logged (`describeMonitorConfig` prints a safe summary).
 */
import fs from 'node:fs';
import path from 'node:path';
import { MonitorOptionsSchema } from '../monitor/rules.js';
import { AgentRulesOptionsSchema } from '../monitor/agent-rules.js';
import { GuardConfigSchema, type GuardConfig } from '../compare/guard.js';
import { WeightedScoreOptionsSchema } from '../monitor/score-rules.js';
import { NovelSessionsOptionsSchema } from '../monitor/session-novel.js';
import { z } from 'zod';

const duration = z.number().int().positive();

export const ReceiverSchema = z
  .object({
    /** a short name: it names the dispatcher's consumer group and the metrics label */
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (at most 64)'),
    url: z.string().url(),
    /** the Standard Webhooks secret (base64, optionally prefixed whsec_); prefer secretEnv or secretFile */
    secret: z.string().min(1).optional(),
    /** name of an environment variable holding the secret */
    secretEnv: z.string().min(1).optional(),
    /** a file holding the secret (surrounding whitespace ignored) */
    secretFile: z.string().min(1).optional(),
    /** evalgap: the JSON payload documented by schemas/alert-payload.schema.json; slack: a Slack incoming-webhook body */
    format: z.enum(['evalgap', 'slack']).default('evalgap'),
    /** per request */
    timeoutMs: duration.default(10_000),
    /** first retry delay; each next one doubles (with jitter) up to maxBackoffMs */
    minBackoffMs: duration.default(1_000),
    maxBackoffMs: duration.default(300_000),
    /** a notification older than this (since it was written to the outbox) is given up, with a log line and a metric */
    maxAgeSeconds: duration.default(86_400),
    /** extra HTTP headers (e.g. an Authorization for a proxy); values are never logged */
    headers: z.record(z.string()).default({}),
  })
  .strict()
  .superRefine((r, ctx) => {
    const n = [r.secret, r.secretEnv, r.secretFile].filter((v) => v !== undefined).length;
    if (n !== 1) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'give exactly one of secret, secretEnv, secretFile' });
    if (r.maxBackoffMs < r.minBackoffMs) ctx.addIssue({ code: 'custom', path: ['maxBackoffMs'], message: 'must be ≥ minBackoffMs' });
  });

export const MonitorFileSchema = z
  .object({
    /** evaluation window length in seconds: a multiple of the 30-second aggregate buckets that divides an hour */
    windowSeconds: z
      .number()
      .int()
      .positive()
      .refine((s) => s % 30 === 0 && 3600 % s === 0, 'a multiple of 30 (the aggregates are 30-second buckets) that divides 3600 (30, 60, 120, 300, 600, …, 3600)')
      .default(30),
    /**
     * a session (requests sharing a session_id) counts as closed once it has been idle this long in
     * event time; closed sessions measure how much evidence a session repeats (docs/monitor.md)
     */
    sessionIdleSeconds: z.number().int().min(30).max(86400).default(300),
    /** a window is evaluated once its end is this far in the past (event time): rows later than that count in a later window */
    latenessSeconds: z.number().int().min(0).default(120),
    /** how often the leader looks for newly closed windows */
    pollSeconds: z.number().positive().default(15),
    /** late rows are looked for in buckets up to this far back (per-day totals kept in the checkpoint) */
    lateHorizonDays: z.number().int().min(1).max(90).default(7),
    /** where a monitor without a checkpoint starts: the earliest stored bucket, now, or an ISO time */
    start: z.union([z.enum(['earliest', 'now']), z.string().datetime({ offset: true })]).default('earliest'),
    /** send notifications for windows that closed before the monitor first started (a backfill); otherwise they are only recorded */
    notifyBackfill: z.boolean().default(false),
    /** Kafka topics and groups */
    controlTopic: z.string().min(1).default('evalgap.monitor.control'),
    electionGroup: z.string().min(1).default('evalgap-monitor'),
    alertsTopic: z.string().min(1).default('evalgap.alerts'),
    /** the dispatcher of receiver R joins group `${dispatchGroupPrefix}.${R}` */
    dispatchGroupPrefix: z.string().min(1).default('evalgap-dispatch'),
    /** example queries per cluster in an alert */
    examples: z.number().int().min(0).max(20).default(3),
    /** alert lifecycle (Alertmanager-style) */
    lifecycle: z
      .object({
        /** re-send a still-firing alert every so often; 0 = never */
        repeatIntervalMinutes: z.number().min(0).default(0),
        /** a global cluster_mix alert mutes the per-cluster alerts of the same agent it explains */
        inhibit: z.boolean().default(true),
      })
      .strict()
      .default({}),
    /** rule parameters of the detectors (docs/alerts.md, "Rules and guarantees"); a bad key fails at start */
    rules: MonitorOptionsSchema.default({}),
    /** the agent rules' parameters (depth_mix, untested_chains, chain_failure; docs/traces.md) */
    agentRules: AgentRulesOptionsSchema.default({}),
    /** the weighted_score rule (src/monitor/score-rules.ts): the eval score reweighted to production traffic falls; docs/alerts.md#parameters */
    weightedScore: WeightedScoreOptionsSchema.default({}),
    /** the novel_sessions rule (src/monitor/session-novel.ts): whole sessions far below the eval set; docs/monitor.md#novel-topics-one-session-at-a-time-novel_sessions */
    novelSessions: NovelSessionsOptionsSchema.default({}),
    receivers: z.array(ReceiverSchema).default([]),
    /**
     * a canary guard (docs/compare.md): its rollback conditions are the version_regression rule,
     * evaluated at every poll; a file path (relative to this file) or the guard object inline
     */
    guard: z.union([z.string().min(1), z.unknown()]).optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.receivers.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['receivers', i, 'name'], message: `duplicate receiver name ${r.name}` });
      seen.add(r.name);
    });
  });

export type MonitorFileConfig = z.infer<typeof MonitorFileSchema>;
export type ReceiverConfig = z.infer<typeof ReceiverSchema>;
export interface ResolvedReceiver extends Omit<ReceiverConfig, 'secret' | 'secretEnv' | 'secretFile'> {
  secret: string;
}
export interface MonitorConfig extends Omit<MonitorFileConfig, 'receivers' | 'guard'> {
  receivers: ResolvedReceiver[];
  /** the canary guard in force (version_regression), if any */
  guard?: GuardConfig;
}

export class MonitorConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MonitorConfigError';
  }
}

function fromZod(where: string, e: z.ZodError): MonitorConfigError {
  return new MonitorConfigError(
    `invalid monitor config ${where}:\n` + e.issues.map((i) => `  - ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'),
  );
}

const NAME_KEYS = ['controlTopic', 'electionGroup', 'alertsTopic', 'dispatchGroupPrefix'] as const;

/**
 * The monitor's Kafka names for the deployment whose consumer group is `group` (EVALGAP_GROUP):
 * one deployment's monitors elect among themselves and deliver only their own alerts, so a second
 * deployment on the same broker (another group) has its own. For the default group `evalgap` they
 * are the names of earlier releases. Characters a topic name cannot hold become `_`.
 */
export function monitorNames(group: string): Pick<MonitorFileConfig, (typeof NAME_KEYS)[number]> {
  const t = group.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 200);
  return { controlTopic: `${t}.monitor.control`, electionGroup: `${group}-monitor`, alertsTopic: `${t}.alerts`, dispatchGroupPrefix: `${group}-dispatch` };
}

/** What a monitor config is read for, beyond the file itself. */
export interface MonitorConfigUse {
  /** the deployment's consumer group (EVALGAP_GROUP): the Kafka names the file does not set derive from it (`monitorNames`) */
  group?: string;
  /** resolve the receivers' secrets (default); false for --status and --backtest, which deliver nothing: no receiver is kept */
  secrets?: boolean;
}

/** Validate a parsed config object and resolve the receivers' secrets. */
export function parseMonitorConfig(raw: unknown, env: Record<string, string | undefined> = process.env, where = '', baseDir = process.cwd(), use: MonitorConfigUse = {}): MonitorConfig {
  if (raw && typeof raw === 'object' && 'windowMinutes' in raw) {
    // the key of earlier versions (5-minute windows): say what replaced it rather than "unrecognized"
    throw new MonitorConfigError(`invalid monitor config ${where}:\n  - windowMinutes: replaced by windowSeconds (default 30); e.g. "windowSeconds": ${Number((raw as { windowMinutes: unknown }).windowMinutes) * 60 || 300}`);
  }
  const p = MonitorFileSchema.safeParse(raw ?? {});
  if (!p.success) throw fromZod(where, p.error);
  // without secrets (nothing is delivered) the receivers are validated as written, not kept
  const receivers = use.secrets === false ? [] : p.data.receivers.map((r, i) => {
    const { secret, secretEnv, secretFile, ...rest } = r;
    let value = secret;
    if (secretEnv !== undefined) {
      value = env[secretEnv];
      if (!value) throw new MonitorConfigError(`invalid monitor config ${where}:\n  - receivers.${i}.secretEnv: environment variable ${secretEnv} is not set`);
    }
    if (secretFile !== undefined) {
      const f = path.resolve(baseDir, secretFile);
      try {
        value = fs.readFileSync(f, 'utf8').trim();
      } catch (e) {
        throw new MonitorConfigError(`invalid monitor config ${where}:\n  - receivers.${i}.secretFile: cannot read ${f}: ${(e as Error).message}`);
      }
    }
    if (!value || !isValidSecret(value)) {
      throw new MonitorConfigError(`invalid monitor config ${where}:\n  - receivers.${i}.secret: not a Standard Webhooks secret (base64 of 24–64 bytes, optionally prefixed whsec_)`);
    }
    return { ...rest, secret: value };
  });
  const { guard, ...rest } = p.data;
  if (use.group !== undefined) {
    const derived = monitorNames(use.group);
    const given = raw && typeof raw === 'object' ? (raw as Record<string, unknown>) : {};
    for (const k of NAME_KEYS) if (given[k] === undefined) rest[k] = derived[k];
  }
  if (guard === undefined) return { ...rest, receivers };
  return { ...rest, receivers, guard: typeof guard === 'string' ? loadGuardConfig(path.resolve(baseDir, guard)) : parseGuard(guard, `${where} (guard)`) };
}

function parseGuard(raw: unknown, where: string): GuardConfig {
  const r = GuardConfigSchema.safeParse(raw);
  if (!r.success) throw new MonitorConfigError(`invalid guard config ${where}:\n` + r.error.issues.map((i) => `  - ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n'));
  return r.data;
}

/** Read and validate a canary guard file (docs/compare.md); a bad file names the key. */
export function loadGuardConfig(file: string): GuardConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new MonitorConfigError(`cannot read the guard config ${file}: ${(e as Error).message}`);
  }
  return parseGuard(raw, file);
}

/** Read and validate a JSON config file; no file → all defaults, no receivers. */
export function loadMonitorConfig(file: string | undefined, env: Record<string, string | undefined> = process.env, use: MonitorConfigUse = {}): MonitorConfig {
  if (!file) return parseMonitorConfig({}, env, '(defaults)', process.cwd(), use);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new MonitorConfigError(`cannot read monitor config ${file}: ${(e as Error).message}`);
  }
  return parseMonitorConfig(raw, env, file, path.dirname(path.resolve(file)), use);
}

export function isValidSecret(s: string): boolean {
  const b = s.startsWith('whsec_') ? s.slice(6) : s;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b)) return false;
  const n = Buffer.from(b, 'base64').length;
  return n >= 24 && n <= 64;
}

/** A new random secret in the whsec_ form. */
export function newSecret(): string {
  return 'whsec_' + Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64');
}

/** Safe to print: no secrets, no header values. */
export function describeMonitorConfig(c: MonitorConfig): Record<string, unknown> {
  return {
    ...c,
    receivers: c.receivers.map((r) => ({ ...r, secret: '[redacted]', headers: Object.keys(r.headers) })),
  };
}
