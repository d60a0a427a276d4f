"""Reference labels for test/unit/gaps.test.ts: scikit-learn's HDBSCAN on a seeded mix of blobs
and uniform noise (Euclidean distances, precomputed; the test recomputes them from the points). Run once with scikit-learn 1.5.2:
  python3 scripts/hdbscan_vectors.py > test/vectors/hdbscan.json
"""
import json
import numpy as np
from sklearn.cluster import HDBSCAN

cases = []
for seed, (blobs, noise, mcs, ms) in enumerate([(4, 30, 10, 5), (6, 60, 8, 4), (3, 10, 15, 15)]):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(blobs, 5))
    pts = [c + rng.normal(scale=rng.uniform(0.3, 1.2), size=(int(rng.integers(20, 60)), 5)) for c in centres]
    pts.append(rng.uniform(-12, 12, size=(noise, 5)))
    x = np.round(np.vstack(pts), 4)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    labels = HDBSCAN(min_cluster_size=mcs, min_samples=ms, metric="precomputed").fit(d).labels_
    cases.append({"n": len(x), "minClusterSize": mcs, "minSamples": ms,
                  "points": x.tolist(), "labels": labels.tolist()})
print(json.dumps({"sklearn": "1.5.2", "cases": cases}))
