/**
 * The design effect of one linear statistic of whole sessions (pure).
 *
 * A detector that sums a score g(category) over requests (the novel-topic detector sums each
 * request's log-likelihood ratio log(1 − ε + ε·q_b/p_b) over the depth bands b) has, when the
 * requests of a session are correlated, the variance of the sum of its sessions' totals:
 *
 *     V_sessions = Σ_s (Σ_b g_b·(y_sb − m_s·p_b))²      (cluster-robust, "sandwich")
 *     V_independent = (N − Σ_s m_s²/N) · Var_p(g)
 *
 * with y_sb the session's requests in category b, m_s its size, p the period's own shares. Their
 * ratio is the design effect *in the direction the detector tests*. A family's average design
 * effect (the Pearson statistic of all its categories) can understate it: when sessions stick to
 * the deep bands more than to the others (a poorly covered intent puts most of a session's turns
 * there), a detector that weighs the deep bands heavily sees more within-session correlation than
 * the average over all bands. Kish (1965, §5.4) for the design effect; the estimator is the
 * cluster-robust variance of a total (Liang & Zeger 1986) for a fixed score.
 *
 * It needs each period's cross-moments of the category counts per session: Σ_s y_s y_sᵀ (B×B)
 * and Σ_s m_s·y_s, besides the totals.
 */
export interface CrossMoments {
  /** requests with a category, and Σ_s m_s² over sessions */
  n: number;
  m2: number;
  /** Σ_s y_sb per category */
  t: ArrayLike<number>;
  /** Σ_s y_sb·y_sc, row-major B×B */
  x: ArrayLike<number>;
  /** Σ_s m_s·y_sb */
  my: ArrayLike<number>;
}

/**
 * num / den is the design effect of Σ g over the period's requests (num: V_sessions / Var_p(g),
 * den: N − Σm²/N, as the family statistics are summed over periods). Null when the period cannot
 * measure it (no variation of g, no requests).
 */
export function directionalMoments(c: CrossMoments, g: ArrayLike<number>): { num: number; den: number } | null {
  const B = c.t.length;
  if (!(c.n > 0) || g.length < B || c.x.length < B * B || c.my.length < B) return null;
  const p = Array.from({ length: B }, (_, b) => c.t[b] / c.n);
  let gbar = 0;
  let g2 = 0;
  for (let b = 0; b < B; b++) {
    gbar += p[b] * g[b];
    g2 += p[b] * g[b] * g[b];
  }
  const varG = g2 - gbar * gbar;
  const den = c.n - c.m2 / c.n;
  if (!(varG > 1e-12) || !(den > 0)) return null;
  // Σ_s (g·y_s − m_s·ḡ)² = gᵀXg − 2ḡ·(g·MY) + ḡ²·Σm²
  let gxg = 0;
  let gmy = 0;
  for (let b = 0; b < B; b++) {
    gmy += g[b] * c.my[b];
    let row = 0;
    for (let d = 0; d < B; d++) row += c.x[b * B + d] * g[d];
    gxg += g[b] * row;
  }
  const v = Math.max(0, gxg - 2 * gbar * gmy + gbar * gbar * c.m2);
  return { num: v / varG, den };
}

/** The novel-topic detector's score per band for a mix ε: log(1 − ε + ε·q_b/p_b). */
export function novelScores(p: ArrayLike<number>, q: ArrayLike<number>, mix: number): number[] {
  return Array.from({ length: q.length }, (_, b) => Math.log(1 - mix + (mix * q[b]) / Math.max(p[b] ?? 0, 1e-9)));
}
