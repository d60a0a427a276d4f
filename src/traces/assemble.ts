/**
 * Spans of one Kafka partition → completed traces, exactly once across restarts. Pure: the caller
 * passes offsets and, for idle flushes, the wall clock.
 *
 * A trace is held open until its root span (no parent) has arrived and the partition's event-time
 * watermark (the latest span end seen in it) has passed the root's end by `graceMs`, so child
 * spans exported after their parent still join it. A trace whose root never arrives is given up
 * once the watermark passes its last span by `maxHoldMs` (it goes to the dead-letter topic, spans
 * and all). When a partition receives nothing for a while, the caller flushes it (`flushIdle`):
 * traces with a root are emitted, root-less ones older than `maxHoldMs` by the clock are given up.
 * A span of a trace already emitted is late: it is counted and dropped (remembered for
 * `rememberMs` of event time).
 *
 * Exactly once: emission is a function of the partition's message sequence (offsets and span
 * times), except idle flushes, whose trace ids are recorded. The offset to commit is the first
 * offset of the oldest open trace (so a restart re-reads its spans), and the commit's metadata
 * carries the last offset processed (`h`) and the idle-flushed ids. After a restart the assembler
 * is restored from that metadata and replays from the committed offset: whatever it would emit
 * at an offset ≤ h, or whose id was idle-flushed, was emitted before and is not emitted again.
 * Emissions and the commit are written in one Kafka transaction by the caller.
 */
import type { Span } from './otlp.js';

export interface AssemblerOptions {
  /** how long after its root's end a trace waits (in event time) for late children */
  graceMs: number;
  /** a trace with no root is given up this long after its last span (event time, or the clock when idle) */
  maxHoldMs: number;
  /** how long (event time) emitted trace ids are remembered to recognise late spans */
  rememberMs: number;
  /** at most this many idle-flushed ids in the commit metadata; past it every open trace is flushed */
  maxIdleIds?: number;
}

export type Completion =
  | { kind: 'trace'; traceId: string; spans: Span[] }
  | { kind: 'incomplete'; traceId: string; spans: Span[]; reason: string };

interface OpenTrace {
  spans: Span[];
  firstOffset: bigint;
  /** the partition's watermark before the message at firstOffset (restored on replay) */
  watermarkBefore: number;
  root?: Span;
  lastEndMs: number;
  /** the caller's clock when the trace last received a span */
  touchedAt: number;
}

export interface CommitPoint {
  /** the offset to commit (the next one to read after a restart) */
  offset: string;
  metadata: string;
}

interface Meta {
  v: 1;
  h: string;
  /** the watermark just before the committed offset (null: none yet) */
  w: number | null;
  idle: string[];
}

export class PartitionAssembler {
  private open = new Map<string, OpenTrace>();
  private emitted = new Map<string, number>();
  private watermark = -Infinity;
  /** the last offset processed */
  private h = -1n;
  /** replay: emissions triggered at offsets ≤ this were made before the restart */
  private suppressUpTo = -1n;
  private suppressIds = new Set<string>();
  private idleIds: string[] = [];
  /** no open trace completes before the watermark reaches this (a lower bound; a scan refreshes it) */
  private nextDeadline = Infinity;
  /** spans dropped because their trace had been emitted already */
  lateSpans = 0;

  constructor(private readonly opts: AssemblerOptions) {}

  /**
   * Restore from the committed offset (the next to read; null: none committed) and the metadata
   * committed with it (null or foreign metadata: a fresh start from that offset).
   */
  restore(offset: string | null, metadata: string | null | undefined): void {
    if (offset !== null && /^\d+$/.test(offset)) this.h = BigInt(offset) - 1n;
    if (!metadata) return;
    let m: Meta;
    try {
      m = JSON.parse(metadata) as Meta;
    } catch {
      return;
    }
    if (m?.v !== 1 || typeof m.h !== 'string' || !/^-?\d+$/.test(m.h) || !Array.isArray(m.idle)) return;
    this.suppressUpTo = BigInt(m.h);
    if (typeof m.w === 'number' && Number.isFinite(m.w)) this.watermark = m.w;
    this.suppressIds = new Set(m.idle.filter((x) => typeof x === 'string'));
    this.idleIds = [...this.suppressIds];
  }

  /** Add one message's spans; returns the traces that this message completes, in a stable order. */
  push(offset: bigint, spans: Span[], now: number): Completion[] {
    const before = this.watermark;
    for (const s of spans) {
      if (this.emitted.has(s.traceId)) {
        this.lateSpans++;
        continue;
      }
      let t = this.open.get(s.traceId);
      if (!t) {
        t = { spans: [], firstOffset: offset, watermarkBefore: before, lastEndMs: s.endMs, touchedAt: now };
        this.open.set(s.traceId, t);
      }
      t.spans.push(s);
      t.touchedAt = now;
      if (s.endMs > t.lastEndMs) t.lastEndMs = s.endMs;
      if (s.parentSpanId === '' && !t.root) t.root = s;
      if (s.endMs > this.watermark) this.watermark = s.endMs;
      const d = this.deadline(t);
      if (d < this.nextDeadline) this.nextDeadline = d;
    }
    const done: Completion[] = [];
    if (this.watermark >= this.nextDeadline) {
      let next = Infinity;
      for (const [id, t] of this.open) {
        const d = this.deadline(t);
        if (this.watermark < d) {
          if (d < next) next = d;
        } else if (t.root) done.push({ kind: 'trace', traceId: id, spans: t.spans });
        else done.push({ kind: 'incomplete', traceId: id, spans: t.spans, reason: `no root span within ${this.opts.maxHoldMs} ms of event time` });
      }
      this.nextDeadline = next;
    }
    const out = this.settle(done, offset <= this.suppressUpTo);
    if (offset > this.h) this.h = offset;
    this.prune();
    return out;
  }

  /**
   * The partition has been idle: emit every trace whose root has arrived and that has received
   * nothing for graceMs by the clock, and give up root-less traces untouched for maxHoldMs (all of
   * them when the idle ids would overflow).
   */
  flushIdle(now: number): Completion[] {
    // while replaying, what is open is being rebuilt: the messages ahead decide, not the clock
    if (this.h < this.suppressUpTo) return [];
    const done: Completion[] = [];
    const force = this.idleIds.length + this.open.size > (this.opts.maxIdleIds ?? 64);
    for (const [id, t] of this.open) {
      if (t.root && (force || now - t.touchedAt >= this.opts.graceMs)) done.push({ kind: 'trace', traceId: id, spans: t.spans });
      else if (!t.root && (force || now - t.touchedAt >= this.opts.maxHoldMs)) {
        done.push({ kind: 'incomplete', traceId: id, spans: t.spans, reason: `no root span within ${this.opts.maxHoldMs} ms (partition idle)` });
      }
    }
    const out = this.settle(done, false);
    for (const c of done) if (!this.suppressIds.has(c.traceId)) this.idleIds.push(c.traceId);
    if (this.open.size === 0) this.idleIds = [];
    return out;
  }

  /** The watermark at which an open trace completes (root: its end + grace) or is given up. */
  private deadline(t: OpenTrace): number {
    return t.root ? t.root.endMs + this.opts.graceMs : t.lastEndMs + this.opts.maxHoldMs;
  }

  /** Open traces (for metrics and idle checks). */
  get openTraces(): number {
    return this.open.size;
  }

  /** What to commit after the completions so far have been written. */
  commitPoint(): CommitPoint {
    let oldest: OpenTrace | null = null;
    for (const t of this.open.values()) if (!oldest || t.firstOffset < oldest.firstOffset) oldest = t;
    const offset = oldest ? oldest.firstOffset : this.h + 1n;
    const w = oldest ? oldest.watermarkBefore : this.watermark;
    // h never moves back: after a restart, what was processed before it still counts as emitted
    const h = this.h > this.suppressUpTo ? this.h : this.suppressUpTo;
    const keepIdle = oldest !== null || this.h < this.suppressUpTo;
    const meta: Meta = { v: 1, h: String(h), w: Number.isFinite(w) ? w : null, idle: keepIdle ? this.idleIds : [] };
    return { offset: String(offset), metadata: JSON.stringify(meta) };
  }

  private settle(done: Completion[], replayed: boolean): Completion[] {
    done.sort((a, b) => {
      const fa = this.open.get(a.traceId)!.firstOffset;
      const fb = this.open.get(b.traceId)!.firstOffset;
      return fa < fb ? -1 : fa > fb ? 1 : a.traceId < b.traceId ? -1 : 1;
    });
    const out: Completion[] = [];
    for (const c of done) {
      this.open.delete(c.traceId);
      this.emitted.set(c.traceId, this.watermark);
      if (replayed || this.suppressIds.has(c.traceId)) continue;
      out.push(c);
    }
    return out;
  }

  private prune(): void {
    if (this.emitted.size < 1024) return;
    for (const [id, at] of this.emitted) if (this.watermark - at > this.opts.rememberMs) this.emitted.delete(id);
  }
}
