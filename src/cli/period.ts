/**
 * The one parser of `--since` / `--until` for every command that reads a period (gaps,
 * export-gaps, report, agent-coverage, compare, estimate, plan): a duration back from now
 * (45s, 30m, 12h, 7d, 2w) or an ISO-8601 date or date-time (2024-05-01, 2024-05-01T12:00,
 * 2024-05-01T12:00:00+02:00). A date-time without a zone is UTC, whatever the machine's zone.
 */
import { InvalidArgumentError } from 'commander';

const DURATION = /^(\d+(?:\.\d+)?)\s*([smhdw])$/;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;

/** The words every period flag's error and help use. */
export const TIME_FORMS = 'a duration back from now (30m, 12h, 7d, 2w) or an ISO-8601 date (2024-05-01, 2024-05-01T12:00Z; no zone: UTC)';

export function parseTimeArg(v: string, flag: string, now = new Date()): Date {
  const s = v.trim();
  const m = DURATION.exec(s);
  if (m && Number(m[1]) > 0) return new Date(now.getTime() - Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
  const iso = ISO_DATE.exec(s);
  if (iso) {
    const d = new Date(s.length === 10 || iso[1] ? s : `${s.replace(' ', 'T')}Z`);
    if (!Number.isNaN(d.getTime())) return d;
  }
  throw new InvalidArgumentError(`${flag} expects ${TIME_FORMS}; got "${v}"`);
}

/** A `--since` value (the start of a period). */
export function parseSince(s: string, now = new Date()): Date {
  return parseTimeArg(s, '--since', now);
}

/** The period of `--since`/`--until` (until defaults to now); since must come before until. */
export function parsePeriod(since: string, until: string | undefined, now = new Date()): { since: Date; until: Date } {
  const u = until === undefined ? now : parseTimeArg(until, '--until', now);
  const from = parseTimeArg(since, '--since', now);
  if (from.getTime() >= u.getTime()) {
    throw new InvalidArgumentError(`--since (${from.toISOString()}) must be before --until (${u.toISOString()})`);
  }
  return { since: from, until: u };
}
