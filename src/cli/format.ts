/** Plain-text tables and summaries for the terminal. */
import type { Manifest } from '../coverage/model.js';

export function table(headers: string[], rows: (string | number)[][], maxWidth = 60): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => String(c)))].map((r) =>
    r.map((c) => (c.length > maxWidth ? c.slice(0, maxWidth - 1) + '…' : c)),
  );
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function pct(x: number, digits = 1): string {
  return `${(x * 100).toFixed(digits)}%`;
}

export function modelSummary(m: Manifest): string {
  const c = m.calibration;
  const head = [
    `coverage model ${m.version}  (format ${m.formatVersion}, created ${m.createdAt})`,
    `eval set:   ${m.evalSet.source}  ${m.evalSet.cases} cases, ${m.evalSet.uniqueCases} distinct  sha256 ${m.evalSet.sha256.slice(0, 12)}…`,
    `embedding:  ${m.embedding.model}  ${m.embedding.precision}  dim ${m.embedding.dim}  sha256 ${m.embedding.checksum.slice(0, 12)}…`,
    `k:          ${m.params.k} (${m.params.kMode}: ${m.params.kCriterion})`,
    `coverage:   mean cosine to the ${m.params.neighbours} nearest eval cases, searched in the ${m.params.nprobe} nearest clusters`,
    `threshold:  ${c.threshold.toFixed(4)}  (target false-uncovered rate ${pct(c.targetFalseUncoveredRate)}, leave-one-out ${pct(c.looFalseUncoveredRate)})`,
    '',
  ];
  const rows = [...m.clusters]
    .sort((a, b) => b.size - a.size)
    .map((cl) => [cl.id, cl.label, cl.size, pct(cl.share), cl.examples[0] ?? '']);
  return head.join('\n') + table(['cluster', 'label', 'size', 'share', 'example'], rows, 48) + '\n';
}
