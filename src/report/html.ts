/**
 * The report as ONE self-contained HTML file: the data as JSON, the charting library (Chart.js)
 * inlined, no request to any network. Pure: data and the library's source in, HTML out.
 */
import type { ReportData, ReportGap, ReportVersionComparison } from './types.js';
import { untestedDepthNote } from './depth-note.js';

const esc = (s: unknown): string =>
  String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const pct = (x: number | null | undefined, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(d)}%`);

/** A script body that cannot end its <script> element early. */
function inlineScript(src: string): string {
  return src.replace(/\/\/# sourceMappingURL=\S+\s*$/gm, '').replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
}

function productionScore(d: ReportData): string {
  const s = d.productionScore;
  if (!s) return '';
  const iv = (x: [number, number] | null) => (x ? ` [${pct(x[0])}, ${pct(x[1])}]` : '');
  const b = s.bounds;
  const days = s.days.length
    ? `<table><thead><tr><th>day (UTC)</th><th>eval score</th><th>on that day's traffic</th><th>untested</th></tr></thead><tbody>${s.days
        .map((x) => `<tr><td>${esc(x.day)}</td><td class="num">${pct(x.raw)}</td><td class="num">${pct(x.estimate)} [${pct(x.low)}, ${pct(x.high)}]</td><td class="num">${pct(x.untested)}</td></tr>`)
        .join('')}</tbody></table>`
    : '<p class="empty">No daily rows stored yet (evalgap estimate stores them).</p>';
  return `<section class="wide" id="production-score"><h2>Eval score on this traffic</h2><p><b>${esc(s.headline)}</b></p>
<p class="note">Eval run ${esc(s.runId)} of coverage model ${esc(s.modelVersion)}: eval score ${pct(s.raw)}; reweighted to the period's covered traffic ${pct(s.estimate)}${iv(s.interval)} (${Math.round(s.level * 100)}% interval)${
    b ? `; on all traffic, if the untested traffic all failed ${pct(b.allFail)}, passed like its nearest cluster ${pct(b.nearest)}, all passed ${pct(b.allPass)}` : ''
  }. Post-stratified by eval cluster: it assumes the eval's pass rate within a cluster is production's there.</p>${days}</section>`;
}

const pp = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;

function versionTable(v: ReportVersionComparison): string {
  const rows = v.rows
    .map(
      (r) =>
        `<tr><td>${esc(r.segment)}</td><td>${esc(r.label)}</td><td>${esc(r.outcome)}</td><td class="num">${pct(r.baseline)}</td><td class="num">${pct(r.candidate)}</td><td class="num">${pp(r.lo)} to ${pp(r.hi)}</td><td>${r.verdict === 'no evidence yet' ? esc(r.verdict) : `<b>${esc(r.verdict)}</b>`}</td></tr>`,
    )
    .join('');
  return `<h3>${esc(v.candidate)} against ${esc(v.baseline)}</h3>
<p class="note">${v.units.candidate} sessions of ${esc(v.candidate)}, ${v.units.baseline} of ${esc(v.baseline)} (requests without a session id count alone); coverage model ${esc(v.modelVersion)}.
Worse: ${v.worse.length ? esc(v.worse.join(', ')) : 'none'}; better: ${v.better.length ? esc(v.better.join(', ')) : 'none'}.
${v.mixDiffers ? "The candidate's traffic mix differs from the baseline's: compare cluster by cluster, not overall." : "No evidence that the candidate's traffic mix differs."}</p>
<table class="versions"><thead><tr><th>segment</th><th>label</th><th>outcome</th><th>${esc(v.baseline)}</th><th>${esc(v.candidate)}</th><th>difference (pp)</th><th>verdict</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function versionsSection(d: ReportData): string {
  const vs = d.versions ?? [];
  if (!vs.length) return '';
  return `<section class="wide" id="versions"><h2>Versions compared, cluster by cluster</h2>
<p class="note">Each outcome's rate per eval cluster, for the uncovered traffic and overall, with an anytime-valid interval of the difference; a verdict where the interval excludes zero. Each comparison's ${vs[0].tests} tests share α = ${vs[0].alpha} (Bonferroni). Rows: all traffic, then the segments with a verdict (evalgap compare shows every one).</p>
${vs.map(versionTable).join('\n')}</section>`;
}

function exampleText(e: ReportGap['examples'][number]): string {
  // redacted text is stored as its keyed HMAC-SHA256: show the hash, never anything else
  return e.redacted ? `<code class="hash">hmac:${esc(e.text.slice(0, 16))}…</code>` : esc(e.text);
}

function gapsTable(d: ReportData): string {
  const open = d.gaps.filter((g) => g.status !== 'closed');
  const closed = d.gaps.filter((g) => g.status === 'closed');
  const closedNote = closed.length
    ? `<p class="note" id="gaps-closed">Closed (the latest run found no group of uncovered traffic matching them): ${closed
        .map((g) => `<b>${esc(g.label)}</b> <span class="muted">${esc(g.id)}</span>`)
        .join(', ')}</p>`
    : '';
  if (!open.length) return `<p class="empty">No open coverage gaps in this period.</p>${closedNote}`;
  const rows = open
    .map(
      (g) => `<tr>
  <td>${g.rank}</td><td><b>${esc(g.label)}</b><div class="muted">${esc(g.id)}${
    g.kind === 'thin' ? ` · thin coverage of eval cluster: ${esc(g.nearest)}` : g.nearest ? ` · nearest eval cluster: ${esc(g.nearest)}` : ''
  }</div></td>
  <td class="kind">${g.kind === 'thin' ? 'near misses' : 'new topic'}</td>
  <td><span class="status">${esc(g.status)}</span></td>
  <td class="num">${g.requests}</td><td class="num">${pct(g.share)}</td><td class="num">${pct(g.escalationRate)}</td>
  <td class="num">${g.priority.toFixed(0)}</td><td class="muted">${esc(g.firstSeen)}<br>${esc(g.lastSeen)}</td>
  <td><ul>${g.examples.map((e) => `<li>${exampleText(e)}</li>`).join('')}</ul></td>
</tr>`,
    )
    .join('\n');
  return `<table class="gaps"><thead><tr><th>#</th><th>gap</th><th>kind</th><th>status</th><th>members</th><th>share</th><th>escalated</th><th>priority</th><th>first / last seen (UTC)</th><th>examples</th></tr></thead>
<tbody>${rows}</tbody></table>${closedNote}`;
}

function agentSection(d: ReportData): string {
  const a = d.agent;
  if (!a) return '';
  const depthRows = a.depth
    .map((r) => `<tr><td>${esc(r.band)}</td><td class="num">${r.requests}</td><td class="num">${pct(r.share)}</td><td class="num">${r.requests ? pct(r.uncoveredShare) : '–'}</td><td class="num">${r.evalShare === null ? 'unknown' : pct(r.evalShare)}</td></tr>`)
    .join('');
  const note = untestedDepthNote(a.depth, a.evalCases);
  const depthNote = note ? `<p class="note"><b>${esc(note)}</b></p>` : '';
  const verdicts = Object.entries(a.chainVerdicts).filter(([k]) => k !== 'none');
  const chains = a.untestedChains.length
    ? `<table id="untested-chains"><thead><tr><th>untested tool chain</th><th>requests</th><th>failed or escalated</th><th>first untested step</th><th>example</th></tr></thead><tbody>${a.untestedChains
        .map((c) => `<tr><td>${esc(c.chain)}</td><td class="num">${c.requests}</td><td class="num">${pct(c.failureRate)}</td><td>${esc(c.missingBigram)}</td><td>${esc(c.example)}</td></tr>`)
        .join('')}</tbody></table>`
    : '<p class="empty">No untested tool chain in this period.</p>';
  const s = a.sessions;
  return `<section class="wide" id="agent-coverage"><h2>Conversations and tool chains</h2>
<p class="note">${a.withTurn} of ${a.total} requests carry a turn index. Depth band against the eval cases that give one (their <code>turn</code> or <code>turns</code>).</p>
<table id="depth"><thead><tr><th>turn</th><th>requests</th><th>share</th><th>uncovered</th><th>eval cases</th></tr></thead><tbody>${depthRows}</tbody></table>${depthNote}
<p class="note">Tool chains: ${verdicts.length ? verdicts.map(([k, n]) => `${esc(k)} ${n}`).join(', ') : 'no request called a tool'} (exact: an eval case of the request's cluster expects this sequence; relaxed: each step is one a case of the cluster takes).</p>${chains}
<p class="note">Sessions: ${s.sessions}${s.sessions ? `, ${s.leftCoverage} (${pct(s.leftCoverage / s.sessions)}) with an uncovered turn; the first uncovered turn at 1 / 2–3 / 4–7 / 8+: ${s.firstUncoveredByBand.join(' / ')}; deepest turn ${s.deepestTurn}` : ''}.</p></section>`;
}

function alertsTable(d: ReportData): string {
  const a = d.alerts;
  if (!a.exists) return '<p class="empty" id="alerts-status">No alerts table yet (the monitor has not created one in this store).</p>';
  if (!a.rows.length) return '<p class="empty" id="alerts-status">No alerts.</p>';
  const cell = (v: unknown) => esc(String(typeof v === 'object' && v !== null ? JSON.stringify(v) : v ?? '').slice(0, 300));
  return `<table id="alerts-status"><thead><tr>${a.columns.map((c) => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody>${a.rows
    .map((r) => `<tr>${a.columns.map((c) => `<td>${cell(r[c])}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

/** The browser side: draws the four charts from the embedded JSON with Chart.js. */
const CLIENT = String.raw`
(function () {
  var d = JSON.parse(document.getElementById('report-data').textContent);
  Chart.defaults.animation = false;
  Chart.defaults.responsive = true;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.size = 11;
  var palette = ['#2563eb', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be123c'];
  function done(id, chart) {
    var n = 0;
    chart.data.datasets.forEach(function (ds) { n += ds.data.filter(function (v) { return v !== null && v !== undefined; }).length; });
    var c = document.getElementById(id);
    c.setAttribute('data-series', String(chart.data.datasets.length));
    c.setAttribute('data-points', String(n));
  }
  var pctTick = { callback: function (v) { return Math.round(v * 1000) / 10 + '%'; } };

  // 1. coverage over time
  var sets = d.series.uncoveredShare.map(function (s, i) {
    return { type: 'line', label: 'uncovered share, model ' + s.version, data: s.values, borderColor: palette[i % palette.length],
             backgroundColor: palette[i % palette.length], yAxisID: 'share', spanGaps: false, pointRadius: 1.5, tension: 0.2 };
  });
  if (d.model) sets.push({ type: 'line', label: 'calibrated rate (' + (d.model.targetRate * 100).toFixed(1) + '%)',
    data: d.series.labels.map(function () { return d.model.targetRate; }), borderColor: '#6b7280', borderDash: [6, 4], pointRadius: 0, yAxisID: 'share' });
  sets.push({ type: 'line', label: 'escalation rate', data: d.series.escalationRate, borderColor: '#dc2626', pointRadius: 0, borderWidth: 1, yAxisID: 'share' });
  sets.push({ type: 'bar', label: 'requests', data: d.series.requests, backgroundColor: 'rgba(148,163,184,0.35)', yAxisID: 'n' });
  done('chart-series', new Chart(document.getElementById('chart-series'), {
    data: { labels: d.series.labels, datasets: sets },
    options: { interaction: { mode: 'index', intersect: false },
      scales: { share: { position: 'left', min: 0, max: 1, ticks: pctTick, title: { display: true, text: 'share of requests' } },
                n: { position: 'right', grid: { drawOnChartArea: false }, title: { display: true, text: 'requests' } } } }
  }));

  // 2. cluster shares: eval set, production reference, recent production
  var cl = d.clusters;
  done('chart-shares', new Chart(document.getElementById('chart-shares'), {
    type: 'bar',
    data: { labels: cl.map(function (c) { return c.label; }), datasets: [
      { label: 'eval set', data: cl.map(function (c) { return c.evalShare; }), backgroundColor: '#94a3b8' },
      { label: 'production, reference (' + d.period.first + ' → ' + d.period.split + ')', data: cl.map(function (c) { return c.referenceShare; }), backgroundColor: '#60a5fa' },
      { label: 'production, recent (' + d.period.split + ' → ' + d.period.last + ')', data: cl.map(function (c) { return c.recentShare; }), backgroundColor: '#1d4ed8' }] },
    options: { indexAxis: 'y', scales: { x: { ticks: pctTick }, y: { ticks: { autoSkip: false } } } }
  }));

  // 3. escalation per cluster
  done('chart-escalation', new Chart(document.getElementById('chart-escalation'), {
    type: 'bar',
    data: { labels: cl.map(function (c) { return c.label; }), datasets: [
      { label: 'escalation rate', data: cl.map(function (c) { return c.escalationRate; }),
        backgroundColor: cl.map(function (c) { return c.label === 'uncovered' ? '#dc2626' : '#f59e0b'; }) }] },
    options: { indexAxis: 'y', scales: { x: { min: 0, ticks: pctTick }, y: { ticks: { autoSkip: false } } }, plugins: { legend: { display: false } } }
  }));

  // 4. the map
  function pts(a) { return a.map(function (p) { return { x: p[0], y: p[1] }; }); }
  done('chart-map', new Chart(document.getElementById('chart-map'), {
    type: 'scatter',
    data: { datasets: [
      { label: 'eval cases', data: pts(d.map.eval), backgroundColor: 'rgba(100,116,139,0.55)', pointRadius: 2.5 },
      { label: 'production, covered', data: pts(d.map.covered), backgroundColor: 'rgba(37,99,235,0.6)', pointRadius: 2.5 },
      { label: 'production, uncovered', data: pts(d.map.uncovered), backgroundColor: 'rgba(220,38,38,0.75)', pointRadius: 3 }] },
    options: { scales: { x: { title: { display: true, text: 'PC 1' } }, y: { title: { display: true, text: 'PC 2' } } } }
  }));
  document.body.setAttribute('data-rendered', 'true');
})();
`;

export function renderReport(d: ReportData, chartJsSource: string): string {
  const json = JSON.stringify(d).replace(/</g, '\\u003c');
  const t = d.totals;
  const m = d.model;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(d.title)}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#0f172a;background:#f8fafc}
header{padding:18px 28px;background:#0f172a;color:#f8fafc}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#cbd5e1;font-size:13px}
main{padding:16px 28px;display:grid;grid-template-columns:1fr 1fr;gap:16px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px}section.wide{grid-column:1 / -1}
h2{font-size:15px;margin:0 0 8px}.chart{position:relative;height:300px}.tall{height:380px}
.kpis{display:flex;gap:28px;flex-wrap:wrap}.kpi b{display:block;font-size:22px}.kpi span{color:#64748b;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{border-bottom:1px solid #e2e8f0;padding:5px 6px;text-align:left;vertical-align:top}
td.num{text-align:right;white-space:nowrap}.muted{color:#64748b;font-size:11.5px}ul{margin:0;padding-left:16px}.empty,.note{color:#64748b;font-size:12.5px}
code.hash{font-size:11.5px;color:#475569}
.status{font-size:11px;padding:1px 6px;border-radius:8px;background:#fee2e2;color:#991b1b}
</style></head>
<body>
<header><h1>${esc(d.title)}</h1>
<p>period ${esc(d.period.first)} → ${esc(d.period.last)} UTC (since ${esc(d.period.since)}) · generated ${esc(d.generatedAt)}${m ? ` · latest coverage model ${esc(m.version)}: ${m.cases} eval cases, k=${m.k}` : ''}</p></header>
<main>
<section class="wide"><div class="kpis">
<div class="kpi"><b>${t.requests.toLocaleString('en')}</b><span>requests</span></div>
<div class="kpi"><b>${pct(t.requests ? 1 - t.uncovered / t.requests : null)}</b><span>covered by the eval set</span></div>
<div class="kpi"><b>${pct(t.requests ? t.uncovered / t.requests : null)}</b><span>uncovered${m ? ` (calibrated rate under no shift: ${pct(m.targetRate)})` : ''}</span></div>
<div class="kpi"><b>${pct(t.requests ? t.escalated / t.requests : null)}</b><span>escalated</span></div>
<div class="kpi"><b>${d.gaps.filter((g) => g.status !== 'closed').length}</b><span>open gaps${d.gaps.some((g) => g.status === 'closed') ? ` (${d.gaps.filter((g) => g.status === 'closed').length} closed)` : ''}</span></div>
</div>${t.redacted ? `<p class="note">${t.redacted} request(s) were stored with redacted text: they appear as their keyed HMAC-SHA256 hashes only.</p>` : ''}</section>
${productionScore(d)}
<section class="wide"><h2>Coverage over time</h2><div class="chart"><canvas id="chart-series"></canvas></div>
<p class="note">Uncovered share per ${d.series.stepSeconds >= 60 ? `${d.series.stepSeconds / 60}-minute` : `${d.series.stepSeconds}-second`} bucket, one line per coverage model version (a redeploy starts a new line).</p></section>
<section><h2>Cluster shares: eval set vs production</h2><div class="chart tall"><canvas id="chart-shares"></canvas></div>
<p class="note">Latest model's clusters. Production rows in a cluster only when covered; "uncovered" has no eval share. Reference: the first three quarters of the period's traffic; recent: the last quarter.</p></section>
<section><h2>Escalation per cluster</h2><div class="chart tall"><canvas id="chart-escalation"></canvas></div>
<p class="note">Share of the period's requests handed to a human, per eval cluster (covered rows) and for uncovered traffic.</p></section>
<section class="wide"><h2>Map: eval cases against production traffic</h2><div class="chart tall"><canvas id="chart-map"></canvas></div>
<p class="note">${esc(d.map.note)}</p></section>
<section class="wide"><h2>Gaps, ranked</h2><p class="note">${esc(d.gapsNote)}</p>${gapsTable(d)}</section>
${agentSection(d)}
${versionsSection(d)}
<section class="wide"><h2>Recent alerts</h2>${alertsTable(d)}</section>
</main>
<script id="report-data" type="application/json">${json}</script>
<script>${inlineScript(chartJsSource)}</script>
<script>${inlineScript(CLIENT)}</script>
</body></html>
`;
}
