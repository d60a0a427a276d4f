#!/usr/bin/env python3
"""Reference vectors for the monitor's detectors (committed as test/fixtures/monitor-vectors.json).

Run once in a throwaway venv; nothing at runtime needs Python:
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install ssrm-test==0.1.5 scipy numpy
    /tmp/venv/bin/python scripts/gen-monitor-vectors.py > test/fixtures/monitor-vectors.json

- dirichlet: ssrm_test.sequential_posteriors (Lindon & Malek's Dirichlet-multinomial mixture),
  its log Bayes factor after each row of counts, for fixed null probabilities and concentrations.
- cusum: a one-sided binomial CUSUM written with scipy.stats.binom.logpmf for the window
  log-likelihood ratios (odds-ratio alternatives, dispersion phi, floors, reset after an alarm).
"""
import json
import sys

import numpy as np
from scipy.stats import binom
from ssrm_test import ssrm_test
import ssrm_test.constants as const

rng = np.random.default_rng(20260126)
out = {"generator": "scripts/gen-monitor-vectors.py", "dirichlet": [], "cusum": []}

for k, windows, conc, shift in [(3, 30, 10000, 0.0), (5, 40, 1000, 0.3), (12, 50, 1000, 0.0), (12, 50, 100, 0.5), (2, 25, 10000, 0.2)]:
    p0 = rng.dirichlet(np.ones(k) * 2)
    q = p0.copy()
    if shift:
        q[0] += shift
        q = q / q.sum()
    data = []
    for t in range(windows):
        n = int(rng.integers(20, 400))
        data.append(rng.multinomial(n, q if t >= windows // 2 else p0).tolist())
    post = ssrm_test.sequential_posteriors(np.array(data), p0, dirichlet_concentration=conc)
    out["dirichlet"].append({
        "p0": p0.tolist(),
        "concentration": conc,
        "data": data,
        "logBayesFactors": [float(p[const.LOG_BAYES_FACTOR]) for p in post],
    })


def odds(p0, r):
    return r * p0 / (1 - p0 + r * p0)


for p0, p1, windows, h, phi, ratios, min_req, min_ev in [
    (0.08, 0.12, 80, 8.0, 1.0, [1.25, 1.5, 2, 3, 5], 200, 10),
    (0.05, 0.05, 80, 6.0, 1.0, [1.25, 1.5, 2, 3, 5], 200, 10),
    (0.2, 0.35, 60, 10.0, 2.5, [1.5, 2], 100, 5),
    (0.01, 0.04, 100, 7.0, 1.3, [2, 3, 5], 300, 10),
]:
    xs, ns = [], []
    for t in range(windows):
        n = int(rng.integers(0, 300))
        x = int(rng.binomial(n, p1 if t >= windows // 3 else p0))
        xs.append(x)
        ns.append(n)
    s = [0.0] * len(ratios)
    segn = [0] * len(ratios)
    segx = [0] * len(ratios)
    stats, alarms = [], []
    for x, n in zip(xs, ns):
        alarm = False
        for g, r in enumerate(ratios):
            if n > 0:
                q = odds(p0, r)
                s[g] += float(binom.logpmf(x, n, q) - binom.logpmf(x, n, p0)) / phi
                segn[g] += n
                segx[g] += x
            if s[g] <= 0:
                s[g], segn[g], segx[g] = 0.0, 0, 0
            if s[g] >= h and segn[g] >= min_req and segx[g] >= min_ev:
                alarm = True
        stats.append(max(s))
        alarms.append(alarm)
        if alarm:
            s = [0.0] * len(ratios)
            segn = [0] * len(ratios)
            segx = [0] * len(ratios)
    out["cusum"].append({
        "p0": p0, "threshold": h, "phi": phi, "ratios": ratios, "minRequests": min_req, "minEvents": min_ev,
        "x": xs, "n": ns, "statistic": stats, "alarm": alarms,
    })

json.dump(out, sys.stdout)
sys.stdout.write("\n")
