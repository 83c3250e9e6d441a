"""Native scikit-learn models against scikit-learn's own predict (issue 9).

usage: .venv-py/bin/python bench/sklearn_predict.py [SECONDS]     (on demand; never in CI)

For each pickle, one row and 1,000 rows: calls per second of scikit-learn's
``predict`` and of ferroserve's native model (the same Rust code the server runs,
through the Python package, so a Python call's cost is on both sides), taking
turns in 0.5 s slices for SECONDS (default 4) each, and their ratio. The answers
are checked equal first. Prints a Markdown table. Needs .venv-py (scripts/setup.sh).
"""

import os
import sys
import time

import joblib
import numpy as np

import ferroserve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1")
MODELS = [
    ("iris LogisticRegression", os.path.join(ROOT, "examples/models/iris_sklearn/1/model.joblib"), 4),
    ("LogisticRegression (multinomial)", os.path.join(FIXTURES, "logreg_multinomial.joblib"), None),
    ("RandomForestClassifier", os.path.join(FIXTURES, "random_forest_classifier.z3.joblib"), None),
]


def rate(fn, x, seconds):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += 1
    return n, time.perf_counter() - start


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print()
    print("| model | rows | scikit-learn calls/s | ferroserve calls/s | ferroserve / scikit-learn |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, path, features in MODELS:
        sk = joblib.load(path)
        if isinstance(sk, dict):  # {"model": estimator, "feature_names": [...]}, as served
            sk = sk["model"]
        ours = ferroserve.Model.load(path)
        features = features or sk.n_features_in_
        for rows in (1, 1000):
            x = rng.normal(size=(rows, features)).astype(np.float64)
            want = np.asarray(sk.predict(x))
            got = np.asarray(ours.predict(x))
            if got.ndim > 1:
                got = got.reshape(-1)
            assert list(map(str, want)) == list(map(str, got)), (name, rows, want[:5], got[:5])
            done = {"sk": [0, 0.0], "fs": [0, 0.0]}
            end = time.perf_counter() + seconds * 2
            while time.perf_counter() < end:
                for key, fn in (("sk", sk.predict), ("fs", ours.predict)):
                    n, t = rate(fn, x, 0.5)
                    done[key][0] += n
                    done[key][1] += t
            sk_rate = done["sk"][0] / done["sk"][1]
            fs_rate = done["fs"][0] / done["fs"][1]
            print(f"| {name} | {rows:,} | {sk_rate:,.0f} | {fs_rate:,.0f} | {fs_rate / sk_rate:.2f}x |")


if __name__ == "__main__":
    main()
