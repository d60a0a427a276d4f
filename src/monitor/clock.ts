/**
 * Where a window sits on the monitor's clock: the one computation every rule family starts from
 * (the windows a family receives share one start and end). Pure.
 */

export interface WindowClock {
  start: string;
  end: string;
  /** the window's start, ms since the epoch */
  t0: number;
  /** the window's length, ms (at least a second) */
  windowMs: number;
  /** the window's index on the clock (t0 / windowMs) */
  widx: number;
  /** windows in `arlDays` days: the false-alarm budget's horizon counted in windows */
  arlWindows: number;
}

export function windowClock(w: { start: string; end: string }, arlDays: number): WindowClock {
  const t0 = Date.parse(w.start);
  const windowMs = Math.max(1000, Date.parse(w.end) - t0);
  return { start: w.start, end: w.end, t0, windowMs, widx: Math.floor(t0 / windowMs), arlWindows: (arlDays * 86_400_000) / windowMs };
}
