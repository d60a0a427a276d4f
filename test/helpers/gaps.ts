/** The discovery input the gap unit tests build: rows and their vectors, a week's period, no previous gaps. */
import type { DiscoveryInput, UncoveredRow } from '../../src/gaps/discover.js';

/**
 * `rows` with `vecs` (one vector of `dim` per row, packed row-major), ten times as many requests in
 * the period as uncovered ones, the week from 0, threshold 0.8, 5 neighbours; `over` replaces any of these.
 */
export function discoveryInput(rows: UncoveredRow[], vecs: ArrayLike<number>[], dim: number, over: Partial<DiscoveryInput> = {}): DiscoveryInput {
  const vectors = new Float32Array(rows.length * dim);
  vecs.forEach((v, i) => vectors.set(v, i * dim));
  return {
    scope: '',
    rows,
    vectors,
    dim,
    totalRequests: rows.length * 10,
    since: 0,
    until: 7 * 86_400_000,
    previous: [],
    clusterLabels: new Map(),
    threshold: 0.8,
    neighbours: 5,
    ...over,
  };
}
