/**
 * Periodic gap discovery inside `evalgap run`: every `everyMs`, one pass over the last `periodMs`
 * for all agents together and one per agent seen in that period, each stored. A pass that fails
 * is logged and retried at the next tick; passes never overlap. The clustering runs in a worker
 * thread (a pass at 100k uncovered rows held the consumer's event loop 7–12 s, long enough to miss
 * heartbeats); the reads and writes go through the consumer's own store session, whose engine
 * calls run off the event loop. stop() terminates a pass in progress (nothing of it is stored).
 *
 * Several `run` instances of one consumer group share the tables: only the one `leads()` names
 * passes (the caller elects it through Kafka, src/ingest/election.ts), and a scope whose latest
 * stored discovery is younger than half the interval is skipped, so a new leader right after a
 * handover (or two that briefly both lead) does not repeat the round the other just stored. Each
 * pass would otherwise cost every instance the same work, and two passes overlapping in time would
 * store a new topic under two gap ids (a new gap's id depends on when it was found).
 */
import type { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { coverageByAgent, latestDiscoveryAt, type StoreWriter } from '../store/gaps.js';
import { DAY_MS, discoverGaps } from './run.js';

export interface DiscoverySchedule {
  /** run one round now (also what the timer calls); resolves when it is done */
  runOnce(): Promise<void>;
  stop(): Promise<void>;
}

export interface DiscoveryScheduleOptions {
  everyMs: number;
  periodMs?: number;
  logger: Logger;
  modelsDir?: string;
  /** whether this instance runs the passes (its election's verdict); absent: always */
  leads?: () => boolean;
  /** a scope whose latest stored discovery is younger than this is skipped (default everyMs / 2) */
  freshMs?: number;
}

export function scheduleDiscovery(store: StoreWriter, opts: DiscoveryScheduleOptions): DiscoverySchedule {
  const periodMs = opts.periodMs ?? 7 * DAY_MS;
  const freshMs = opts.freshMs ?? opts.everyMs / 2;
  let current: Promise<void> | null = null;
  let stopped = false;
  const started: Worker[] = [];
  const round = async () => {
    if (opts.leads && !opts.leads()) {
      opts.logger.debug('gap discovery: another instance of the group leads it; skipped');
      return;
    }
    const now = Date.now();
    const agents = (await coverageByAgent(store, { since: now - periodMs, until: now })).map((a) => a.agent);
    for (const agent of ['', ...agents.filter(Boolean)]) {
      if (stopped || (opts.leads && !opts.leads())) return;
      const last = freshMs > 0 ? await latestDiscoveryAt(store, agent) : null;
      if (last !== null && Date.now() - last < freshMs) {
        opts.logger.info({ scope: agent || '(all agents)', storedMinutesAgo: Math.round((Date.now() - last) / 60_000) }, 'gap discovery skipped: a recent one is stored');
        continue;
      }
      const r = await discoverGaps(store, { since: now - periodMs, now, agent: agent || undefined, thread: { started }, modelsDir: opts.modelsDir });
      started.length = 0;
      opts.logger.info(
        { scope: agent || '(all agents)', gaps: r.gaps.filter((g) => g.status !== 'closed').length, grouped: r.grouped, ms: r.ms },
        'gap discovery',
      );
    }
  };
  const runOnce = () => {
    current ??= round()
      .catch((e) => {
        if (!stopped) opts.logger.warn({ err: e }, 'gap discovery failed; retrying at the next interval');
      })
      .finally(() => {
        current = null;
      });
    return current;
  };
  const timer = opts.everyMs > 0 ? setInterval(() => void runOnce(), opts.everyMs) : null;
  timer?.unref();
  return {
    runOnce,
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await Promise.all(started.map((w) => w.terminate()));
      await current;
    },
  };
}
