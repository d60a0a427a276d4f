import { describe, expect, it } from 'vitest';
import { BAND_LEVELS, heldOutDeep, MIN_DEEP_LEVEL } from '../../src/coverage/bands.js';

/**
 * heldOutDeep's choice of deep bands keeps out of the extreme tail (bands below the 1% level):
 * there the eval set's left-out-family share stops standing for production's new phrasings
 * (docs/calibration.md, step 5).
 */
describe('heldOutDeep: the deep bands reach at least the 1% level', () => {
  // 10 regions × 200 cases, families of 5; margins placed by band (edges below)
  const edges = [-0.4, -0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.3];
  const regions = 10;
  const n = 2000;
  // margins inside band b
  const inBand = (b: number) => (b === 0 ? -0.5 : b >= edges.length ? 0.4 : (edges[b - 1] + edges[b]) / 2);
  // each region's 200 cases: how many fall in bands 0…4 (the rest well covered)
  const place = (perRegion: number[]) => {
    const m = new Float64Array(n).fill(inBand(8));
    for (let r = 0; r < regions; r++) {
      let j = r * 200;
      perRegion.forEach((c, b) => {
        for (let k = 0; k < c; k++) m[j++] = inBand(b);
      });
    }
    return m;
  };
  const freshPer = [1, 1, 2, 2, 6];
  const seenPer = [0, 1, 1, 1, 4];
  const fresh = place(freshPer);
  const seen = place(seenPer);
  const region = Int32Array.from({ length: n }, (_, i) => Math.floor(i / 200));
  const family = Int32Array.from({ length: n }, (_, i) => Math.floor(i / 5));
  // a novel profile piled into the deepest band: the most evidence per request would be in band 0 alone
  const novel = [0.5, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.1];
  const h = heldOutDeep({ seen, fresh, family, region, regions, edges, novel, level: 0.9, designMix: 0.05 });

  it('chooses 3 or 4 bands, never the tail below the 1% level', () => {
    expect(MIN_DEEP_LEVEL).toBe(0.01);

    expect(BAND_LEVELS[2]).toBe(0.01);
    expect(h.deepBands).toBeGreaterThanOrEqual(3);
    expect(h.deepBands).toBeLessThanOrEqual(4);
  });

  it('states the share of those bands, with the novel profile summed over the same bands', () => {
    const d = h.deepBands;
    const share = (per: number[]) => per.slice(0, d).reduce((a, b) => a + b, 0) / 200;
    expect(h.deepShare).toBeCloseTo(share(freshPer), 9);
    expect(h.deepShareSeen).toBeCloseTo(share(seenPer), 9);
    expect(h.novelDeepShare).toBeCloseTo(novel.slice(0, d).reduce((a, b) => a + b, 0), 9);
    expect(h.deepShareInterval[0]).toBeLessThanOrEqual(h.deepShareSeen);
    expect(h.deepShareInterval[1]).toBeGreaterThan(h.deepShare);
  });
});
