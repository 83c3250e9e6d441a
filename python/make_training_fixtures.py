"""Writes tests/fixtures/training/: small synthetic training sets and what
scikit-learn's GridSearchCV makes of them, for the training jobs' fidelity test
(tests/jobs_train.rs).

  bank.csv      1,200 bank-marketing-like rows: numeric age, balance, duration, campaign;
                categorical job, marital, education; label y (yes/no)
  three.csv     900 rows: numeric x1, x2, x3; categorical region; label kind (a/b/c)
  expected.json per data set: the columns, the grid, the scoring, GridSearchCV's mean and
                std per C (cv=StratifiedKFold(5), no shuffle), the best C, the refit's
                predicted label and probabilities for every row

The pipeline is the one the training job builds: StandardScaler on the numeric
columns, OneHotEncoder (categories sorted) on the categorical ones, then
LogisticRegression(solver="lbfgs", max_iter=1000). Deterministic: the same files
every run. Run with the repository's .venv: `.venv/bin/python python/make_training_fixtures.py`.
"""
import json
import os

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "training")
GRID = [0.001, 0.01, 0.1, 1.0]


def bank(rng):
    n = 1200
    jobs = np.array(["admin.", "blue-collar", "management", "retired", "services", "technician"])
    marital = np.array(["divorced", "married", "single"])
    education = np.array(["primary", "secondary", "tertiary"])
    df = pd.DataFrame(
        {
            "age": rng.randint(18, 90, n),
            "job": jobs[rng.randint(0, len(jobs), n)],
            "marital": marital[rng.randint(0, len(marital), n)],
            "education": education[rng.randint(0, len(education), n)],
            "balance": rng.normal(1500, 3000, n).round(0),
            "duration": rng.exponential(250, n).round(0),
            "campaign": rng.randint(1, 8, n),
        }
    )
    z = (
        -1.5
        + (df["age"] - 50) / 25
        + df["balance"] / 6000
        + df["duration"] / 300
        - 0.2 * df["campaign"]
        + df["job"].isin(["management", "retired"]) * 0.8
        - (df["marital"] == "married") * 0.5
        + (df["education"] == "tertiary") * 0.4
        + rng.logistic(0, 1, n)
    )
    df["y"] = np.where(z > 0, "yes", "no")
    return df, ["age", "balance", "duration", "campaign"], ["job", "marital", "education"], "y"


def three(rng):
    n = 900
    regions = np.array(["east", "north", "south", "west"])
    df = pd.DataFrame(
        {
            "x1": rng.normal(0, 1, n).round(4),
            "x2": rng.normal(5, 2, n).round(4),
            "x3": rng.uniform(-10, 10, n).round(4),
            "region": regions[rng.randint(0, len(regions), n)],
        }
    )
    shift = df["region"].map({"east": 0.5, "north": -0.5, "south": 0.0, "west": 1.0})
    s_a = 1.2 * df["x1"] - 0.1 * df["x3"] + shift + rng.gumbel(0, 1, n)
    s_b = -0.8 * df["x1"] + 0.3 * (df["x2"] - 5) + rng.gumbel(0, 1, n)
    s_c = 0.15 * df["x3"] - shift + rng.gumbel(0, 1, n)
    df["kind"] = np.array(["a", "b", "c"])[np.argmax(np.c_[s_a, s_b, s_c], axis=1)]
    return df, ["x1", "x2", "x3"], ["region"], "kind"


def fit(name, df, numeric, categorical, label, scoring):
    path = os.path.join(OUT, f"{name}.csv")
    df.to_csv(path, index=False)
    X = df[numeric + categorical]
    y = df[label].to_numpy()
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    pipe = Pipeline([("pre", pre), ("lr", LogisticRegression(solver="lbfgs", max_iter=1000))])
    search = GridSearchCV(
        pipe, {"lr__C": GRID}, cv=StratifiedKFold(5), scoring=scoring
    )
    search.fit(X, y)
    best = search.best_estimator_
    return {
        "file": f"{name}.csv",
        "label": label,
        "numeric": numeric,
        "categorical": categorical,
        "grid": GRID,
        "scoring": scoring,
        "classes": [str(c) for c in best.classes_],
        "mean": [float(v) for v in search.cv_results_["mean_test_score"]],
        "std": [float(v) for v in search.cv_results_["std_test_score"]],
        "best_C": float(search.best_params_["lr__C"]),
        "best_score": float(search.best_score_),
        "predict": [str(v) for v in best.predict(X)],
        "predict_proba": [[round(float(p), 8) for p in row] for row in best.predict_proba(X)],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {
        "bank": fit("bank", *bank(np.random.RandomState(13)), scoring="roc_auc"),
        "three": fit("three", *three(np.random.RandomState(31)), scoring="neg_log_loss"),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name, e in expected.items():
        print(name, "best C", e["best_C"], "means", [round(m, 4) for m in e["mean"]])


if __name__ == "__main__":
    main()
