/**
 * Readable cluster labels by class-based TF-IDF (c-TF-IDF): a term scores high for a cluster when
 * it is frequent in that cluster's texts and rare across the other clusters.
 */
const STOP = new Set(
  ('a about above after again against all am an and any are as at be because been before being below between both but by ' +
    'can could did do does doing down during each few for from further had has have having he her here hers herself him ' +
    'himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other ' +
    'our ours ourselves out over own same she should so some such than that the their theirs them themselves then there ' +
    'these they this those through to too under until up very was we were what when where which while who whom why will ' +
    'with would you your yours yourself yourselves im ive dont cant want need get got please hi hello thanks thank also ' +
    'one still yet may might us let lets would like know way tell help')
    .split(' '),
);

export function tokenize(text: string): string[] {
  return (text.toLowerCase().match(/[a-z][a-z0-9']+/g) ?? [])
    .map((w) => w.replace(/'s$|'$/g, ''))
    .filter((w) => w.length > 2 && !STOP.has(w));
}

/** Top `top` terms per cluster, best first. */
export function ctfidfTerms(texts: readonly string[], labels: ArrayLike<number>, k: number, top = 3): string[][] {
  const tf: Map<string, number>[] = Array.from({ length: k }, () => new Map());
  const total = new Map<string, number>();
  const words = new Float64Array(k);
  texts.forEach((t, i) => {
    const c = labels[i];
    for (const w of tokenize(t)) {
      tf[c].set(w, (tf[c].get(w) ?? 0) + 1);
      total.set(w, (total.get(w) ?? 0) + 1);
      words[c]++;
    }
  });
  const avgWords = words.reduce((a, b) => a + b, 0) / Math.max(1, k);
  return tf.map((m, c) => {
    const scored: [string, number][] = [];
    for (const [w, f] of m) {
      if (f < 2 && words[c] > 20) continue; // a term seen once in a big cluster says little
      scored.push([w, (f / Math.max(1, words[c])) * Math.log(1 + avgWords / (total.get(w) ?? 1))]);
    }
    scored.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    return scored.slice(0, top).map(([w]) => w);
  });
}
