/**
 * The reference's noise at the segment's scale: a segment tested against one reference cell is
 * charged 1 + N/R; one spanning many hour-of-day cells, each estimated from other requests, is
 * charged the cells' noise averaged (Σ N_h²/R_h, adjacent cells' covariance at its bound), so its
 * evidence grows without the one-cell ceiling R·KL/φ.
 */
import { describe, expect, it } from 'vitest';
import { BernoulliCusum, type ReferenceCell } from '../../src/monitor/detectors.js';
import { adjacentHourRho, MIN_HOUR_RHO } from '../../src/monitor/rules.js';

const seg = (N: number, v: number) => (N > 0 ? 1 + v / N : 1);

describe('reference cells (detectors)', () => {
  it('inside one cell the term is N²/R: the factor 1 + N/R', () => {
    const d = new BernoulliCusum({ ratios: [3], threshold: 1e9, minRequests: 0, minEvents: 0 });
    const ref: ReferenceCell = { cell: 10, size: 1000, period: 24 };
    for (let i = 0; i < 5; i++) d.update(30, 100, 0.1, seg, ref);
    const st = d.toJSON();
    expect(st.n[0]).toBe(500);
    expect(st.rv![0]).toBeCloseTo(500 ** 2 / 1000, 6);
  });

  it('over many cells the evidence keeps growing; charged as one cell it stalls below the threshold', () => {
    // a share tripled from 1% (the cluster-tripled case at 0.5 requests/s: ~1,800 requests an hour,
    // a cell of 3 days ≈ 5,400 requests, design effect 6); 40 hours of windows of 15 requests. Against
    // one cell the evidence is bounded by 5,400 · 0.0132 / 6 ≈ 11.9 nats, below h = 12
    const run = (cells: boolean) => {
      const d = new BernoulliCusum({ ratios: [3], threshold: 12, minRequests: 200, minEvents: 10 });
      let found: number | null = null;
      let n = 0;
      for (let w = 0; w < 40 * 120 && found === null; w++) {
        const hour = Math.floor(w / 120);
        const x = (w * 9) % 20 < 9 ? 1 : 0; // 45% of windows hold one event: 3% of 15 requests
        const ref: ReferenceCell = { cell: cells ? hour : 0, size: 5400, period: cells ? 24 : 0 };
        n += 15;
        if (d.update(x, 15, 0.01, (N, v) => 6 * seg(N, v), ref).alarm) found = n;
      }
      return found;
    };
    expect(run(false)).toBeNull();
    const hit = run(true);
    expect(hit).not.toBeNull();
    // ~1 + 3·1,800/5,400 = 2 per request of evidence: about 12·12/0.0132 ≈ 11,000 requests
    expect(hit!).toBeLessThan(20_000);
  });

  it('a segment that spans a day meets its cells again: the term is taken ×D', () => {
    const d = new BernoulliCusum({ ratios: [3], threshold: 1e9, minRequests: 0, minEvents: 0 });
    for (let h = 0; h < 30; h++) d.update(10, 100, 0.05, seg, { cell: h, size: 1000, period: 24 });
    const st = d.toJSON();
    // 30 cells of 100: Σ (100² + 2·100·100)/1000 minus the first cell's covariance term
    const v = (30 * 100 ** 2 + 29 * 2 * 100 * 100) / 1000;
    expect(st.rv![0]).toBeCloseTo(v, 6);
    // the statistic is divided by 1 + 2v/N (D = 2 days spanned)
    expect(d.statistic).toBeCloseTo(st.s[0] / (1 + (2 * v) / 3000), 6);
  });

  it('adjacent cells\' covariance is charged at the measured bound ρ (default 1; out-of-range values clamp)', () => {
    const term = (rho?: number) => {
      const d = new BernoulliCusum({ ratios: [3], threshold: 1e9, minRequests: 0, minEvents: 0 });
      for (let h = 0; h < 10; h++) d.update(10, 100, 0.05, seg, { cell: h, size: 1000, period: 24, ...(rho === undefined ? {} : { rho }) });
      return d.toJSON().rv![0];
    };
    const at = (rho: number) => (10 * 100 ** 2 + rho * 9 * 2 * 100 * 100) / 1000;
    expect(term()).toBeCloseTo(at(1), 6);
    expect(term(1)).toBeCloseTo(at(1), 6);
    expect(term(0.05)).toBeCloseTo(at(0.05), 6);
    expect(term(0)).toBeCloseTo(at(0), 6);
    expect(term(7)).toBeCloseTo(at(1), 6);
    expect(term(Number.NaN)).toBeCloseTo(at(1), 6);
  });

  it('ρ from the sessions: 1 until measured, the measured share raised for few sessions, within [MIN_HOUR_RHO, 1]', () => {
    expect(adjacentHourRho(null, 1.1)).toBe(1);
    expect(adjacentHourRho(0.04, 1.1)).toBeCloseTo(0.044, 9);
    expect(adjacentHourRho(0.04, 0.5)).toBeCloseTo(0.04, 9);
    expect(adjacentHourRho(0, 1.1)).toBe(MIN_HOUR_RHO);
    expect(adjacentHourRho(0.8, 1.5)).toBe(1);
    expect(adjacentHourRho(Number.NaN, 1)).toBe(1);
  });
});
