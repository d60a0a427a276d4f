/** Plain-text tables and summaries for the terminal. */
import type { Manifest } from '../coverage/model.js';
import { belowDeepFloor, MIN_DEEP_BANDS, MIN_DEEP_LEVEL } from '../coverage/bands.js';

const SHORT_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Text made safe to print on a terminal: C0 control characters, DEL and C1 control characters
 * (which include ESC and CSI, the start of escape sequences that move the cursor, rewrite the
 * screen or set the window title) are shown visibly as \n, \r, \t or \xHH instead of sent as is.
 */
export function escapeControl(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => SHORT_ESCAPES[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A plain-text table; every cell is passed through `escapeControl` (stored text is untrusted). */
export function table(headers: string[], rows: (string | number)[][], maxWidth = 60): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => String(c)))].map((r) => r.map(escapeControl)).map((r) =>
    r.map((c) => (c.length > maxWidth ? c.slice(0, maxWidth - 1) + '…' : c)),
  );
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function pct(x: number, digits = 1): string {
  return `${(x * 100).toFixed(digits)}%`;
}

export function rateWithInterval(rate: number, interval: readonly [number, number]): string {
  return `${pct(rate)} [${pct(interval[0])}–${pct(interval[1])}]`;
}

/** A cluster's tags as "tag×count" (the first `max`, then how many more). */
export function tagList(tags: readonly { tag: string; count: number }[], max = 3): string {
  if (tags.length === 0) return '-';
  const shown = tags.slice(0, max).map((t) => `${t.tag}×${t.count}`);
  return tags.length > max ? `${shown.join(' ')} +${tags.length - max}` : shown.join(' ');
}

export function modelSummary(m: Manifest): string {
  const c = m.calibration;
  const byTag = c.regions === 'tags';
  const regions = byTag ? (c.tagRegions ?? []) : m.clusters;
  const own = regions.filter((r) => r.ownThreshold).length;
  const head = [
    `coverage model ${m.version}  (format ${m.formatVersion}, created ${m.createdAt})`,
    `eval set:   ${m.evalSet.source}  ${m.evalSet.cases} cases, ${m.evalSet.uniqueCases} distinct  sha256 ${m.evalSet.sha256.slice(0, 12)}…`,
    `embedding:  ${m.embedding.model}  ${m.embedding.precision}  dim ${m.embedding.dim}  sha256 ${m.embedding.checksum.slice(0, 12)}…`,
    `k:          ${m.params.k} (${m.params.kMode}: ${m.params.kCriterion})`,
    `coverage:   ${m.scorer.description} (scorer ${m.scorer.kind})`,
    `scorer:     ${m.scorer.reason}`,
    `threshold:  per ${byTag ? 'tag (a query\'s: its most similar tag centroid)' : 'cluster'}: ${own} of ${regions.length} own, ` +
      `the rest pooled ${c.threshold.toFixed(4)} (< ${c.minClusterCases} cases)`,
    `calibrated: near-duplicates (cosine ≥ ${c.nearDuplicateCosine}) left out of each case's neighbours` +
      (c.phrasing ? `; and each case's phrasing family (${c.phrasing.families} families) left out` : ''),
    `expected uncovered rate under no shift: ${rateWithInterval(c.expectedRate, c.expectedRateInterval)} ` +
      `(${Math.round(c.intervalLevel * 100)}% interval; target ${pct(c.targetFalseUncoveredRate)})`,
    ...(c.phrasing
      ? [
          `  ${pct(c.phrasing.rateSeen)} for new phrasings of families the eval set has, ${pct(c.phrasing.rateNew)} for phrasings it did not write ` +
            `(threshold aimed at ${Math.round(c.phrasing.newShare * 100)}% of the latter; the interval holds for any share; docs/calibration.md)`,
        ]
      : [`  (calibrated before phrasing families: the interval counts only sampling error; refit for one that holds on new phrasings)`]),
    ...(c.bands
      ? [
          `depth bands: a novel topic (${c.bands.novelCases} cases scored with their region left out) falls below the threshold ` +
            `${pct(c.bands.novel.slice(0, 5).reduce((a, b) => a + b, 0))} of the time, in the deepest band ${pct(c.bands.novel[0])} ` +
            `(eval cases: ${pct(c.bands.inScope[0])})`,
          ...(c.bands.heldOut
            ? [
                `  ${c.bands.heldOut.deepBands} deepest band(s): ${rateWithInterval(c.bands.heldOut.deepShare, c.bands.heldOut.deepShareInterval)} of new phrasings of tested intents, ` +
                  `${pct(c.bands.heldOut.novelDeepShare)} of a novel topic (the reference of novel_vs_calibrated; docs/monitor.md)`,
              ]
            : []),
        ]
      : []),
    '',
  ].map(escapeControl);
  const rows = [...m.clusters]
    .sort((a, b) => b.size - a.size)
    .map((cl) => [
      cl.id,
      cl.label,
      cl.size,
      pct(cl.share),
      rateWithInterval(cl.expectedRate, cl.expectedRateInterval) + (byTag || cl.ownThreshold ? '' : ' *'),
      tagList(cl.tags),
      cl.examples[0] ?? '',
    ]);
  let foot = '\n';
  if (byTag) {
    foot +=
      `clusters' rates: their cases scored against their tags' thresholds\n\n` +
      table(
        ['tag', 'cases', 'threshold', 'expected uncovered [interval]'],
        [...(c.tagRegions ?? [])]
          .sort((a, b) => b.calibrationCases - a.calibrationCases)
          .map((t) => [
            t.tag,
            t.calibrationCases,
            t.threshold.toFixed(4) + (t.ownThreshold ? '' : ' *'),
            rateWithInterval(t.expectedRate, t.expectedRateInterval),
          ]),
        40,
      ) +
      '\n';
  }
  if (regions.some((r) => !r.ownThreshold)) {
    foot += `* fewer than ${c.minClusterCases} cases: pooled threshold; rate estimated from its own cases\n`;
  }
  return head.join('\n') + table(['cluster', 'label', 'size', 'share', 'expected uncovered [interval]', 'tags', 'example'], rows, 40) + foot;
}

/** The warning for a model whose deep-band statement predates the 1% floor (src/coverage/bands.ts). */
export function deepFloorWarning(deepBands: number): string {
  return (
    `warning: this model states the in-scope share of only the ${deepBands} deepest coverage band(s), below the ${MIN_DEEP_LEVEL * 100}% level ` +
    `(fitted before evalgap's deep bands reached ${MIN_DEEP_BANDS} bands). That far tail rests on the eval set's few oddest phrasings and was measured false on a second dataset, ` +
    `so the monitor does not use it: novel_vs_calibrated stays silent and novel_sessions waits for production history. Refit the eval set (evalgap fit) to restore both.`
  );
}

/**
 * Warnings about a model's calibration for `fit` and `inspect`: a deep-band statement from before
 * the 1% floor (the monitor does not use it), and regions whose threshold sits far below the
 * others' (a novel topic landing there passes as covered more easily).
 */
export function calibrationWarnings(m: Manifest): string[] {
  const out: string[] = [];
  const h = m.calibration.bands?.heldOut;
  if (h && belowDeepFloor(h.deepBands)) out.push(deepFloorWarning(h.deepBands));
  const loose = m.calibration.looseRegions ?? [];
  if (loose.length === 0) return out;
  const byTag = m.calibration.regions === 'tags';
  const names = loose
    .slice(0, 8)
    .map((l) => `${byTag ? l.region : `cluster ${l.region} (${m.clusters[Number(l.region)]?.label ?? '?'})`} ${l.threshold.toFixed(4)} (robust z ${l.z.toFixed(1)})`);
  const own = (byTag ? (m.calibration.tagRegions ?? []) : m.clusters).filter((r) => r.ownThreshold && r.threshold !== null).map((r) => r.threshold as number).sort((a, b) => a - b);
  const median = own.length ? own[Math.floor(own.length / 2)] : NaN;
  return [
    ...out,
    `warning: ${loose.length} ${byTag ? 'tag' : 'cluster'} region(s) have a threshold far below the others' (median ${median.toFixed(4)}): ` +
      names.join(', ') +
      (loose.length > 8 ? `, +${loose.length - 8} more` : '') +
      `. Their eval cases are spread out, so a query of a topic the eval set does not test that lands there passes as covered more easily; ` +
      `split such a region (more specific tags) or add eval cases that tie it together.`,
  ];
}
