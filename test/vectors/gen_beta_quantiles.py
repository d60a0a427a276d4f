"""Reference Beta and normal quantiles for test/unit/calibrate.test.ts, from scipy.

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install scipy==1.* && /tmp/v/bin/python test/vectors/gen_beta_quantiles.py
Writes test/vectors/beta-quantiles.json (committed; nothing at run time needs Python).
"""
import json
import os

import scipy
from scipy.stats import beta, norm

cases = []
for a, b in [(1, 20), (5, 96), (2, 39), (3.5, 40.5), (50, 951), (0.5, 30.5), (25, 476), (1, 1)]:
    for p in [0.05, 0.5, 0.95, 0.025, 0.975]:
        cases.append({"a": a, "b": b, "p": p, "q": float(beta.ppf(p, a, b))})
normal = [{"p": p, "q": float(norm.ppf(p))} for p in [0.9, 0.95, 0.975, 0.995]]
out = os.path.join(os.path.dirname(__file__), "beta-quantiles.json")
with open(out, "w") as f:
    json.dump({"generator": f"scipy {scipy.__version__}", "beta": cases, "normal": normal}, f, indent=1)
    f.write("\n")
print("wrote", out)
