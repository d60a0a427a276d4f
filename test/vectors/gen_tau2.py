"""Reference between-cluster variances for test/unit/monitor-rate-reference.test.ts.

DerSimonian-Laird (method of moments) and Paule-Mandel (iterated) tau^2 from statsmodels'
combine_effects; the Q-profile upper bound (Viechtbauer 2007) solved with scipy (brentq on the
generalised Q statistic against the chi-square quantile).

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install statsmodels scipy numpy && /tmp/v/bin/python test/vectors/gen_tau2.py
Writes test/vectors/tau2.json (committed; nothing at run time needs Python).
"""
import json
import os

import numpy as np
import scipy
import statsmodels
from scipy.optimize import brentq
from scipy.stats import chi2
from statsmodels.stats.meta_analysis import combine_effects


def q_stat(y, v, t2):
    w = 1 / (v + t2)
    m = np.sum(w * y) / np.sum(w)
    return np.sum(w * (y - m) ** 2)


def q_profile_upper(y, v, level):
    target = chi2.ppf(1 - level, len(y) - 1)
    if q_stat(y, v, 0) <= target:
        return 0.0
    hi = 1e-12
    while q_stat(y, v, hi) > target:
        hi *= 4
    return brentq(lambda t: q_stat(y, v, t) - target, 0, hi, xtol=1e-16, rtol=1e-12)


rs = np.random.RandomState(20261206)
cases = []
for k, a, b, nlo, nhi in [(8, 2, 38, 20, 400), (20, 5, 95, 50, 2000), (57, 2, 38, 30, 1500), (57, 50, 950, 100, 5000), (12, 1, 6, 10, 300), (30, 200, 3800, 200, 800)]:
    p = rs.beta(a, b, size=k)
    n = rs.randint(nlo, nhi, size=k)
    x = rs.binomial(n, p)
    pbar = (x.sum() + 0.5) / (n.sum() + 1)
    y = x / n
    v = pbar * (1 - pbar) / n
    dl = combine_effects(y, v, method_re="chi2")
    pm = combine_effects(y, v, method_re="iterated")
    cases.append({
        "events": x.tolist(),
        "requests": n.tolist(),
        "dl": max(0.0, float(dl.tau2)),
        "pm": float(pm.tau2),
        "meanPm": float(pm.mean_effect_re),
        "upper95": float(q_profile_upper(y, v, 0.95)),
        "upper90": float(q_profile_upper(y, v, 0.90)),
    })
out = os.path.join(os.path.dirname(__file__), "tau2.json")
with open(out, "w") as f:
    json.dump({"generator": f"statsmodels {statsmodels.__version__}, scipy {scipy.__version__}", "withinVariance": "pbar(1-pbar)/n, pbar = (sum x + 0.5)/(sum n + 1)", "cases": cases}, f, indent=1)
    f.write("\n")
print("wrote", out)
