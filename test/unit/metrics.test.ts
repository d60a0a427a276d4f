import { describe, expect, it } from 'vitest';
import { adjustedRandIndex, auroc } from '../../src/coverage/metrics.js';
import { rng } from '../../src/coverage/vec.js';

describe('auroc', () => {
  it('is 1 for a perfect separation and 0 for an inverted one', () => {
    const scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9];
    const pos = [false, false, false, true, true, true];
    expect(auroc(scores, pos)).toBe(1);
    expect(auroc(scores.map((s) => -s), pos)).toBe(0);
  });

  it('is 0.5 when every score ties', () => {
    expect(auroc([0.3, 0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0, 0])).toBe(0.5);
  });

  it('matches a hand-computed case (sklearn example: 0.75)', () => {
    expect(auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])).toBeCloseTo(0.75, 12);
  });

  it('counts a tie between a positive and a negative as half', () => {
    // positives {2, 3} vs negatives {1, 2}: 1 + 0.5 + 1 + 1 = 3.5 of 4 pairs
    expect(auroc([1, 2, 2, 3], [0, 1, 0, 1])).toBeCloseTo(0.875, 12);
  });

  it('does not depend on input order and accepts typed arrays', () => {
    const s = Float32Array.from([0.8, 0.35, 0.1, 0.4]);
    expect(auroc(s, [true, true, false, false])).toBeCloseTo(0.75, 6);
  });

  it('equals the pairwise definition on random data with ties', () => {
    const r = rng(3);
    const n = 200;
    const scores = Array.from({ length: n }, () => Math.round(r() * 20) / 20);
    const pos = Array.from({ length: n }, () => r() < 0.3);
    let num = 0;
    let den = 0;
    for (let i = 0; i < n; i++) {
      if (!pos[i]) continue;
      for (let j = 0; j < n; j++) {
        if (pos[j]) continue;
        den++;
        num += scores[i] > scores[j] ? 1 : scores[i] === scores[j] ? 0.5 : 0;
      }
    }
    expect(auroc(scores, pos)).toBeCloseTo(num / den, 12);
  });

  it('is NaN when one class is absent', () => {
    expect(auroc([1, 2, 3], [1, 1, 1])).toBeNaN();
    expect(auroc([1, 2, 3], [0, 0, 0])).toBeNaN();
    expect(auroc([], [])).toBeNaN();
  });
});

describe('adjustedRandIndex', () => {
  it('is 1 for identical labelings', () => {
    expect(adjustedRandIndex([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2])).toBe(1);
  });

  it('is 1 when only the label names differ', () => {
    expect(adjustedRandIndex([0, 0, 1, 1, 2, 2], ['b', 'b', 'c', 'c', 'a', 'a'])).toBe(1);
    expect(adjustedRandIndex(Int32Array.from([5, 5, 7, 9]), [1, 1, 0, 2])).toBe(1);
  });

  it('matches hand-computed values', () => {
    // contingency {2,1,1}: sumIJ = 1, sumA = 2, sumB = 1, expected = 2/6, max = 1.5 → (2/3)/(7/6) = 4/7
    expect(adjustedRandIndex([0, 0, 1, 1], [0, 0, 1, 2])).toBeCloseTo(4 / 7, 12);
    expect(adjustedRandIndex([0, 0, 1, 2], [0, 0, 1, 1])).toBeCloseTo(4 / 7, 12);
    // sklearn documentation example: 0.2424…
    expect(adjustedRandIndex([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])).toBeCloseTo(0.24242424242424243, 12);
  });

  it('is 0 for one cluster against all singletons', () => {
    expect(adjustedRandIndex([0, 0, 0, 0], [0, 1, 2, 3])).toBe(0);
  });

  it('is negative for a labeling worse than chance', () => {
    // sklearn: adjusted_rand_score([0, 0, 1, 1], [0, 1, 0, 1]) = -0.5
    expect(adjustedRandIndex([0, 0, 1, 1], [0, 1, 0, 1])).toBeCloseTo(-0.5, 12);
  });

  it('is near 0 for independent random labelings', () => {
    const r = rng(11);
    const a = Array.from({ length: 3000 }, () => Math.floor(r() * 5));
    const b = Array.from({ length: 3000 }, () => Math.floor(r() * 5));
    expect(Math.abs(adjustedRandIndex(a, b))).toBeLessThan(0.01);
  });
});
