/**
 * HDBSCAN (Campello, Moulavi & Sander 2013; McInnes & Healy 2017) on a dense distance matrix:
 * density-based clustering that chooses the number of groups from the data and leaves points in
 * sparse regions as noise (-1) instead of forcing them into a group.
 *
 *  1. core distance of a point: distance to its `minSamples`-th nearest neighbour (itself counted,
 *     as in scikit-learn);
 *  2. mutual reachability distance: max(core(a), core(b), d(a, b));
 *  3. minimum spanning tree of that graph (Prim, O(n²) on the dense matrix);
 *  4. single-linkage hierarchy, condensed: a split counts only when both sides hold at least
 *     `minClusterSize` points, otherwise the smaller side's points "fall out" of the cluster;
 *  5. excess of mass: a cluster is selected when its stability (Σ over its points of
 *     λ_leave − λ_birth, λ = 1/distance) is at least the sum of its selected descendants'.
 *     The root is never selected (scikit-learn's allow_single_cluster=False).
 *
 * Distances below `minDistance` count as `minDistance`, so exact duplicates (frequent in real
 * traffic) do not give λ = ∞.
 */

export interface HdbscanOptions {
  minClusterSize: number;
  minSamples: number;
  minDistance?: number;
}

export interface HdbscanResult {
  /** cluster of each point, 0..k-1, or -1 for noise */
  labels: Int32Array;
  k: number;
  /** λ at which each point left its cluster (its "membership strength" before normalising) */
  lambdas: Float64Array;
}

/** Dense distance matrix (n × n, row-major) → labels. */
export function hdbscan(dist: Float32Array, n: number, opts: HdbscanOptions): HdbscanResult {
  const mcs = Math.max(2, opts.minClusterSize);
  const ms = Math.max(1, opts.minSamples);
  const minD = opts.minDistance ?? 1e-3;
  const labels = new Int32Array(n).fill(-1);
  const lambdas = new Float64Array(n);
  if (n < mcs || n < 2) return { labels, k: 0, lambdas };

  // 1. core distances: the ms-th smallest in each row (self at 0 counts as the first)
  const core = new Float64Array(n);
  const row = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) row[j] = i === j ? 0 : dist[i * n + j];
    core[i] = kthSmallest(row, Math.min(ms, n) - 1);
  }

  // 2+3. Prim's MST over mutual reachability distances
  const inTree = new Uint8Array(n);
  const best = new Float64Array(n).fill(Infinity);
  const from = new Int32Array(n).fill(-1);
  const edges: { a: number; b: number; d: number }[] = [];
  let cur = 0;
  inTree[0] = 1;
  for (let step = 1; step < n; step++) {
    const cc = core[cur];
    const base = cur * n;
    let next = -1;
    let nd = Infinity;
    for (let j = 0; j < n; j++) {
      if (inTree[j]) continue;
      let m = dist[base + j];
      if (cc > m) m = cc;
      if (core[j] > m) m = core[j];
      if (m < best[j]) {
        best[j] = m;
        from[j] = cur;
      }
      if (best[j] < nd) {
        nd = best[j];
        next = j;
      }
    }
    edges.push({ a: from[next], b: next, d: Math.max(minD, nd) });
    inTree[next] = 1;
    cur = next;
  }
  edges.sort((x, y) => x.d - y.d);

  // 4a. single-linkage tree: leaves 0..n-1, merge i makes node n+i
  const parentUF = new Int32Array(2 * n - 1).map((_, i) => i);
  const find = (x: number): number => {
    while (parentUF[x] !== x) {
      parentUF[x] = parentUF[parentUF[x]];
      x = parentUF[x];
    }
    return x;
  };
  const left = new Int32Array(n - 1);
  const right = new Int32Array(n - 1);
  const height = new Float64Array(n - 1);
  const size = new Int32Array(2 * n - 1);
  for (let i = 0; i < n; i++) size[i] = 1;
  edges.forEach((e, i) => {
    const ra = find(e.a);
    const rb = find(e.b);
    const node = n + i;
    left[i] = ra;
    right[i] = rb;
    height[i] = e.d;
    size[node] = size[ra] + size[rb];
    parentUF[ra] = node;
    parentUF[rb] = node;
  });
  const root = 2 * n - 2;

  // 4b. condense top-down
  const clusterParent: number[] = [-1]; // condensed cluster 0 = root
  const birth: number[] = [0];
  const stability: number[] = [0];
  const children: number[][] = [[]];
  const pointCluster = new Int32Array(n); // the condensed cluster each point fell out of
  const leaves = (node: number, out: number[]) => {
    const stack = [node];
    while (stack.length) {
      const x = stack.pop()!;
      if (x < n) out.push(x);
      else stack.push(left[x - n], right[x - n]);
    }
  };
  const fallOut = (node: number, c: number, lambda: number) => {
    const pts: number[] = [];
    leaves(node, pts);
    for (const p of pts) {
      pointCluster[p] = c;
      lambdas[p] = lambda;
      stability[c] += lambda - birth[c];
    }
  };
  const stack: [number, number][] = [[root, 0]];
  while (stack.length) {
    const [node, c] = stack.pop()!;
    if (node < n) {
      // a single point continuing its cluster: it leaves at the height of its parent merge
      continue;
    }
    const i = node - n;
    const lambda = 1 / height[i];
    const l = left[i];
    const r = right[i];
    const big = (x: number) => size[x] >= mcs;
    if (big(l) && big(r)) {
      for (const ch of [l, r]) {
        const id = clusterParent.length;
        clusterParent.push(c);
        birth.push(lambda);
        stability.push(0);
        children.push([]);
        children[c].push(id);
        stability[c] += size[ch] * (lambda - birth[c]);
        stack.push([ch, id]);
      }
    } else if (!big(l) && !big(r)) {
      fallOut(l, c, lambda);
      fallOut(r, c, lambda);
    } else {
      const [keep, drop] = big(l) ? [l, r] : [r, l];
      fallOut(drop, c, lambda);
      if (keep < n) fallOut(keep, c, lambda);
      else stack.push([keep, c]);
    }
  }

  // 5. excess-of-mass selection, bottom-up (children always have larger ids than parents)
  const m = clusterParent.length;
  const selected = new Uint8Array(m);
  const value = new Float64Array(m);
  for (let c = m - 1; c >= 0; c--) {
    const sub = children[c].reduce((s, ch) => s + value[ch], 0);
    if (c !== 0 && (children[c].length === 0 || stability[c] >= sub)) {
      selected[c] = 1;
      value[c] = stability[c];
      const st = [...children[c]];
      while (st.length) {
        const x = st.pop()!;
        selected[x] = 0;
        st.push(...children[x]);
      }
    } else value[c] = sub;
  }
  // each condensed cluster's selected ancestor (or itself)
  const owner = new Int32Array(m).fill(-1);
  const ids = new Int32Array(m).fill(-1);
  let k = 0;
  for (let c = 0; c < m; c++) {
    if (selected[c]) {
      owner[c] = c;
      ids[c] = k++;
    } else if (c > 0 && owner[clusterParent[c]] >= 0) owner[c] = owner[clusterParent[c]];
  }
  for (let p = 0; p < n; p++) {
    const o = owner[pointCluster[p]];
    labels[p] = o >= 0 ? ids[o] : -1;
  }
  return { labels, k, lambdas };
}

/** k-th smallest (0-based) of a Float64Array; reorders a copy. */
function kthSmallest(a: Float64Array, k: number): number {
  const x = Float64Array.from(a);
  let lo = 0;
  let hi = x.length - 1;
  while (lo < hi) {
    const pivot = x[(lo + hi) >> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (x[i] < pivot) i++;
      while (x[j] > pivot) j--;
      if (i <= j) {
        const t = x[i];
        x[i] = x[j];
        x[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return x[k];
  }
  return x[k];
}
